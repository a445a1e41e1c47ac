"""
Which digits an unconditional digits model draws, against the data: the class shares the repo's digit classifier
(`ddpm_hub.evaluation.digit_classifier`) reads in samples of each sampler, beside the true shares of the 1,797 digits
and what the classifier reads in them. Not a test.

    python benchmarks/class_balance.py runs/ddpm-digits-16 --samplers ddpm-1000,ddim-20 --num_images 898

Also the classifier's confidence (mean top probability) per class read, to tell a model that does not draw a digit
from samples the classifier cannot place. Image i from seed + i (`ddpm_hub.pipelines.sampling`). Prints a Markdown
table and one JSON line.
"""

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import torch

if importlib.util.find_spec("ddpm_hub") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ddpm_hub import Source
from ddpm_hub.evaluation.digit_classifier import classify, load_digit_classifier, load_digits_dataset
from ddpm_hub.evaluation.sweep import generate_images
from ddpm_hub.pipelines.sampling import Sampler, with_sampler

CLASSES = range(10)


def shares(labels: torch.Tensor) -> list[float]:
    return (torch.bincount(labels, minlength=10).double() / len(labels)).tolist()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="unconditional digits models (folders or repo ids)")
    parser.add_argument("--samplers", default="ddpm-1000,ddim-20", help="NAME-STEPS, comma separated")
    parser.add_argument("--num_images", type=int, default=898)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=256)
    args = parser.parse_args(argv)
    classifier, _ = load_digit_classifier()
    digits, labels = load_digits_dataset()
    read, _ = classify(classifier, digits)
    rows = [("the digits (true labels)", shares(labels), None), ("the digits (as read)", shares(read), None)]
    for name in args.models:
        pipeline = Source.of(name).load()
        for text in args.samplers.split(","):
            sampler = Sampler.parse(text)
            swapped = with_sampler(pipeline, sampler.name)
            images, _ = generate_images(swapped, args.num_images, sampler.steps, args.seed, args.batch_size)
            predicted, probabilities = classify(classifier, images)
            confidence = [
                float(probabilities[predicted == c].max(-1).values.mean()) if (predicted == c).any() else None
                for c in CLASSES
            ]
            rows.append((f"{name}, {sampler.label} {sampler.steps}", shares(predicted), confidence))
    lines = ["| images | " + " | ".join(str(c) for c in CLASSES) + " |", "| --- |" + " ---: |" * 10]
    for label, values, confidence in rows:
        cells = [f"{100 * v:.1f}%" + (f" ({confidence[c]:.2f})" if confidence and confidence[c] else "")
                 for c, v in enumerate(values)]  # fmt: skip
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    print(json.dumps({"rows": [{"images": label, "shares": values, "confidence": c} for label, values, c in rows]}))


if __name__ == "__main__":
    main()
