"""`ddpm-hub img2img`: an image edited by noising it to t = strength x T and denoising it (SDEdit).

ddpm-hub img2img runs/ddpm-digits-16 noisy.png --strength 0.6 --num_images 4
"""

import argparse

from ..errors import UsageError
from ..pictures import strip, to_pil
from ..pipelines.library import DDPMHubImg2ImgPipeline
from .common import (
    add_model_arguments,
    check_output,
    conditioning,
    generators,
    load_model,
    read_image,
    refused_inputs,
    save,
)

HELP = "edit an image by noising and denoising it (SDEdit)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, steps=1000, num_images=4)
    parser.add_argument("image", help="the image to edit")
    parser.add_argument("--strength", type=float, default=0.6, help="t = strength x T, in [0, 1] (default: 0.6)")
    parser.add_argument("--output", default="img2img.png", help="PNG path (default: img2img.png)")


def run(args: argparse.Namespace) -> int:
    """A row: the input, then --num_images SDEdit results."""
    check_output(args)
    if not 0 <= args.strength <= 1:
        raise UsageError(f"--strength must be in [0, 1], got {args.strength}.")
    pipeline = DDPMHubImg2ImgPipeline.from_pipe(load_model(args))
    image = read_image(args.image, "IMAGE")
    call = {"num_inference_steps": args.steps, "generator": generators(args), "strength": args.strength}
    call.update(conditioning(pipeline, args))
    with refused_inputs(f"--strength {args.strength} --steps {args.steps}"):
        results = pipeline(image=[image] * args.num_images, **call).images
    shown = to_pil(pipeline.preprocess(image, pipeline.image_channels) * 2 - 1)
    return save(strip([shown + list(results)], args.scale), args, num_images=args.num_images, strength=args.strength)
