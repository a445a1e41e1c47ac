"""`ddpm-hub eval`: bits/dim (`ddpm_hub.evaluation.likelihood`), FID and KID of one sampler, and the sampler sweep
(`ddpm_hub.evaluation.sweep`), against a dataset given with training's options; and what a conditional model does
with its condition (`ddpm_hub.evaluation.accuracy`, `ddpm_hub.evaluation.sr_quality`), which reads no dataset.

    ddpm-hub eval MODEL --bpd                                  # bits/dim, full chain: JSON + bits_per_timestep.png
    ddpm-hub eval MODEL --bpd --bpd_steps 50 --bpd_estimator sampled          # ... estimated with 50 UNet calls
    ddpm-hub eval MODEL --fid --num_images 10000 --steps 250   # FID / KID of one sampler
    ddpm-hub eval MODEL --sweep --num_images 10000             # sweep.md + sweep.json for the model card
    ddpm-hub eval MODEL --class_accuracy --guidance_scales 0,1,2,4 --num_per_class 50          # class_accuracy.md
    ddpm-hub eval MODEL --text_accuracy --guidance_scales 0,1,3,5 --num_per_prompt 10          # text_accuracy.md
    ddpm-hub eval MODEL --sr_quality --noise_levels 0,25 --steps 25,100 --samples_per_input 4  # sr_quality.md

Results go to `--output_dir`, by default the trained MODEL folder itself: `metrics.json` (bpd, fid, kid; merged
with what is there), `bpd.json` + `bits_per_timestep.png`, `fid.json`, `sweep.md` + `sweep.json`, and
`class_accuracy`, `text_accuracy`, `sr_quality` `.md` + `.json`. The model card (`ddpm_hub.hub.model_card`) reads
`metrics.json`, `sweep.md`, `class_accuracy.md` and `text_accuracy.md` from that folder.
"""

import argparse
import json
import platform
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data import DataOptions
from ..data.digit_pairs import unseen_pairs
from ..errors import UsageError, writing
from ..evaluation.accuracy import (
    SEEN_PAIRS,
    class_accuracy,
    class_accuracy_markdown,
    text_accuracy,
    text_accuracy_markdown,
    write_report,
)
from ..evaluation.digit_classifier import load_digit_classifier
from ..evaluation.metrics import (
    FEATURE_KINDS,
    Reference,
    cached_reference_features,
    features_for,
    reference_split,
)
from ..evaluation.sr_quality import SIZE as SR_SIZE
from ..evaluation.sr_quality import photographs, sr_quality, write_sr_quality
from ..evaluation.sweep import DEFAULT_SWEEP, sampler_sweep, write_sweep
from ..options import add_arguments as add_option_fields
from ..options import check_ranges, from_namespace, guidance_scale, int_at_least
from ..pipelines.sampling import SAMPLERS, Sampler, with_sampler
from ..pipelines.source import Source
from ..run_folder import (
    BPD_FILE,
    CLASS_ACCURACY_FILE,
    FID_FILE,
    METRICS_FILE,
    TEXT_ACCURACY_FILE,
    check_finite,
    check_writable_folder,
    is_trained_folder,
    update_metrics,
)

CLASS_SCALES, TEXT_SCALES = [0.0, 1.0, 2.0, 4.0], [0.0, 1.0, 3.0, 5.0]  # --guidance_scales' defaults
FID_STEPS, ACCURACY_STEPS, SR_STEPS = 1000, 100, [50]  # --steps' defaults

HELP = (
    "bits/dim (--bpd), FID/KID (--fid), the sampler sweep (--sweep), what a conditional model does with its "
    "condition (--class_accuracy, --text_accuracy, --sr_quality)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `ddpm-hub eval`; the dataset options are training's (`ddpm_hub.data.DataOptions`)."""
    parser.add_argument("model", help="a trained pipeline folder, a Hub repo id, or a pipelines/<name> configuration")
    tasks = parser.add_argument_group("what to measure (at least one)")
    tasks.add_argument("--bpd", action="store_true", help="the variational bound in bits/dim on the dataset")
    tasks.add_argument("--fid", action="store_true", help="FID and KID of --num_images samples from --sampler")
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
        help="a super-resolution model: PSNR against bicubic upsampling, consistency and sharpness on photographs it "
        "never saw (sr_quality.md + .json; needs scikit-image: pip install 'ddpm-hub[bench]')",
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
        f"{ACCURACY_STEPS}); --sr_quality: comma separated, a table row each (default: {_counts(SR_STEPS)})",
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
    options.add_argument(
        "--output_dir",
        default=None,
        help="where metrics.json, the plot and the table go (default: MODEL itself when it is a trained folder, "
        "so that `ddpm-hub push` puts them on the model card; else ./eval)",
    )


def add_accuracy_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of --class_accuracy, --text_accuracy and --sr_quality (--steps, --sampler, --seed, --batch_size
    and --output_dir are shared)."""
    task = parser.add_argument_group("--class_accuracy, --text_accuracy, --sr_quality")
    task.add_argument(
        "--guidance_scales",
        type=comma_separated(guidance_scale),
        default=None,
        help=f"comma separated, a table row each (default: --class_accuracy {_scales(CLASS_SCALES)}, "
        f"--text_accuracy {_scales(TEXT_SCALES)})",
    )
    task.add_argument(
        "--num_per_class", type=int_at_least(1), default=50, help="--class_accuracy: samples per class (default: 50)"
    )
    task.add_argument(
        "--num_per_prompt",
        type=int_at_least(1),
        default=10,
        help="--text_accuracy: samples per pair and sentence form (default: 10)",
    )
    task.add_argument(
        "--noise_levels",
        type=comma_separated(int_at_least(0)),
        default=[0, 25, 50, 100],
        help="--sr_quality: augmentation levels of the input, a table row each (default: 0,25,50,100)",
    )
    task.add_argument(
        "--samples_per_input", type=int_at_least(1), default=4, help="--sr_quality: samples per input (default: 4)"
    )
    task.add_argument(
        "--crops_per_photo",
        type=int_at_least(1),
        default=6,
        help=f"--sr_quality: {SR_SIZE}x{SR_SIZE} crops per photograph (default: 6)",
    )
    task.add_argument(
        "--consistency", action="store_true", help="--sr_quality: sample with the consistency projection"
    )
    task.add_argument(
        "--per_crop", action="store_true", help="--sr_quality: also print each crop's PSNRs and sharpness (stderr)"
    )


def run(args: argparse.Namespace) -> int:
    """`ddpm-hub eval`: load the model and the dataset once, run the requested measurements, print JSON."""
    accuracy = check_accuracy_tasks(args)  # the model kind each asks for, from its configs: before any work
    if not (args.bpd or args.fid or args.sweep or accuracy):
        raise UsageError(
            "nothing to do: pass --bpd, --fid, --sweep, --class_accuracy, --text_accuracy and/or --sr_quality."
        )
    data = from_namespace(DataOptions, args)
    check_ranges(data)
    data.check()
    samplers = [Sampler.parse(s) for s in args.samplers.split(",")] if args.sweep else []
    output_dir = Path(args.output_dir) if args.output_dir else _default_output_dir(args.model)
    check_writable_folder(output_dir, "--output_dir")  # before the work, not after it
    if not (args.bpd or args.fid or args.sweep):  # task measurements only: no dataset is read
        return _run_accuracy_only(args, accuracy, output_dir)
    features = None
    if args.fid or args.sweep:  # before any slow work: offline without the Inception weights fails here
        features = features_for(args.features, data.resolved().dataset_name, args.inception_weights, args.device)
        source = Source.of(args.model)  # the configs only, before any weights are read
        check_sample_quality_applies(source, args)
        check_features_apply(source, args, features)
    pipeline = Source.of(args.model).load(args.seed).to(args.device)
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


# ----------------------------------------------------------------------------------------------------------------
# --class_accuracy, --text_accuracy, --sr_quality: what a conditional model does with its condition


def comma_separated(item):
    """argparse type: comma-separated values, each parsed by `item` (an argparse type) -> a list."""

    def parse(text: str) -> list:
        values = []
        for part in text.split(","):
            try:
                values.append(item(part.strip()))
            except argparse.ArgumentTypeError as error:
                raise argparse.ArgumentTypeError(f"{part.strip()!r}: {error}") from None
        return values

    parse.__name__ = f"comma-separated {getattr(item, '__name__', 'values')}"
    return parse


@dataclass
class AccuracyTasks:
    """The task measurements asked for, their options checked against the model's configs before any work."""

    source: Source
    class_scales: list[float] | None = None  # --class_accuracy
    text_scales: list[float] | None = None  # --text_accuracy
    accuracy_steps: int = ACCURACY_STEPS
    photos: dict | None = None  # --sr_quality: the photographs, read before the model
    sr_steps: list[int] = field(default_factory=lambda: list(SR_STEPS))


def check_accuracy_tasks(args: argparse.Namespace) -> AccuracyTasks | None:
    """
    --class_accuracy, --text_accuracy, --sr_quality: each model kind checked from its configs (a class model with a
    null label, a text model of digit pairs, a super-resolution model), the options resolved, --steps turned into
    --fid's one count; None when none of them is asked. Raises `UsageError` naming the option.
    """
    if args.fid:  # the one count --fid samples with, whatever the accuracy measurements take
        args.steps = _one_count(args.steps, FID_STEPS, "--fid")
    if not (args.class_accuracy or args.text_accuracy or args.sr_quality):
        return None
    source = Source.of(args.model)  # the configs only, before any weights are read
    conditioning, tasks = source.conditioning(), AccuracyTasks(source)
    if args.class_accuracy:
        classes = conditioning.classes
        if classes is None or not classes.has_null:
            what = "a class-conditional model" if classes is None else "trained with a null label"
            raise UsageError(
                f"--class_accuracy measures a class-conditional model with a null label (trained with "
                f"--class_dropout_prob, for guidance), and {args.model} is not {what}."
            )
        tasks.class_scales = args.guidance_scales or CLASS_SCALES
    if args.text_accuracy:
        if conditioning.prompts is None:
            raise UsageError(
                f"--text_accuracy measures a text-to-image model of digit pairs (builtin:digit-pairs), and "
                f"{args.model} takes no prompt."
            )
        size = source.unet_config["sample_size"]
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        if width != 2 * height:
            raise UsageError(
                f"--text_accuracy reads two digits side by side (builtin:digit-pairs, H x 2H images), and "
                f"{args.model} draws {height}×{width} images."
            )
        tasks.text_scales = args.guidance_scales or TEXT_SCALES
    if args.class_accuracy or args.text_accuracy:
        tasks.accuracy_steps = _one_count(args.steps, ACCURACY_STEPS, "--class_accuracy and --text_accuracy")
    if args.sr_quality:
        _check_super_resolution(conditioning.low_res, args)
        tasks.sr_steps = args.steps or list(SR_STEPS)
        tasks.photos = photographs()  # scikit-image missing: refused here, before the model is read
    return tasks


def _check_super_resolution(low_res, args: argparse.Namespace) -> None:
    if low_res is None:
        raise UsageError(
            f"--sr_quality measures a super-resolution model (its UNet takes a low-resolution image), and "
            f"{args.model} draws images from noise. Measure it with --fid, --sweep or --bpd."
        )
    if SR_SIZE % low_res.scale:
        raise UsageError(
            f"--sr_quality upsamples {SR_SIZE}x{SR_SIZE} crops, which {args.model}'s scale {low_res.scale} does not "
            "divide."
        )
    too_high = [level for level in args.noise_levels if level > low_res.max_noise_level]
    if too_high:
        raise UsageError(
            f"--noise_levels {_counts(too_high)}: {args.model} takes levels 0..{low_res.max_noise_level}."
        )


def _scales(scales: list[float]) -> str:
    return ",".join(f"{w:g}" for w in scales)


def _counts(counts: list[int]) -> str:
    return ",".join(map(str, counts))


def _one_count(steps: list[int] | None, default: int, option: str) -> int:
    if steps is None:
        return default
    if len(steps) != 1:
        raise UsageError(f"--steps {_counts(steps)}: {option} take one number of steps.")
    return steps[0]


def run_accuracy_tasks(pipeline, tasks: AccuracyTasks, args: argparse.Namespace, output_dir: Path) -> dict:
    """Each task asked for, its .md and .json written to `output_dir`; the report's entries."""
    report = {}
    if tasks.class_scales is not None or tasks.text_scales is not None:
        classifier, classifier_report = load_digit_classifier()
        common = {"classifier": classifier, "seed": args.seed, "batch_size": args.batch_size}
        common["steps"] = tasks.accuracy_steps
        accuracy = classifier_report["heldout_accuracy"]
    if tasks.class_scales is not None:
        rows = class_accuracy(pipeline, tasks.class_scales, args.num_per_class, **common)
        settings = {"model": args.model, "num_per_class": args.num_per_class, "steps": tasks.accuracy_steps}
        settings.update(seed=args.seed, classifier_accuracy=accuracy, device=_device_name(args.device))
        settings["command"] = _task_command(
            args,
            "--class_accuracy",
            guidance_scales=_scales(tasks.class_scales),
            num_per_class=args.num_per_class,
            steps=tasks.accuracy_steps,
            seed=args.seed,
        )
        markdown = class_accuracy_markdown(rows, settings)
        report["class_accuracy"] = write_report(CLASS_ACCURACY_FILE, markdown, rows, settings, output_dir)
    if tasks.text_scales is not None:
        sampled = with_sampler(pipeline, args.sampler)
        rows = text_accuracy(sampled, tasks.text_scales, args.num_per_prompt, **common)
        settings = {"model": args.model, "num_per_prompt": args.num_per_prompt, "sampler": args.sampler}
        settings.update(steps=tasks.accuracy_steps, seed=args.seed, seen_pairs=SEEN_PAIRS)
        settings.update(unseen_pairs=unseen_pairs(), classifier_accuracy=accuracy, device=_device_name(args.device))
        settings["command"] = _task_command(
            args,
            "--text_accuracy",
            guidance_scales=_scales(tasks.text_scales),
            num_per_prompt=args.num_per_prompt,
            sampler=args.sampler,
            steps=tasks.accuracy_steps,
            seed=args.seed,
        )
        markdown = text_accuracy_markdown(rows, settings)
        report["text_accuracy"] = write_report(TEXT_ACCURACY_FILE, markdown, rows, settings, output_dir)
    if tasks.photos is not None:
        report["sr_quality"] = _run_sr_quality(pipeline, tasks, args, output_dir)
    return report


def _run_sr_quality(pipeline, tasks: AccuracyTasks, args: argparse.Namespace, output_dir: Path) -> dict:
    samples = args.samples_per_input
    options = dict(samples=samples, crops_per_photo=args.crops_per_photo, seed=args.seed, per_crop=args.per_crop)
    options.update(batch_size=max(1, args.batch_size // samples), consistency=args.consistency)  # inputs per call
    rows, names = sr_quality(pipeline, tasks.photos, args.noise_levels, tasks.sr_steps, **options)
    settings = {"model": args.model, "samples": samples, "num_inputs": len(names), "photos": list(tasks.photos)}
    settings.update(crops=names, scale=pipeline.conditioning.low_res.scale, device=_device_name(args.device))
    settings["command"] = _task_command(
        args,
        "--sr_quality",
        noise_levels=_counts(args.noise_levels),
        steps=_counts(tasks.sr_steps),
        samples_per_input=samples,
        crops_per_photo=args.crops_per_photo,
        seed=args.seed,
        consistency=args.consistency,
    )
    return write_sr_quality(rows, settings, output_dir)


def _task_command(args: argparse.Namespace, flag: str, **options) -> str:
    """The `ddpm-hub eval` command that reproduces a table: MODEL, the flag, then `--name value` (or `--name` for
    True; nothing for False)."""
    parts = ["ddpm-hub eval", shlex.quote(args.model), flag]
    for name, value in options.items():
        if isinstance(value, bool):
            parts += [f"--{name}"] if value else []
        else:
            parts += [f"--{name}", str(value)]
    return " ".join(parts)


def _run_accuracy_only(args: argparse.Namespace, tasks: AccuracyTasks, output_dir: Path) -> int:
    """`ddpm-hub eval MODEL --class_accuracy` and the like without --bpd/--fid/--sweep: no dataset is read."""
    pipeline = tasks.source.load(args.seed).to(args.device)
    pipeline.set_progress_bar_config(disable=True)
    report = {"model": args.model, "output_dir": str(output_dir)}
    report.update(run_accuracy_tasks(pipeline, tasks, args, output_dir))
    print(json.dumps(report, indent=2))
    return 0
