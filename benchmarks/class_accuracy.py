"""
How well a class-conditional digits model obeys its labels: for each guidance scale w, the share of samples that our
own digit classifier (`ddpm_hub.evaluation.digit_classifier`, trained in the repo, no download) reads as the requested
digit, overall and per class. Not a test.

    python benchmarks/class_accuracy.py runs/ddpm-digits-16-cond --guidance_scales 0,1,2,4 --num_per_class 50

Every scale samples the same noise for the same image (`ddpm_hub.pipelines.sampling`: image i from seed + i), so the
rows differ by w only. Prints one JSON line;
writes class_accuracy.md (the table the model card includes) and class_accuracy.json into --output_dir (default: the
model folder).
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

from ddpm_hub import DDPMHubPipeline
from ddpm_hub.evaluation.digit_classifier import class_balance, classify, load_digit_classifier
from ddpm_hub.options import guidance_scale
from ddpm_hub.pipelines.conditioning import ImageConditions
from ddpm_hub.pipelines.sampling import sample_images
from ddpm_hub.run_folder import CLASS_ACCURACY_FILE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a trained class-conditional digits pipeline (folder or Hub repo id)")
    parser.add_argument("--guidance_scales", default="0,1,2,4", help="comma separated (default: %(default)s)")
    parser.add_argument("--num_per_class", type=int, default=50, help="samples per class and scale (default: 50)")
    parser.add_argument("--steps", type=int, default=100, help="respaced DDPM steps (default: %(default)s)")
    parser.add_argument("--batch_size", type=int, default=250, help="images per pipeline call (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="image i uses seed + i (default: %(default)s)")
    parser.add_argument("--output_dir", default=None, help="where the table goes (default: the model folder)")
    args = parser.parse_args(argv)
    try:  # the pipelines' one range, checked before any sampling
        args.scales = [guidance_scale(w) for w in args.guidance_scales.split(",")]
    except argparse.ArgumentTypeError as error:
        parser.error(f"--guidance_scales: {error}")
    if args.num_per_class < 1 or args.steps < 1 or args.batch_size < 1:
        parser.error("--num_per_class, --steps and --batch_size must be >= 1.")
    return args


def sample_scale(pipeline, labels: list[int], scale: float, args: argparse.Namespace) -> torch.Tensor:
    """uint8 samples `[N x C x H x W]` of `labels` at guidance `scale`: image i is `ddpm_hub.pipelines.sampling`'s
    image i (the same noise at every scale)."""
    conditions = ImageConditions(len(labels), {"class_labels": labels})
    call_kwargs = {"guidance_scale": scale, "num_inference_steps": args.steps}
    return sample_images(
        pipeline, range(len(labels)), args.seed, args.batch_size, inputs=conditions.of, call_kwargs=call_kwargs
    )


def markdown(rows: list[dict], settings: dict) -> str:
    classes = len(rows[0]["per_class"])
    lines = [
        "| guidance w | accuracy | " + " | ".join(str(c) for c in range(classes)) + " |",
        "| ---: | ---: | " + " | ".join("---:" for _ in range(classes)) + " |",
    ]
    for row in rows:
        per_class = " | ".join(f"{share:.0%}" for share in row["per_class"])
        lines.append(f"| {row['guidance_scale']:g} | **{row['accuracy']:.1%}** | {per_class} |")
    lines += [
        "",
        f"Share of {settings['num_per_class']} samples per class ({settings['steps']} respaced DDPM steps) that the "
        f"repo's own digit classifier (held-out accuracy {settings['classifier_accuracy']:.1%} on real digits) reads "
        f"as the requested digit; w = 0 is the null label (unconditional), w = 1 the conditional model. Device: "
        f"{settings['device']}. Produced by `{settings['command']}`.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    pipeline = DDPMHubPipeline.from_pretrained(args.model)
    pipeline.set_progress_bar_config(disable=True)
    kind = pipeline.conditioning.classes
    if kind is None or not kind.has_null:
        raise SystemExit(f"{args.model} is not a class-conditional model with a null label.")
    classifier, report = load_digit_classifier()
    classes = list(range(kind.num_classes))
    labels = [c for c in classes for _ in range(args.num_per_class)]
    rows = []
    for scale in args.scales:
        started = time.perf_counter()
        images = sample_scale(pipeline, labels, scale, args)
        seconds = time.perf_counter() - started
        predicted, _ = classify(classifier, images)
        wanted = torch.tensor(labels)
        correct = predicted == wanted
        rows.append(
            {
                "guidance_scale": scale,
                "accuracy": float(correct.float().mean()),
                "per_class": [float(correct[wanted == c].float().mean()) for c in classes],
                "predicted_balance": class_balance(predicted)["shares"],
                "images_per_second": len(labels) / seconds,
            }
        )
    device = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    command = f"python benchmarks/class_accuracy.py {args.model} --guidance_scales {args.guidance_scales} "
    command += f"--num_per_class {args.num_per_class} --steps {args.steps} --seed {args.seed}"
    settings = {
        "model": args.model,
        "num_per_class": args.num_per_class,
        "steps": args.steps,
        "seed": args.seed,
        "classifier_accuracy": report["heldout_accuracy"],
        "device": device,
        "command": command,
    }
    output_dir = Path(args.output_dir or args.model)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / CLASS_ACCURACY_FILE).write_text(markdown(rows, settings))
    (output_dir / "class_accuracy.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n")
    result = {"rows": [{k: v for k, v in row.items() if k != "predicted_balance"} for row in rows], **settings}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
