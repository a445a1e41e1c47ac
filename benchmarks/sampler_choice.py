"""
Which sampler a trained model should use by default: every sampler of `ddpm_hub.pipelines.sampling.SAMPLERS` (and
the timestep spacings and options that matter) at 10, 20 and 50 calls. Not a test.

    python benchmarks/sampler_choice.py runs/ddpm-digits-16
    python benchmarks/sampler_choice.py runs/ddpm-digit-pairs-text --text --guidance_scale 3

A digits model (unconditional or class-conditional) is scored by the Fréchet distance of `--num_images` samples to a
seeded half of the 1,797 digits, in the repo's digit classifier's features, divided by that of as many real digits of
the other half (the floor: 1.0 is "as close as real digits are"), as `benchmarks/distill_quality.py` does. A text
model (`--text`) is scored by the share of samples whose two halves the digit classifier reads as the prompt asks
(`ddpm-hub eval --text_accuracy`). Image i starts from the same noise in every row. Prints a Markdown table and one
JSON line; writes sampler_choice.md and .json into --output_dir (default: the model's folder).
"""

import argparse
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

import torch

if importlib.util.find_spec("ddpm_hub") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ddpm_hub import Source
from ddpm_hub.pipelines.sampling import SAMPLERS, with_sampler

CLIPPED = -5.1  # diffusers' lambda_min_clipped for the cosine schedule: no step from a log-SNR below it
VARIANTS = {  # name: (sampler, timestep spacing, scheduler options)
    "ddpm": ("ddpm", "leading", {}),
    "ddpm-trailing": ("ddpm", "trailing", {}),
    "ddim": ("ddim", "leading", {}),
    "ddim-trailing": ("ddim", "trailing", {}),
    "dpmsolver++": ("dpmsolver++", "leading", {}),
    "dpmsolver++-clip": ("dpmsolver++", "leading", {"thresholding": True}),
    "dpmsolver++-trailing": ("dpmsolver++", "trailing", {}),
    "dpmsolver++-trailing-lambda": ("dpmsolver++", "trailing", {"lambda_min_clipped": CLIPPED}),
    "dpmsolver++-trailing-lambda-clip": (
        "dpmsolver++",
        "trailing",
        {"lambda_min_clipped": CLIPPED, "thresholding": True},
    ),
    "unipc": ("unipc", "leading", {}),
    "unipc-clip": ("unipc", "leading", {"thresholding": True}),
    "unipc-trailing-clip": ("unipc", "trailing", {"thresholding": True}),
}


SAVED = "saved"  # --variants saved: the model's own scheduler, as saved


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a trained model (a folder or Hub repo id)")
    parser.add_argument("--calls", default="10,20,50", help="numbers of steps, comma separated (default: %(default)s)")
    parser.add_argument(
        "--variants",
        default=None,
        help="names of VARIANTS, or saved (the model's own scheduler), comma separated (default: all)",
    )
    parser.add_argument("--num_images", type=int, default=898, help="samples per row of a digits model")
    parser.add_argument("--text", action="store_true", help="score a text model by its text accuracy")
    parser.add_argument("--num_per_prompt", type=int, default=2, help="--text: samples per pair and sentence form")
    parser.add_argument("--guidance_scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--output_dir", default=None)
    return parser.parse_args(argv)


def variant(pipeline, name: str):
    """`pipeline` with the sampler of VARIANTS[name]: its timestep spacing and options over the model's config.
    "thresholding" with the configurations' sample_max_value 1 clips the predicted x_0 to [-1, 1], as clip_sample
    does for DDPM and DDIM (DPM-Solver and UniPC have no clip_sample)."""
    sampler, spacing, options = VARIANTS[name]
    swapped = with_sampler(pipeline, sampler)
    config = {**swapped.scheduler.config, "timestep_spacing": spacing, **options}
    swapped.scheduler = type(swapped.scheduler).from_config(config)
    return swapped


def digit_scorer(pipeline, args):
    """(score of a sampler's pipeline at n calls -> dict, the floor) by distance to the digits."""
    from ddpm_hub.data.sources import load_images
    from ddpm_hub.evaluation.metrics import (
        cached_reference_features,
        extract_features,
        features_for,
        reference_split,
        sample_quality,
    )
    from ddpm_hub.evaluation.sweep import generate_images

    features = features_for("digits", "builtin:digits")
    digits = load_images("builtin:digits", resolution=pipeline.unet.config.sample_size, channels=1).images
    reference = reference_split(cached_reference_features(digits, features, {"dataset": "builtin:digits"}), args.seed)
    count = min(args.num_images, len(reference.held_out))
    floor = reference.floor(count, min(1000, count), args.seed, features.standardize_kernel)["fid"]

    def score(model, calls: int) -> dict:
        images, timing = generate_images(model, count, calls, args.seed, args.batch_size, args.guidance_scale)
        quality = sample_quality(
            extract_features(images, features.extract), reference.features, min(1000, count), args.seed,
            features.standardize_kernel,
        )  # fmt: skip
        return {"score": quality["fid"] / floor, "fid": quality["fid"], **timing}

    return score, {"floor_fid": floor, "num_images": count}


def text_scorer(pipeline, args):
    """(score of a sampler's pipeline at n calls -> dict, facts) by the share of pairs read as asked."""
    from ddpm_hub.evaluation.accuracy import text_accuracy
    from ddpm_hub.evaluation.digit_classifier import load_digit_classifier

    classifier = load_digit_classifier()[0]

    def score(model, calls: int) -> dict:
        started = time.perf_counter()
        row = text_accuracy(
            model, [args.guidance_scale], args.num_per_prompt, calls, args.seed, args.batch_size, classifier
        )[0]
        return {"score": row["seen"], "unseen": row["unseen"], "seconds": time.perf_counter() - started}

    return score, {"num_per_prompt": args.num_per_prompt}


def main(argv=None) -> None:
    args = parse_args(argv)
    pipeline = Source.of(args.model).load()
    pipeline.set_progress_bar_config(disable=True)
    names = args.variants.split(",") if args.variants else list(VARIANTS)
    calls = [int(c) for c in args.calls.split(",")]
    score, facts = (text_scorer if args.text else digit_scorer)(pipeline, args)
    rows, started = [], time.perf_counter()
    for name in names:
        if name == SAVED:  # the scheduler the model was saved with, as `pipeline()` samples
            model, spacing, options = pipeline, pipeline.scheduler.config.get("timestep_spacing"), {}
            label = f"{type(pipeline.scheduler).__name__} (as saved)"
        else:
            model = variant(pipeline, name)
            sampler, spacing, options = VARIANTS[name]
            label = SAMPLERS[sampler].label
        for n in calls:
            row = {"variant": name, "label": label, "timesteps": spacing, "options": options}
            row.update(calls=n, **score(model, n))
            rows.append(row)
            print(json.dumps(row), flush=True)
    what = "seen pairs read as asked ↑ | unseen ↑" if args.text else "distance ÷ floor ↓"
    header = f"| variant | sampler | timesteps | options | calls | {what} |"
    lines = [header, "| --- | --- | --- | --- | ---: | ---: |" + (" ---: |" if args.text else "")]
    for row in rows:
        value = f"{row['score']:.1%} | {row['unseen']:.1%}" if args.text else f"{row['score']:.2f}"
        options = ", ".join(f"{k}={v}" for k, v in row["options"].items()) or "-"
        lines.append(
            f"| {row['variant']} | {row['label']} | {row['timesteps']} | {options} | {row['calls']} | {value} |"
        )
    device = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    command = "python benchmarks/sampler_choice.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines += ["", f"Device: {device}. Produced by `{command}`."]
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    output_dir = Path(args.output_dir or args.model)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "sampler_choice.md").write_text(markdown)
    record = {"rows": rows, **facts, "device": device, "seconds": round(time.perf_counter() - started, 1)}
    (output_dir / "sampler_choice.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
