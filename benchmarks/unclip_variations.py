"""
Image variations of a trained decoder, measured against issue 33's criteria: the share of variations whose two halves
the digit classifier reads as the input canvas's pair (>= 90%), and their spread in the classifier's features against
real canvases of the same pair (>= 0.5: variations, not copies). `ddpm_hub.evaluation.variation_accuracy`.

    python benchmarks/unclip_variations.py runs/ddpm-unclip-digit-pairs-decoder [--num_seen 100] [--per_unseen_pair 10]

Inputs: canvases of seen pairs none of which is a canvas of the data, and canvases of the ten pairs never trained on
(the CLIP's held-out canvases, `ddpm_hub.evaluation.clip_accuracy`, seed 1). Writes `variation_accuracy.md` and
`.json` into the run folder and prints the JSON.
"""

import argparse
import importlib.util
import json
import platform
import sys
from pathlib import Path

import torch

if importlib.util.find_spec("ddpm_hub") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ddpm_hub.evaluation.clip_accuracy import seen_canvases, unseen_canvases
from ddpm_hub.evaluation.variation_accuracy import variation_accuracy, variation_accuracy_markdown
from ddpm_hub.pipelines.library import DDPMHubUnCLIPImageVariationPipeline


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a trained decoder folder (with its image_encoder)")
    parser.add_argument("--num_seen", type=int, default=100, help="canvases of seen pairs (default: 100)")
    parser.add_argument("--per_unseen_pair", type=int, default=10, help="canvases of each unseen pair (default: 10)")
    parser.add_argument("--per_input", type=int, default=4, help="variations of each canvas (default: 4)")
    parser.add_argument("--guidance_scales", default="1,3", help="decoder guidance scales (default: 1,3)")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's own)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    pipeline = DDPMHubUnCLIPImageVariationPipeline.from_pretrained(args.model)
    size = tuple(pipeline.sample_shape(1)[2:])
    scales = [float(value) for value in args.guidance_scales.split(",")]
    inputs = {"seen": seen_canvases(args.num_seen, size), "unseen": unseen_canvases(args.per_unseen_pair, size)}
    results = {
        name: variation_accuracy(pipeline, canvases, scales, args.per_input, args.steps)
        for name, canvases in inputs.items()
    }
    settings = {
        "per_input": args.per_input,
        "steps": args.steps or pipeline.default_num_inference_steps,
        "scheduler": type(pipeline.scheduler).__name__,
        "device": f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}",
    }
    report = {"model": args.model, "settings": settings, "results": results}
    Path(args.model, "variation_accuracy.json").write_text(json.dumps(report, indent=2) + "\n")
    command = "python benchmarks/unclip_variations.py " + " ".join(argv if argv is not None else sys.argv[1:])
    markdown = variation_accuracy_markdown(results, settings) + f"\nCommand: `{command}`\n"
    Path(args.model, "variation_accuracy.md").write_text(markdown)
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
