"""`ddpm-hub upscale`: each image upsampled by a super-resolution model, written next to the others as
NAME_upscaled[_j].png.

    ddpm-hub upscale runs/ddpm-sr-16-to-64 photo.png --noise_level 0 --consistency
"""

import argparse
import json
from pathlib import Path

from ..errors import UsageError
from ..options import int_at_least
from ..pipelines.library import DDPMHubSuperResolutionPipeline
from ..pipelines.sampling import image_generator
from .common import DEVICE, add_loading_arguments, model_source, read_image, refused_inputs

HELP = "upsample images with a super-resolution model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a trained super-resolution folder or Hub repo id")
    parser.add_argument("images", nargs="+", help="image files to upsample (each is upsampled on its own)")
    parser.add_argument(
        "--noise_level", type=int_at_least(0), default=None, help="augmentation level (default: the model's)"
    )
    parser.add_argument("--steps", type=int_at_least(1), default=100, help="respaced DDPM steps (default: 100)")
    parser.add_argument("--num_samples", type=int_at_least(1), default=1, help="samples per image (default: 1)")
    parser.add_argument(
        "--seed", type=int_at_least(0), default=0, help="sample j of image k uses seed + ... (default: 0)"
    )
    parser.add_argument(
        "--consistency",
        action="store_true",
        help="project each step's x_0 onto the input (its box average is the input; consistency=True)",
    )
    parser.add_argument("--prompt", default=None, help="a text-conditioned upscaler's prompt")
    parser.add_argument("--guidance_scale", type=float, default=1.0, help="classifier-free guidance w (default: 1)")
    parser.add_argument("--device", default=DEVICE, help=f"torch device (default: {DEVICE})")
    parser.add_argument("--output_dir", default="upscaled", help="where NAME_upscaled[_j].png go (default: upscaled)")
    add_loading_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """`ddpm-hub upscale MODEL IMAGE...`: each image upsampled `low_res_scale` times, one PNG per sample."""
    from tqdm.auto import tqdm

    pipeline = model_source(args).load(seed=args.seed).to(args.device)
    if not isinstance(pipeline, DDPMHubSuperResolutionPipeline):
        raise UsageError(f"{args.model} is not a super-resolution model: upscale takes one (e.g. ddpm-sr-16-to-64).")
    pipeline.set_progress_bar_config(disable=True)
    images = [read_image(path, "IMAGE") for path in args.images]  # every file read before any work
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written, index = [], 0
    extra = {"prompt": args.prompt} if args.prompt is not None else {}
    if args.consistency:
        extra["consistency"] = True
    if args.guidance_scale != 1:
        extra["guidance_scale"] = args.guidance_scale
    for path, image in tqdm(list(zip(args.images, images)), desc="upscale", unit="image"):
        generator = [image_generator(args.seed, index + j) for j in range(args.num_samples)]
        index += args.num_samples
        with refused_inputs(path):
            results = pipeline(
                image=image, noise_level=args.noise_level, num_inference_steps=args.steps, generator=generator,
                batch_size=args.num_samples, **extra,
            ).images  # fmt: skip
        for j, result in enumerate(results):
            suffix = f"_{j}" if args.num_samples > 1 else ""
            target = output_dir / f"{Path(path).stem}_upscaled{suffix}.png"
            result.save(target)
            written.append(str(target))
    print(json.dumps({"written": written, "scale": pipeline.config.low_res_scale}))
    return 0
