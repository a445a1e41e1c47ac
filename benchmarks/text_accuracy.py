"""
How well a text-to-image digit-pairs model reads its prompts: for each guidance scale w, the share of samples whose
left and right halves our own digit classifier (`ddpm_hub.evaluation.digit_classifier`, trained in the repo, no
download) both reads as the prompt asks, for 20 seen pairs and the 10 pairs never in the data (`builtin:digit-pairs`),
in both sentence forms ("{a} left of {b}", "{b} right of {a}"). Not a test.

    python benchmarks/text_accuracy.py runs/ddpm-digit-pairs-text --guidance_scales 0,1,3,5 --num_per_prompt 10

Sample j of a prompt writes its digits as numerals for even j and as words for odd j. Every scale samples the same
noise for the same image (`ddpm_hub.pipelines.sampling`: image i from seed + i), so the rows differ by w only. Prints
one JSON line; writes text_accuracy.md (the table the model card includes) and text_accuracy.json into --output_dir
(default: the model folder).
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
from ddpm_hub.data.digit_pairs import prompt, unseen_pairs
from ddpm_hub.evaluation.digit_classifier import classify, load_digit_classifier
from ddpm_hub.pipelines.conditioning import ImageConditions
from ddpm_hub.pipelines.sampling import sample_images, with_sampler
from ddpm_hub.run_folder import TEXT_ACCURACY_FILE

SEEN = [(a, (a + k) % 10) for a in range(10) for k in (1, 3)]  # 20 pairs of the data, every digit on both sides
FORMS = ("left", "right")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a trained digit-pairs text-to-image pipeline (folder or Hub repo id)")
    parser.add_argument("--guidance_scales", default="0,1,3,5", help="comma separated (default: %(default)s)")
    parser.add_argument("--num_per_prompt", type=int, default=10, help="samples per pair and form (default: 10)")
    parser.add_argument("--sampler", default="ddpm", help="ddpm_hub.pipelines.sampling sampler (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=100, help="sampling steps (default: %(default)s)")
    parser.add_argument("--batch_size", type=int, default=200, help="images per pipeline call (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="image i uses seed + i (default: %(default)s)")
    parser.add_argument("--output_dir", default=None, help="where the table goes (default: the model folder)")
    args = parser.parse_args(argv)
    args.scales = [float(w) for w in args.guidance_scales.split(",")]
    if args.num_per_prompt < 1 or args.steps < 1 or args.batch_size < 1:
        parser.error("--num_per_prompt, --steps and --batch_size must be >= 1.")
    return args


def requests(num_per_prompt: int) -> list[dict]:
    """Every sample asked for: its pair, seen or not, sentence form, and prompt."""
    rows = []
    for seen, pairs in ((True, SEEN), (False, unseen_pairs())):
        for left, right in pairs:
            for form in FORMS:
                for j in range(num_per_prompt):
                    text = prompt(left, right, form, words=j % 2 == 1)
                    rows.append({"left": left, "right": right, "seen": seen, "form": form, "prompt": text})
    return rows


def read_halves(classifier, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The digits the classifier reads in the left and right 16 x 16 halves of `[N x 1 x 16 x 32]` samples."""
    half = images.shape[-1] // 2
    left, _ = classify(classifier, images[..., :half].contiguous())
    right, _ = classify(classifier, images[..., half:].contiguous())
    return left, right


def accuracy(correct: torch.Tensor, asked: list[dict], **where) -> float:
    chosen = [i for i, row in enumerate(asked) if all(row[key] == value for key, value in where.items())]
    return float(correct[chosen].float().mean())


def markdown(rows: list[dict], settings: dict) -> str:
    lines = [
        "| guidance w | seen pairs | seen, 'a left of b' | seen, 'b right of a' | unseen pairs "
        "| unseen, 'a left of b' | unseen, 'b right of a' |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        cells = [
            row["seen"],
            row["seen_left"],
            row["seen_right"],
            row["unseen"],
            row["unseen_left"],
            row["unseen_right"],
        ]
        bold = {0, 3}
        text = " | ".join(f"**{value:.1%}**" if i in bold else f"{value:.1%}" for i, value in enumerate(cells))
        lines.append(f"| {row['guidance_scale']:g} | {text} |")
    lines += [
        "",
        f"Share of samples whose two halves the repo's own digit classifier (held-out accuracy "
        f"{settings['classifier_accuracy']:.1%} on real digits) both reads as the prompt asks: {len(SEEN)} pairs of "
        f"the data and the {len(unseen_pairs())} pairs (d, d + 5 mod 10) it never had, {settings['num_per_prompt']} "
        f"samples per pair and sentence form (numerals and words alternating), {settings['sampler']} with "
        f"{settings['steps']} steps. Chance is 1%. w = 0 is the empty prompt (unconditional), w = 1 the conditional "
        f"model. Device: {settings['device']}. Produced by `{settings['command']}`.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    pipeline = with_sampler(DDPMHubPipeline.from_pretrained(args.model), args.sampler)
    if pipeline.conditioning.prompts is None:
        raise SystemExit(f"{args.model} is not a text-to-image model.")
    classifier, report = load_digit_classifier()
    asked = requests(args.num_per_prompt)
    conditions = ImageConditions(len(asked), {"prompt": [row["prompt"] for row in asked]})
    wanted_left = torch.tensor([row["left"] for row in asked])
    wanted_right = torch.tensor([row["right"] for row in asked])
    rows = []
    for scale in args.scales:
        started = time.perf_counter()
        call_kwargs = {"guidance_scale": scale, "num_inference_steps": args.steps}
        images = sample_images(
            pipeline, range(len(asked)), args.seed, args.batch_size, inputs=conditions.of, call_kwargs=call_kwargs
        )
        seconds = time.perf_counter() - started
        left, right = read_halves(classifier, images)
        correct = (left == wanted_left) & (right == wanted_right)
        row = {"guidance_scale": scale, "images_per_second": len(asked) / seconds}
        for name, seen in (("seen", True), ("unseen", False)):
            row[name] = accuracy(correct, asked, seen=seen)
            for form in FORMS:
                row[f"{name}_{form}"] = accuracy(correct, asked, seen=seen, form=form)
        row["left_half"] = float((left == wanted_left).float().mean())
        row["right_half"] = float((right == wanted_right).float().mean())
        rows.append(row)
    device = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    command = f"python benchmarks/text_accuracy.py {args.model} --guidance_scales {args.guidance_scales} "
    command += (
        f"--num_per_prompt {args.num_per_prompt} --sampler {args.sampler} --steps {args.steps} --seed {args.seed}"
    )
    settings = {
        "model": args.model,
        "num_per_prompt": args.num_per_prompt,
        "sampler": args.sampler,
        "steps": args.steps,
        "seed": args.seed,
        "seen_pairs": SEEN,
        "unseen_pairs": unseen_pairs(),
        "classifier_accuracy": report["heldout_accuracy"],
        "device": device,
        "command": command,
    }
    output_dir = Path(args.output_dir or args.model)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / TEXT_ACCURACY_FILE).write_text(markdown(rows, settings))
    (output_dir / "text_accuracy.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n")
    result = {"rows": rows, **{k: v for k, v in settings.items() if not k.endswith("_pairs")}}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
