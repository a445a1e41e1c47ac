"""The `ddpm-hub` command line: `ddpm-hub info`, `ddpm-hub sample` (and the commands later modules add)."""

import argparse
import json
import sys
from pathlib import Path

import torch

from .configs import (
    available_pipelines,
    build_pipeline,
    count_parameters,
    load_or_build_pipeline,
    resolve_pipeline_config,
)
from .errors import DDPMHubError
from .evaluation import add_eval_arguments, run_eval
from .hub import add_push_arguments, run_push
from .images import make_grid, upscale
from .options import int_at_least


def _info(args: argparse.Namespace) -> int:
    """Parameter count and key settings of a pipeline configuration folder."""
    pipeline = build_pipeline(args.pipeline, seed=None)
    unet, scheduler = pipeline.unet.config, pipeline.scheduler.config
    info = {
        "pipeline": str(resolve_pipeline_config(args.pipeline)),
        "parameters": count_parameters(pipeline.unet),
        "resolution": unet.sample_size,
        "channels": unet.in_channels,
        "beta_schedule": scheduler.beta_schedule,
        "variance_type": scheduler.variance_type,
        "prediction_type": scheduler.prediction_type,
        "num_train_timesteps": scheduler.num_train_timesteps,
    }
    print(json.dumps(info, indent=2))
    return 0


def _sample(args: argparse.Namespace) -> int:
    """Sample a grid from a trained pipeline (folder or Hub repo id) or a fresh configuration."""
    pipeline = load_or_build_pipeline(args.model, seed=args.seed)  # untrained: noise, to check the plumbing
    pipeline.to(args.device)
    generator = [torch.Generator(args.device).manual_seed(args.seed + i) for i in range(args.num_images)]
    images = pipeline(batch_size=args.num_images, num_inference_steps=args.steps, generator=generator).images
    grid = upscale(make_grid(images), args.scale)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.output)
    print(json.dumps({"output": args.output, "num_images": args.num_images, "steps": args.steps}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddpm-hub", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("info", help="parameter count and settings of a pipeline configuration")
    info.add_argument("pipeline", help=f"a pipelines/<name> folder or a name: {', '.join(available_pipelines())}")
    info.set_defaults(func=_info)

    sample = commands.add_parser("sample", help="sample an image grid")
    sample.add_argument("model", help="a trained pipeline folder, a Hub repo id, or a pipelines/<name> configuration")
    sample.add_argument("--num_images", type=int_at_least(1), default=16, help="images in the grid (default: 16)")
    sample.add_argument("--steps", type=int_at_least(1), default=1000, help="respaced DDPM steps (default: 1000)")
    sample.add_argument("--seed", type=int_at_least(0), default=0, help="image i uses seed + i (default: 0)")
    sample.add_argument(
        "--scale", type=int_at_least(1), default=1, help="nearest-neighbour upscaling of the grid (default: 1)"
    )
    sample.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    sample.add_argument("--output", default="samples.png", help="PNG path (default: samples.png)")
    sample.set_defaults(func=_sample)

    evaluate = commands.add_parser("eval", help="bits/dim (--bpd), FID/KID (--fid), the sampler sweep (--sweep)")
    add_eval_arguments(evaluate)
    evaluate.set_defaults(func=run_eval)

    push = commands.add_parser("push", help="publish a trained output folder to the Hugging Face Hub")
    add_push_arguments(push)
    push.set_defaults(func=run_push)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; the project's own errors (`DDPMHubError`) become one line and their exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # argparse: --help (0) or a bad option (2), already printed
        return exit.code
    try:
        return args.func(args)
    except DDPMHubError as error:
        print(f"ddpm-hub {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
