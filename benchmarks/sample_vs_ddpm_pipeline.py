"""
DDPMHubPipeline against diffusers' DDPMPipeline on the same weights, steps and generators: the same images, and the
sampling speed of each, interleaved round by round in one process (this machine's speed drifts). Not a test.

    python benchmarks/sample_vs_ddpm_pipeline.py --pipeline ddpm-digits-16 --batch_size 64 --steps 100

Prints one JSON line: ms per batch of each (best round), the ratio, and whether the images were identical.
"""

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

if importlib.util.find_spec("ddpm_hub") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twins import diffusers_twin  # benchmarks/, this script's folder

from ddpm_hub.pipelines import Source


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default="ddpm-digits-16", help="a configuration or a trained folder")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    ours = Source.of(args.pipeline).build(seed=0)
    theirs = diffusers_twin(ours)
    pipelines = {"ddpm_hub": ours, "diffusers": theirs}
    for pipeline in pipelines.values():
        pipeline.set_progress_bar_config(disable=True)

    def sample(pipeline) -> np.ndarray:
        generator = torch.Generator().manual_seed(0)
        return pipeline(
            batch_size=args.batch_size, num_inference_steps=args.steps, generator=generator, output_type="np"
        ).images

    identical = np.array_equal(sample(ours), sample(theirs))
    best = {name: float("inf") for name in pipelines}
    for _ in range(args.rounds):
        for name, pipeline in pipelines.items():
            started = time.perf_counter()
            sample(pipeline)
            best[name] = min(best[name], time.perf_counter() - started)
    result = {
        "pipeline": args.pipeline,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "threads": torch.get_num_threads(),
        "ddpm_hub_ms_per_batch": round(1000 * best["ddpm_hub"], 1),
        "diffusers_ms_per_batch": round(1000 * best["diffusers"], 1),
        "ddpm_hub_over_diffusers": round(best["ddpm_hub"] / best["diffusers"], 3),
        "identical_images": identical,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
