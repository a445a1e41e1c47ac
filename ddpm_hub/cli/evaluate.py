"""`ddpm-hub eval`: bits/dim (`ddpm_hub.evaluation.likelihood`), FID, KID, Inception Score and precision/recall of one
sampler, and the sampler sweep (`ddpm_hub.evaluation.sweep`), against a dataset given with training's options; and
what a conditional model does with its condition (`ddpm_hub.evaluation.accuracy`, `ddpm_hub.evaluation.sr_quality`),
which reads no dataset.

    ddpm-hub eval MODEL --bpd                                  # bits/dim, full chain: JSON + bits_per_timestep.png
    ddpm-hub eval MODEL --bpd --bpd_steps 50 --bpd_estimator sampled          # ... estimated with 50 UNet calls
    ddpm-hub eval MODEL --fid --num_images 10000 --steps 250   # FID / KID / IS / precision, recall of one sampler
    ddpm-hub eval MODEL --sweep --num_images 10000             # sweep.md + sweep.json for the model card
    ddpm-hub eval MODEL --class_accuracy --guidance_scales 0,1,2,4 --num_per_class 50          # class_accuracy.md
    ddpm-hub eval MODEL --text_accuracy --guidance_scales 0,1,3,5 --num_per_prompt 10          # text_accuracy.md
    ddpm-hub eval MODEL --sr_quality --noise_levels 0,25 --steps 25,100 --samples_per_input 4  # sr_quality.md
    ddpm-hub eval CLIP --clip_accuracy --num_images 1000       # a digit-pairs CLIP: clip_accuracy.md (eval_clip)

Results go to `--output_dir`, by default the trained MODEL folder itself: `metrics.json` (bpd, fid, kid, is,
precision, recall; merged with what is there), `bpd.json` + `bits_per_timestep.png`, `fid.json`, `sweep.md` +
`sweep.json`, and `class_accuracy`, `text_accuracy`, `sr_quality` `.md` + `.json`. The model card
(`ddpm_hub.hub.model_card`) reads `metrics.json`, `sweep.md`, `class_accuracy.md` and `text_accuracy.md` from that
folder.
"""

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

from ..data import DataOptions
from ..errors import UsageError, writing
from ..evaluation.metrics import (
    FEATURE_KINDS,
    Reference,
    cached_reference_features,
    features_for,
    reference_split,
)
from ..evaluation.sweep import DEFAULT_SWEEP, sampler_sweep, write_sweep
from ..options import add_arguments as add_option_fields
from ..options import check_ranges, from_namespace, guidance_scale, int_at_least
from ..pipelines.sampling import SAMPLERS, Sampler
from ..pipelines.source import Source
from ..run_folder import (
    BPD_FILE,
    FID_FILE,
    METRICS_FILE,
    check_finite,
    check_writable_folder,
    is_trained_folder,
    update_metrics,
)
from .common import add_loading_arguments, model_source
from .eval_clip import run_clip_accuracy
from .eval_tasks import (
    ACCURACY_STEPS,
    FID_STEPS,
    SR_STEPS,
    add_accuracy_arguments,
    check_accuracy_tasks,
    comma_separated,
    device_name,
    run_accuracy_only,
    run_accuracy_tasks,
)

SR_DEFAULT = ",".join(map(str, SR_STEPS))
HELP = (
    "bits/dim (--bpd), FID/KID/IS/precision/recall (--fid), the sampler sweep (--sweep), what a conditional model "
    "does with its condition (--class_accuracy, --text_accuracy, --sr_quality)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `ddpm-hub eval`; the dataset options are training's (`ddpm_hub.data.DataOptions`)."""
    parser.add_argument("model", help="a trained pipeline folder, a Hub repo id, or a pipelines/<name> configuration")
    tasks = parser.add_argument_group("what to measure (at least one)")
    tasks.add_argument("--bpd", action="store_true", help="the variational bound in bits/dim on the dataset")
    tasks.add_argument(
        "--fid",
        action="store_true",
        help="FID, KID, Inception Score and precision/recall of --num_images samples from --sampler",
    )
    tasks.add_argument("--sweep", action="store_true", help="FID, KID and images/s for every sampler in --samplers")
    tasks.add_argument(
        "--class_accuracy",
        action="store_true",
        help="a class-conditional digits model: the share of samples the digit classifier reads as the class asked, "
        "per guidance scale (class_accuracy.md + .json)",
    )
    tasks.add_argument(
        "--text_accuracy",
        action="store_true",
        help="a digit-pairs text-to-image model: the share of samples whose two digits are read as the prompt asks, "
        "seen and unseen pairs, per guidance scale (text_accuracy.md + .json)",
    )
    tasks.add_argument(
        "--sr_quality",
        action="store_true",
        help="a super-resolution model: PSNR and SSIM against bicubic upsampling, consistency and sharpness on "
        "photographs it never saw (sr_quality.md + .json; needs scikit-image: pip install 'ddpm-hub[bench]')",
    )
    tasks.add_argument(
        "--clip_accuracy",
        action="store_true",
        help="a CLIP trained on builtin:digit-pairs (unCLIP's first stage): the share of --num_images held-out "
        "canvases of seen pairs, and of a tenth as many per unseen pair, whose most similar caption names their pair "
        "(clip_accuracy.md + .json)",
    )
    add_option_fields(parser, DataOptions, {"data": "dataset (the options of training)"})

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
    options.add_argument(
        "--sampler", default="ddpm", choices=list(SAMPLERS), help="--fid and --text_accuracy sampler (default: ddpm)"
    )
    options.add_argument(
        "--steps",
        type=comma_separated(int_at_least(1)),
        default=None,
        help=f"sampling steps: --fid (default: {FID_STEPS}), --class_accuracy and --text_accuracy (default: "
        f"{ACCURACY_STEPS}); --sr_quality: comma separated, a table row each (default: {SR_DEFAULT})",
    )
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
    add_accuracy_arguments(parser)
    options.add_argument(
        "--kid_subset_size", type=int_at_least(2), default=1000, help="KID subset size (default: 1000)"
    )
    options.add_argument("--batch_size", type=int_at_least(1), default=64, help="images per UNet call (default: 64)")
    options.add_argument(
        "--seed", type=int_at_least(0), default=0, help="noise seed; sample i uses seed + i (default: 0)"
    )
    options.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    add_loading_arguments(options)
    options.add_argument(
        "--output_dir",
        default=None,
        help="where metrics.json, the plot and the table go (default: MODEL itself when it is a trained folder, "
        "so that `ddpm-hub push` puts them on the model card; else ./eval)",
    )


def run(args: argparse.Namespace) -> int:
    """`ddpm-hub eval`: load the model and the dataset once, run the requested measurements, print JSON."""
    if args.clip_accuracy:  # a CLIP, not a pipeline: its own loading (`eval_clip`)
        return run_clip_accuracy(args)
    accuracy = check_accuracy_tasks(args)  # the model kind each asks for, from its configs: before any work
    if not (args.bpd or args.fid or args.sweep or accuracy):
        raise UsageError(
            "nothing to do: pass --bpd, --fid, --sweep, --class_accuracy, --text_accuracy and/or --sr_quality (a "
            "CLIP: --clip_accuracy)."
        )
    data = from_namespace(DataOptions, args)
    check_ranges(data)
    data.check()
    samplers = [Sampler.parse(s) for s in args.samplers.split(",")] if args.sweep else []
    output_dir = Path(args.output_dir) if args.output_dir else _default_output_dir(args.model)
    check_writable_folder(output_dir, "--output_dir")  # before the work, not after it
    if args.bpd:  # a latent model has no bits/dim of its images: refused before the weights and data are read
        from ..evaluation.likelihood import check_pixel_space

        check_pixel_space(model_source(args), args.model)
    if not (args.bpd or args.fid or args.sweep):  # task measurements only: no dataset is read
        return run_accuracy_only(args, accuracy, output_dir)
    features = None
    if args.fid or args.sweep:  # before any slow work: offline without the Inception weights fails here
        features = features_for(args.features, data.resolved().dataset_name, args.inception_weights, args.device)
        source = model_source(args)  # the configs only, before any weights are read
        check_sample_quality_applies(source, args)
        check_features_apply(source, args, features)
    pipeline = model_source(args).load(args.seed).to(args.device)
    pipeline.set_progress_bar_config(disable=True)
    data = data.resolved(resolution=list(pipeline.sample_shape(1)[2:]))  # the images (a latent model's decoded)
    captions = pipeline.conditioning.prompts is not None  # a text model is measured on the dataset's captions
    decoded = data.load(channels=pipeline.image_channels, captions=captions)
    images = decoded.images
    report = {"model": args.model, "dataset": data.label(), "output_dir": str(output_dir)}
    if args.bpd:
        report["bpd"] = _eval_bpd(pipeline, decoded, data, args, output_dir)
    if features is not None:
        report.update(_eval_sample_quality(pipeline, images, features, samplers, data, args, output_dir))
    if accuracy is not None:
        report.update(run_accuracy_tasks(pipeline, accuracy, args, output_dir))
    with writing(output_dir / METRICS_FILE, "the metrics", kept="The other results written are kept."):
        report["metrics"] = str(update_metrics(output_dir, _metric_entries(report, data, args, features)))
    print(json.dumps(report, indent=2))
    return 0


def check_sample_quality_applies(source: Source, args: argparse.Namespace) -> None:
    """
    --fid / --sweep draw images from noise, one condition per image as `generate_images` does (nothing, or classes
    in turn): a super-resolution model (which upsamples a given image) and a text model (which needs a prompt per
    image; it would draw the empty prompt) are refused, saying what measures them.
    """
    command, conditioning = _sample_quality_command(args), source.conditioning()
    source.refuse_super_resolution(command, "; its likelihood is measured with `ddpm-hub eval --bpd`")
    if conditioning.prompts is not None:
        raise UsageError(
            f"{args.model} is a text-to-image model, and {command} would measure images drawn without a prompt (the "
            "empty prompt), which says nothing of the model. Measure its likelihood on the dataset's captions with "
            "`ddpm-hub eval --bpd`, or whether it reads the prompt with `ddpm-hub eval --text_accuracy`."
        )


def check_features_apply(source: Source, args: argparse.Namespace, features) -> None:
    """The digit features read one digit in a square image (`ddpm_hub.evaluation.digit_classifier`), not a wider
    canvas."""
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
    metrics.json entries: `bpd`, and `fid`/`kid`/`is`/`precision`/`recall` (Inception features and logits) or
    `fd_digits`/`kd_digits`/`is_digits`/`precision_digits`/`recall_digits` (the digit classifier's), each with its
    value, spread, image count, method and dataset.
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
        suffix = "" if features.metric_key == "fid" else "_digits"
        if "inception_score_mean" in row:
            score = {"value": row["inception_score_mean"], "std": row["inception_score_std"]}
            entries[f"is{suffix}"] = {**score, "splits": row["inception_score_splits"], **common}
        for key in ("precision", "recall"):
            if key in row:
                floor = {"floor": row[f"{key}_floor"]} if f"{key}_floor" in row else {}
                entries[f"{key}{suffix}"] = {"value": row[key], **floor, **common}
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
    from ..evaluation.likelihood import bits_per_dim, write_likelihood_report

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
        "device": device_name(args.device),
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
