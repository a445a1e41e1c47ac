"""`ddpm-hub noise`: the forward process of one image, x_t ~ q(x_t | x_0) (eq. 4) at chosen t.

ddpm-hub noise digit.png --timesteps 0,50,100,250,500,1000
"""

import argparse

import numpy as np
import torch
from PIL import Image

from ..errors import UsageError
from ..options import int_at_least
from ..pictures import forward_strip, strip
from ..pipelines.source import Source
from ..shipped.image_processing_ddpm_hub import SIXTEEN_BIT_MODES, convert_mode
from .common import check_output, read_image, save

HELP = "the forward process of an image: x_t at chosen t"
GRAYSCALE_MODES = ("1", "L", "LA", "La", "F", *SIXTEEN_BIT_MODES)  # kept one channel


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="an image file")
    parser.add_argument(
        "--timesteps", default="0,50,100,250,500,1000", help="paper timesteps, 0 = the data (default: %(default)s)"
    )
    parser.add_argument(
        "--pipeline", default="ddpm-cifar10-32", help="whose noise schedule (default: the paper's linear one)"
    )
    parser.add_argument("--size", type=int_at_least(1), default=None, help="resize the image to SIZE x SIZE first")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="(default: 0)")
    parser.add_argument("--scale", type=int_at_least(1), default=4, help="enlargement (default: 4)")
    parser.add_argument("--output", default="forward.png", help="PNG path (default: forward.png)")


def run(args: argparse.Namespace) -> int:
    """The forward process of one image: x_t ~ q(x_t | x_0) at each of --timesteps."""
    check_output(args)
    try:
        timesteps = [int(t) for t in args.timesteps.split(",")]
    except ValueError:
        raise UsageError(f"--timesteps must be integers separated by commas, got {args.timesteps!r}.") from None
    scheduler = Source.of(args.pipeline).build(seed=None).scheduler
    image = read_image(args.image, "IMAGE")
    image = convert_mode(image, 1 if image.mode in GRAYSCALE_MODES else 3)  # 16-bit, float, alpha: as training
    if args.size:
        image = image.resize((args.size, args.size), Image.Resampling.BILINEAR)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1)
    x_0 = (pixels[None, None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)[None]).double()
    try:
        frames = forward_strip(x_0, scheduler, timesteps, torch.Generator().manual_seed(args.seed))
    except ValueError as error:
        raise UsageError(f"--timesteps: {error}") from None
    return save(strip([frames], args.scale), args, timesteps=timesteps, schedule=scheduler.config.beta_schedule)
