"""`ddpm-hub inpaint`: the white region of a mask completed (RePaint), with any trained model; a latent model completes
every latent with a pixel in it, and the picture greys that region.

ddpm-hub inpaint runs/ddpm-digits-16 digit.png mask.png --num_images 4
"""

import argparse

import torch
import torch.nn.functional as F

from ..options import int_at_least
from ..pictures import strip, to_pil
from ..pipelines.library import DDPMHubInpaintPipeline
from ..shipped.latents_ddpm_hub import latent_mask, vae_scale_factor
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

HELP = "complete the white region of a mask (RePaint)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, steps=250, num_images=4)
    parser.add_argument("image", help="the image to complete")
    parser.add_argument("mask", help="the mask: white = the region to generate, black = the pixels to keep")
    parser.add_argument("--jump_length", type=int_at_least(1), default=10, help="RePaint's jump length (default: 10)")
    parser.add_argument(
        "--jump_n_sample", type=int_at_least(1), default=10, help="RePaint's resamplings (default: 10)"
    )
    parser.add_argument("--output", default="inpainted.png", help="PNG path (default: inpainted.png)")


def run(args: argparse.Namespace) -> int:
    """A row: the input, the input with the region to generate greyed, then --num_images completions."""
    check_output(args)
    pipeline = DDPMHubInpaintPipeline.from_pipe(load_model(args))
    image, mask = read_image(args.image, "IMAGE"), read_image(args.mask, "MASK")
    call = {"num_inference_steps": args.steps, "generator": generators(args), "jump_length": args.jump_length}
    call.update(conditioning(pipeline, args), jump_n_sample=args.jump_n_sample)
    with torch.no_grad():
        x_0 = pipeline.preprocess(image, pipeline.image_channels)
        unknown = pipeline.preprocess_mask(mask, what="MASK") == 1
        if pipeline.vae is not None:  # the pixels of every latent with an unknown pixel: what the model redraws
            known = latent_mask(~unknown, pipeline.latent_shape(1)[2:])
            unknown = F.interpolate(known, scale_factor=vae_scale_factor(pipeline.vae), mode="nearest") < 0.5
    with refused_inputs(f"{args.image} / {args.mask}"):
        results = pipeline(image=[image] * args.num_images, mask_image=mask, **call).images
    shown = [to_pil(x_0 * 2 - 1)[0], to_pil(torch.where(unknown, torch.zeros_like(x_0), x_0 * 2 - 1))[0]]
    return save(strip([shown + list(results)], args.scale), args, num_images=args.num_images, steps=args.steps)
