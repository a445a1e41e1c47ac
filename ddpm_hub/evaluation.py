"""The `ddpm-hub eval` command and the sampler sweep: FID and KID against a dataset (`ddpm_hub.metrics`), quality and
images/s against the number of UNet evaluations, and the likelihood report of `ddpm_hub.likelihood`.

    ddpm-hub eval MODEL --bpd                                  # bits/dim, full chain: JSON + bits_per_timestep.png
    ddpm-hub eval MODEL --bpd --bpd_steps 50 --bpd_estimator sampled          # ... estimated with 50 UNet calls
    ddpm-hub eval MODEL --fid --num_images 10000 --steps 250   # FID / KID of one sampler
    ddpm-hub eval MODEL --sweep --num_images 10000             # sweep.md + sweep.json for the model card

Results go to `--output_dir`, by default the trained MODEL folder itself: `metrics.json` (bpd, fid, kid; merged
with what is there), `bpd.json` + `bits_per_timestep.png`, `fid.json`, `sweep.md` + `sweep.json`. The model card
(`ddpm_hub.model_card`) reads `metrics.json` and `sweep.md` from that folder.
"""

import argparse
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch

from .data import DataOptions
from .errors import UsageError, writing
from .metrics import (
    FEATURE_KINDS,
    FeatureExtractor,
    Reference,
    cached_reference_features,
    extract_features,
    features_for,
    reference_split,
    sample_quality,
)
from .options import add_arguments, check_ranges, from_namespace, guidance_scale, int_at_least
from .public import code_span, escape_markdown
from .resolver import PipelineSource, load_pipeline, refuse_super_resolution, resolve_pipeline
from .run_folder import (
    BPD_FILE,
    FID_FILE,
    METRICS_FILE,
    SWEEP_FILE,
    SWEEP_JSON_FILE,
    check_finite,
    check_writable_folder,
    is_trained_folder,
    update_metrics,
)
from .sampling import SAMPLERS, Sampler, sample_batches, with_sampler

# ----------------------------------------------------------------------------------------------------------------
# The sweep

DEFAULT_SWEEP = (
    Sampler("ddpm", 1000),
    Sampler("ddpm", 250),
    Sampler("ddpm", 50),
    Sampler("ddim", 50),
    Sampler("ddim", 20),
    Sampler("dpmsolver++", 20),
    Sampler("dpmsolver++", 10),
)


@torch.no_grad()
def generate_images(
    pipeline,
    num_images: int,
    steps: int,
    seed: int = 0,
    batch_size: int = 64,
    guidance_scale: float = 1.0,
    progress: bool = False,
) -> tuple[torch.Tensor, dict]:
    """
    `num_images` samples as uint8 `[N x C x H x W]` (`ddpm_hub.sampling.sample_images`: image i from seed + i, the
    same whatever the batch size, and every sampler starts from the same x_T; a class-conditional model draws class
    i mod classes, at `guidance_scale`), and the timing: `{"seconds", "images_per_second", "nfe"}`, NFE counted as
    UNet calls per image.
    """
    from tqdm.auto import tqdm

    if not isinstance(num_images, int) or num_images < 1:
        raise UsageError(f"num_images must be a positive integer, got {num_images!r}.")
    calls = []
    hook = pipeline.unet.register_forward_hook(lambda *_: calls.append(1))
    call_kwargs = {"num_inference_steps": steps}
    if pipeline.conditioning:
        call_kwargs["guidance_scale"] = guidance_scale
    bar = partial(tqdm, desc=f"{steps} steps", unit="batch", disable=not progress)
    start_time = time.perf_counter()
    try:
        batches = list(sample_batches(pipeline, range(num_images), seed, batch_size, None, call_kwargs, bar))
    finally:
        hook.remove()
    seconds = time.perf_counter() - start_time
    timing = {"seconds": seconds, "images_per_second": num_images / seconds, "nfe": len(calls) // len(batches)}
    return torch.cat([images for _, images in batches]), timing


def sampler_sweep(
    pipeline,
    reference_features: np.ndarray,
    feature_extractor: FeatureExtractor,
    num_images: int,
    samplers: Sequence[Sampler] = DEFAULT_SWEEP,
    seed: int = 0,
    batch_size: int = 64,
    kid_subset_size: int = 1000,
    classify=None,
    guidance_scale: float = 1.0,
    progress: bool = False,
    standardize_kernel: bool = False,
) -> list[dict]:
    """
    One row per sampler: the Frechet and kernel distances (`fid`, `kid_mean`: FID/KID with Inception features), NFE
    and images/s for `num_images` samples against `reference_features`; with `classify` (uint8 images -> class ids)
    also the class balance of the samples, `class_balance_tv`: the total-variation distance from uniform classes.

    With a `metrics.Reference` (a reference half and a held-out half of the dataset), every row also has the floor:
    the same distances of `num_images` real held-out images to the reference (`fid_floor`, `kid_floor`), and
    `fid_ratio` = fid / fid_floor (1.0: as close as real images are).
    """
    floor = None
    if isinstance(reference_features, Reference):
        floor = reference_features.floor(num_images, kid_subset_size, seed, standardize_kernel)
        reference_features = reference_features.features
    rows = []
    for sampler in samplers:
        images, timing = generate_images(
            with_sampler(pipeline, sampler.name), num_images, sampler.steps, seed, batch_size, guidance_scale, progress
        )
        quality = sample_quality(
            extract_features(images, feature_extractor), reference_features, kid_subset_size, seed, standardize_kernel
        )
        row = {"sampler": sampler.name, "label": sampler.label, "steps": sampler.steps, **timing, **quality}
        if floor is not None:
            row.update(fid_floor=floor["fid"], kid_floor=floor["kid_mean"], fid_ratio=quality["fid"] / floor["fid"])
        if classify is not None:
            row["class_balance_tv"] = _class_balance(classify(images))
        rows.append(row)
    return rows


def _class_balance(labels: torch.Tensor) -> float:
    from .digit_classifier import class_balance

    return class_balance(labels)["total_variation_from_uniform"]


def sweep_markdown(rows: list[dict], settings: dict) -> str:
    """The Markdown table the model card includes, with the settings that produced it underneath."""
    metric = settings.get("metric_label", "FID ↓")
    balance = all("class_balance_tv" in row for row in rows)
    floor = all("fid_ratio" in row for row in rows)
    kernel = settings.get("kernel_label", "KID × 10³ ↓")
    header = f"| sampler | steps | NFE | {metric} |" + (" ÷ floor ↓ |" if floor else "") + f" {kernel} |"
    header += " classes (TV) ↓ |" if balance else ""
    lines = [header + " images/s |", "| --- " + "| ---: " * (5 + balance + floor) + "|"]
    for row in rows:
        ratio = f" **{row['fid_ratio']:.2f}** |" if floor else ""
        line = (
            f"| {row['label']} | {row['steps']} | {row['nfe']} | {row['fid']:.2f} |{ratio} "
            f"{1e3 * row['kid_mean']:.2f} ± {1e3 * row['kid_std']:.2f} |"
        )
        line += f" {row['class_balance_tv']:.3f} |" if balance else ""
        lines.append(line + f" {row['images_per_second']:.2f} |")
    if floor:
        first = rows[0]
        lines += [
            "",
            f"Floor: {first['num_generated']} real images of the held-out half against the reference half score "
            f"{first['fid_floor']:.2f} ({metric.split(' ')[0]}) and {1e3 * first['kid_floor']:.2f} (kernel distance "
            "× 10³); ÷ floor is the samples' distance divided by it: 1.0 means as close to the reference as real "
            "images are.",
        ]
    setup = f"device: {settings['device']}"
    if settings.get("batch_size"):
        setup += f", batch size {settings['batch_size']}"
    against = (
        f"a seeded half of {escape_markdown(settings['dataset'])} ({settings['num_reference']} images; the other half "
        "gives the floor)"
        if floor
        else f"{settings['num_reference']} images of {escape_markdown(settings['dataset'])}"
    )
    lines += [
        "",
        f"{rows[0].get('num_generated', settings['num_images'])} generated images per sampler against {against}; "
        f"features: {settings['features']}; {setup}. Distances of small sets are biased upwards: compare with the "
        "floor and the rows of one table, not with numbers from other papers."
        + (
            " Classes (TV): how far the classes the digit classifier reads in the samples are from uniform."
            if balance
            else ""
        ),
    ]
    if settings.get("command"):
        lines += ["", f"Produced by {code_span(settings['command'])}."]
    return "\n".join(lines) + "\n"


def write_sweep(rows: list[dict], settings: dict, output_dir: str | os.PathLike) -> dict:
    """`sweep.md` and `sweep.json` in `output_dir`; returns their paths."""
    for row in rows:
        check_finite(row, f"the sweep's row {row.get('label', row.get('sampler'))!r}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    markdown, data = output_dir / SWEEP_FILE, output_dir / SWEEP_JSON_FILE
    markdown.write_text(sweep_markdown(rows, settings))
    data.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n")
    return {"markdown": str(markdown), "json": str(data)}


# ----------------------------------------------------------------------------------------------------------------
# The `ddpm-hub eval` command


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `ddpm-hub eval`; the dataset options are training's (`ddpm_hub.data.DataOptions`)."""
    parser.add_argument("model", help="a trained pipeline folder, a Hub repo id, or a pipelines/<name> configuration")
    tasks = parser.add_argument_group("what to measure (at least one)")
    tasks.add_argument("--bpd", action="store_true", help="the variational bound in bits/dim on the dataset")
    tasks.add_argument("--fid", action="store_true", help="FID and KID of --num_images samples from --sampler")
    tasks.add_argument("--sweep", action="store_true", help="FID, KID and images/s for every sampler in --samplers")
    add_arguments(parser, DataOptions, {"data": "dataset (the options of training)"})

    options = parser.add_argument_group("settings")
    options.add_argument(
        "--bpd_steps",
        type=int_at_least(2),
        default=None,
        help="K < T steps for a cheaper --bpd (default: the full chain of T)",
    )
    options.add_argument(
        "--bpd_estimator",
        choices=("strided", "sampled"),
        default="strided",
        help="with --bpd_steps: the strided bound of the K-step chain, or the stratified sampled estimate of the full "
        "chain (default: strided)",
    )
    options.add_argument(
        "--num_images", type=int_at_least(2), default=1000, help="samples per sampler for FID (default: 1000)"
    )
    options.add_argument("--sampler", default="ddpm", choices=list(SAMPLERS), help="--fid sampler")
    options.add_argument("--steps", type=int_at_least(1), default=1000, help="--fid sampler steps (default: 1000)")
    options.add_argument(
        "--samplers",
        default=",".join(map(str, DEFAULT_SWEEP)),
        help=f"--sweep samplers, NAME-STEPS comma separated (default: {','.join(map(str, DEFAULT_SWEEP))})",
    )
    options.add_argument(
        "--features",
        choices=FEATURE_KINDS,
        default="auto",
        help="features of the Frechet/kernel distances: inception (FID/KID, downloads Inception), digits (the repo's "
        "own digit classifier, offline); auto: digits for builtin:digits, else inception",
    )
    options.add_argument(
        "--guidance_scale",
        type=guidance_scale,
        default=1.0,
        help="a class-conditional model: classifier-free guidance of the samples, in [0, 100] (default: 1)",
    )
    options.add_argument(
        "--reference_split",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure against a seeded half of the dataset and report the floor: the same distance for as many real "
        "images of the other half (--no-reference_split: against the whole dataset, no floor)",
    )
    options.add_argument("--inception_weights", default=None, help="local Inception weights (default: download)")
    options.add_argument(
        "--kid_subset_size", type=int_at_least(2), default=1000, help="KID subset size (default: 1000)"
    )
    options.add_argument("--batch_size", type=int_at_least(1), default=64, help="images per UNet call (default: 64)")
    options.add_argument(
        "--seed", type=int_at_least(0), default=0, help="noise seed; sample i uses seed + i (default: 0)"
    )
    options.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    options.add_argument(
        "--output_dir",
        default=None,
        help="where metrics.json, the plot and the table go (default: MODEL itself when it is a trained folder, "
        "so that `ddpm-hub push` puts them on the model card; else ./eval)",
    )


def run_eval(args: argparse.Namespace) -> int:
    """`ddpm-hub eval`: load the model and the dataset once, run the requested measurements, print JSON."""
    if not (args.bpd or args.fid or args.sweep):
        raise UsageError("nothing to do: pass --bpd, --fid and/or --sweep.")
    data = from_namespace(DataOptions, args)
    check_ranges(data)
    data.check()
    samplers = [Sampler.parse(s) for s in args.samplers.split(",")] if args.sweep else []
    output_dir = Path(args.output_dir) if args.output_dir else _default_output_dir(args.model)
    check_writable_folder(output_dir, "--output_dir")  # before the work, not after it
    features = None
    if args.fid or args.sweep:  # before any slow work: offline without the Inception weights fails here
        features = features_for(args.features, data.resolved().dataset_name, args.inception_weights, args.device)
        source = resolve_pipeline(args.model)  # the configs only, before any weights are read
        check_sample_quality_applies(source, args)
        check_features_apply(source, args, features)
    pipeline = load_pipeline(args.model, args.seed).to(args.device)
    pipeline.set_progress_bar_config(disable=True)
    data = data.resolved(resolution=pipeline.unet.config.sample_size)  # an int, or [height, width]
    captions = pipeline.conditioning.prompts is not None  # a text model is measured on the dataset's captions
    decoded = data.load(channels=pipeline.image_channels, captions=captions)
    images = decoded.images
    report = {"model": args.model, "dataset": data.label(), "output_dir": str(output_dir)}
    if args.bpd:
        report["bpd"] = _eval_bpd(pipeline, decoded, data, args, output_dir)
    if features is not None:
        report.update(_eval_sample_quality(pipeline, images, features, samplers, data, args, output_dir))
    with writing(output_dir / METRICS_FILE, "the metrics", kept="The other results written are kept."):
        report["metrics"] = str(update_metrics(output_dir, _metric_entries(report, data, args, features)))
    print(json.dumps(report, indent=2))
    return 0


def check_sample_quality_applies(source: PipelineSource, args: argparse.Namespace) -> None:
    """
    --fid / --sweep draw images from noise, one condition per image as `generate_images` does (nothing, or classes
    in turn): a super-resolution model (which upsamples a given image) and a text model (which needs a prompt per
    image; it would draw the empty prompt) are refused, saying what measures them.
    """
    command, conditioning = _sample_quality_command(args), source.conditioning()
    refuse_super_resolution(
        conditioning, args.model, command, "; its likelihood is measured with `ddpm-hub eval --bpd`"
    )
    if conditioning.prompts is not None:
        raise UsageError(
            f"{args.model} is a text-to-image model, and {command} would measure images drawn without a prompt (the "
            "empty prompt), which says nothing of the model. Measure its likelihood on the dataset's captions with "
            "`ddpm-hub eval --bpd`, or whether it reads the prompt with benchmarks/text_accuracy.py."
        )


def check_features_apply(source: PipelineSource, args: argparse.Namespace, features) -> None:
    """The digit features read one digit in a square image (`ddpm_hub.digit_classifier`), not a wider canvas."""
    size = source.unet_config["sample_size"]
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if features.metric_key == "fd_digits" and height != width:
        raise UsageError(
            f"{_sample_quality_command(args)} with the digit features: the digit classifier reads one digit in a "
            f"square image, and {args.model} draws {height}×{width} images. Use --features inception for them."
        )


def _sample_quality_command(args: argparse.Namespace) -> str:
    return f"ddpm-hub eval {' '.join(option for option in ('--fid', '--sweep') if getattr(args, option[2:]))}"


def _metric_entries(report: dict, data: DataOptions, args: argparse.Namespace, features=None) -> dict:
    """
    metrics.json entries: `bpd`, and `fid`/`kid` (Inception features) or `fd_digits`/`kd_digits` (the digit
    classifier's), each with its value, spread, image count, method and dataset.
    """
    dataset = {"dataset": data.source, "split": data.split}
    entries = {}
    if "bpd" in report:
        bpd = report["bpd"]
        kept = ("bits_per_dim", "standard_error", "num_images", "bound", "prior_bpd", "decoder_bpd")
        entries["bpd"] = {**{key: bpd[key] for key in kept}, **dataset, "seed": args.seed}
    if "fid" in report:
        row = report["fid"]
        method = (
            f"{row['label']}, {row['steps']} steps; {row['num_generated']} samples against {row['num_reference']} "
            f"dataset images; features: {features.description}"
        )
        common = {"num_images": row["num_generated"], "method": method, **dataset, "seed": args.seed}
        frechet, kernel = (features.metric_key, features.metric_key.replace("fd", "kd").replace("fid", "kid"))
        floor = {"floor": row["fid_floor"], "ratio_to_floor": row["fid_ratio"]} if "fid_ratio" in row else {}
        entries[frechet] = {"value": row["fid"], **floor, **common}
        entries[kernel] = {"value": row["kid_mean"], "std": row["kid_std"], **common}
    return entries


def _default_output_dir(model: str) -> Path:
    return Path(model) if is_trained_folder(model) else Path("eval")


def _eval_sample_quality(pipeline, images: torch.Tensor, features, samplers, data, args, output_dir: Path) -> dict:
    """--fid: one sampler, `fid.json`; --sweep: every sampler, `sweep.md` + `sweep.json`. One reference set, cached."""
    key = {"dataset": data.label(), "shape": list(images.shape)}
    reference = cached_reference_features(images, features, key, args.batch_size)
    if args.reference_split:  # a reference half and a held-out half: distances with their floor
        reference = reference_split(reference, args.seed)
        if args.num_images > len(reference.held_out):
            print(
                f"--num_images {args.num_images}: the held-out half has {len(reference.held_out)} real images, so the "
                f"floor and the samples are {len(reference.held_out)} each.",
                file=sys.stderr,
            )
            args.num_images = len(reference.held_out)
    count = len(reference.features) if isinstance(reference, Reference) else len(reference)
    settings = _sweep_settings(args, data, count, features)
    options = dict(seed=args.seed, batch_size=args.batch_size, kid_subset_size=args.kid_subset_size)
    options.update(classify=features.classify, guidance_scale=args.guidance_scale, progress=True)
    options.update(standardize_kernel=features.standardize_kernel)
    report = {}
    if args.fid:
        fid_sampler = [Sampler(args.sampler, args.steps)]
        (row,) = sampler_sweep(pipeline, reference, features.extract, args.num_images, fid_sampler, **options)
        check_finite(row, f"--fid ({args.sampler}, {args.steps} steps)")
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / FID_FILE).write_text(json.dumps({"settings": settings, **row}, indent=2) + "\n")
        report["fid"] = {**row, "json": str(output_dir / FID_FILE)}
    if args.sweep:
        rows = sampler_sweep(pipeline, reference, features.extract, args.num_images, samplers, **options)
        report["sweep"] = write_sweep(rows, settings, output_dir)
    return report


def _eval_bpd(pipeline, decoded, data: DataOptions, args: argparse.Namespace, output_dir: Path) -> dict:
    """The bound on the dataset; for a conditional model, on -log p(x | the dataset's condition of each image)."""
    from .likelihood import bits_per_dim, write_likelihood_report

    generator = torch.Generator().manual_seed(args.seed)
    result = bits_per_dim(
        pipeline,
        decoded.images,
        num_steps=args.bpd_steps,
        generator=generator,
        batch_size=args.batch_size,
        estimator=args.bpd_estimator,
        progress=True,
        **pipeline.conditioning.dataset_inputs(decoded),
    )
    check_finite(result.summary(), "--bpd: the bound")  # the model output has NaN or inf: nothing is written
    summary = write_likelihood_report(result, output_dir)
    return {**summary, "json": str(output_dir / BPD_FILE)}


def _sweep_settings(args: argparse.Namespace, data: DataOptions, num_reference: int, features) -> dict:
    return {
        "model": args.model,
        "dataset": data.label(),
        "num_images": args.num_images,
        "num_reference": num_reference,
        "features": features.description,
        "metric_label": features.metric_label,
        "kernel_label": features.kernel_label,
        "guidance_scale": args.guidance_scale,
        "device": _device_name(args.device),
        "batch_size": args.batch_size,
        "seed": args.seed,
        "torch": torch.__version__,
        "command": _command_line(args, data),
    }


def _command_line(args: argparse.Namespace, data: DataOptions) -> str:
    """The `ddpm-hub eval` command that reproduces the sample-quality numbers (the options that change them)."""
    parts = ["ddpm-hub eval", shlex.quote(args.model), "--fid" if args.fid else "", "--sweep" if args.sweep else ""]
    if data.train_data_dir:
        parts += ["--train_data_dir", shlex.quote(data.train_data_dir)]
    else:
        parts += ["--dataset_name", shlex.quote(data.dataset_name)]
        parts += ["--dataset_split", shlex.quote(data.dataset_split)] if data.split else []
    if data.max_images is not None:
        parts += ["--max_images", str(data.max_images)]
    if not data.center_crop:
        parts.append("--no-center_crop")
    if args.features != "auto":
        parts += ["--features", args.features]
    if args.guidance_scale != 1.0:
        parts += ["--guidance_scale", str(args.guidance_scale)]
    if data.streaming:
        parts.append("--streaming")
    if args.fid:
        parts += ["--sampler", args.sampler, "--steps", str(args.steps)]
    if args.sweep:
        parts += ["--samplers", args.samplers]
    parts += ["--num_images", str(args.num_images), "--kid_subset_size", str(args.kid_subset_size)]
    parts += [] if args.reference_split else ["--no-reference_split"]
    parts += ["--seed", str(args.seed), "--batch_size", str(args.batch_size)]
    return " ".join(part for part in parts if part)


def _device_name(device: str) -> str:
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
