"""`ddpm-hub eval --class_accuracy / --text_accuracy / --sr_quality`: what a conditional model does with its condition
(`ddpm_hub.evaluation.accuracy`, `ddpm_hub.evaluation.sr_quality`): the options, their checks against the model's
configs before any work, and the tables written next to the model."""

import argparse
import json
import platform
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.digit_pairs import unseen_pairs
from ..errors import UsageError
from ..evaluation.accuracy import (
    SEEN_PAIRS,
    class_accuracy,
    class_accuracy_markdown,
    text_accuracy,
    text_accuracy_markdown,
    write_report,
)
from ..evaluation.digit_classifier import load_digit_classifier
from ..evaluation.sr_quality import SIZE as SR_SIZE
from ..evaluation.sr_quality import photographs, sr_quality, write_sr_quality
from ..options import guidance_scale, int_at_least
from ..pipelines.sampling import with_sampler
from ..pipelines.source import Source
from ..run_folder import CLASS_ACCURACY_FILE, TEXT_ACCURACY_FILE
from .common import model_source

CLASS_SCALES, TEXT_SCALES = [0.0, 1.0, 2.0, 4.0], [0.0, 1.0, 3.0, 5.0]  # --guidance_scales' defaults
FID_STEPS, ACCURACY_STEPS, SR_STEPS = 1000, 100, [50]  # --steps' defaults


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


def device_name(device: str) -> str:
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
    source = model_source(args)  # the configs only, before any weights are read
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
        settings.update(seed=args.seed, classifier_accuracy=accuracy, device=device_name(args.device))
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
        settings.update(unseen_pairs=unseen_pairs(), classifier_accuracy=accuracy, device=device_name(args.device))
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
    settings.update(crops=names, scale=pipeline.conditioning.low_res.scale, device=device_name(args.device))
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


def run_accuracy_only(args: argparse.Namespace, tasks: AccuracyTasks, output_dir: Path) -> int:
    """`ddpm-hub eval MODEL --class_accuracy` and the like without --bpd/--fid/--sweep: no dataset is read."""
    pipeline = tasks.source.load(args.seed).to(args.device)
    pipeline.set_progress_bar_config(disable=True)
    report = {"model": args.model, "output_dir": str(output_dir)}
    report.update(run_accuracy_tasks(pipeline, tasks, args, output_dir))
    print(json.dumps(report, indent=2))
    return 0
