"""`ddpm-hub variations`: variations of images by a DALL-E 2 decoder: each image's own CLIP embedding, decoded again.

ddpm-hub variations runs/ddpm-unclip-digit-pairs-decoder canvas.png other.png --num_images 4 --guidance_scale 3
"""

import argparse

from ..options import guidance_scale, int_at_least
from ..pictures import strip, to_pil
from ..pipelines.library import DDPMHubUnCLIPImageVariationPipeline
from ..pipelines.sampling import image_generator
from ..shipped.pipeline_ddpm_hub_unclip_variation import DEFAULT_DECODER_GUIDANCE_SCALE
from .common import (
    DEVICE,
    add_loading_arguments,
    check_output,
    load_model,
    model_source,
    read_image,
    refused_inputs,
    save,
)

HELP = "variations of images: their CLIP image embeddings decoded again (unCLIP)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a decoder: a trained folder or Hub repo with its image_encoder")
    parser.add_argument("images", nargs="+", help="the images to vary")
    parser.add_argument("--num_images", type=int_at_least(1), default=4, help="variations of each image (default: 4)")
    shown = "the model's own: its fast sampler's calls, else 1000"
    parser.add_argument("--steps", type=int_at_least(1), default=None, help=f"steps of the chain (default: {shown})")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="variation i uses seed + i (default: 0)")
    parser.add_argument(
        "--guidance_scale",
        type=guidance_scale,
        default=None,
        help="the decoder's classifier-free guidance w (1: none; 0: the zero embedding; default: the model's "
        f"decoder_guidance_scale, its run's --validation_guidance_scale, else {DEFAULT_DECODER_GUIDANCE_SCALE:g})",
    )
    parser.add_argument("--scale", type=int_at_least(1), default=4, help="nearest-neighbour enlargement (default: 4)")
    parser.add_argument("--device", default=DEVICE, help=f"torch device (default: {DEVICE})")
    parser.add_argument("--output", default="variations.png", help="PNG path (default: variations.png)")
    add_loading_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """A row per image: the image (at the model's size), then its --num_images variations."""
    check_output(args)
    source = model_source(args)
    pipeline = DDPMHubUnCLIPImageVariationPipeline.from_pipe(load_model(args, source))
    if args.guidance_scale is None:  # the folder's default (a DDPMHubPipeline, loaded first, does not keep it)
        saved = source.model_index.get("decoder_guidance_scale")
        args.guidance_scale = DEFAULT_DECODER_GUIDANCE_SCALE if saved is None else float(saved)
    pipeline.set_progress_bar_config(disable=True)
    images = [read_image(path, "IMAGE") for path in args.images]
    count = len(images) * args.num_images
    with refused_inputs(f"--guidance_scale {args.guidance_scale:g} --steps {args.steps}"):
        results = pipeline(
            image=images if len(images) > 1 else images[0],
            num_images_per_prompt=args.num_images,
            decoder_num_inference_steps=args.steps,
            decoder_guidance_scale=args.guidance_scale,
            generator=[image_generator(args.seed, i) for i in range(count)],
        ).images
    rows = []
    for i, image in enumerate(images):
        shown = to_pil(pipeline.preprocess(image, pipeline.image_channels) * 2 - 1)
        rows.append(shown + list(results[i * args.num_images : (i + 1) * args.num_images]))
    return save(strip(rows, args.scale), args, num_images=count, guidance_scale=args.guidance_scale)
