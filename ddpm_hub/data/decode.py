"""Decoding one image: any file or Hub value, any PIL mode and size -> uint8 `[C x H x W]` (see `ddpm_hub.data`)."""

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from PIL import ExifTags, Image, ImageFile, ImageOps

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_WHITE = (255, 255, 255, 255)


class SkipImage(Exception):
    """Internal: one file or row cannot be used; the message is the reason recorded in the report."""


@contextmanager
def strict_truncation_check() -> Iterator[None]:
    """Make PIL raise on truncated files even if some other code turned ``LOAD_TRUNCATED_IMAGES`` on."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def open_file(path: str, resolution: int) -> Image.Image:
    """Open and fully decode one image file; too small images are rejected before decoding the pixels."""
    try:
        with Image.open(path) as image:
            check_size(image, resolution)
            image.load()  # decode everything now: truncated files fail here, not later in training
            if image.getexif().get(ExifTags.Base.Orientation) is not None:
                image = ImageOps.exif_transpose(image)
            return image
    except SkipImage:
        raise
    except Exception as exc:  # PIL plugins raise many types on bad data (OSError, SyntaxError, struct.error, ...)
        raise SkipImage(f"cannot decode as an image ({type(exc).__name__}: {exc})") from exc


def decode_hub_value(decoder, value) -> Image.Image:
    if value is None:
        raise SkipImage("no image in this row (None)")
    try:
        image = decoder.decode_example(value)
    except Exception as exc:  # as in _open_file: PIL raises many types on bad data
        raise SkipImage(f"cannot decode as an image ({type(exc).__name__}: {exc})") from exc
    if image is None:
        raise SkipImage("no image in this row (None)")
    return image


def check_size(image: Image.Image, resolution: int) -> None:
    width, height = image.size
    if min(width, height) < resolution:
        raise SkipImage(f"too small: {width}x{height}, short side {min(width, height)} < resolution {resolution}")


def image_to_tensor(image: Image.Image, resolution: int, channels: int, center_crop: bool) -> torch.Tensor:
    """A decoded PIL image of any mode and size -> uint8 [channels x resolution x resolution]."""
    check_size(image, resolution)
    image = _resize(_convert_mode(image, channels), resolution, center_crop)
    pixels = np.asarray(image, dtype=np.uint8)  # [H x W] (L) or [H x W x 3] (RGB)
    pixels = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(pixels))


def _convert_mode(image: Image.Image, channels: int) -> Image.Image:
    """Any PIL mode -> "L" (channels=1) or "RGB" (channels=3); alpha is composited on white."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.float64) * (255.0 / 65535.0)
        image = Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))
    elif mode == "F":
        values = np.asarray(image).astype(np.float64) * 255.0
        image = Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))
    elif mode in _ALPHA_MODES or "transparency" in image.info:
        background = Image.new("RGBA", image.size, _WHITE)
        image = Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")

    target = "L" if channels == 1 else "RGB"
    try:
        if channels == 1 and image.mode not in ("1", "L", "RGB"):
            image = image.convert("RGB")  # CMYK, YCbCr, P, ... -> RGB first so every mode gets the same luma
        return image if image.mode == target else image.convert(target)
    except ValueError as exc:
        raise SkipImage(f"unsupported image mode {mode!r} ({exc})") from exc


def _resize(image: Image.Image, resolution: int, center_crop: bool) -> Image.Image:
    """Short side to ``resolution`` + centre crop (torchvision Resize(int) + CenterCrop arithmetic), or squash."""
    if not center_crop:
        return image.resize((resolution, resolution), Image.Resampling.BILINEAR)
    width, height = image.size
    if width <= height:
        new_width, new_height = resolution, int(resolution * height / width)
    else:
        new_width, new_height = int(resolution * width / height), resolution
    if (new_width, new_height) != (width, height):
        image = image.resize((new_width, new_height), Image.Resampling.BILINEAR)
    left = int(round((new_width - resolution) / 2.0))
    top = int(round((new_height - resolution) / 2.0))
    return image.crop((left, top, left + resolution, top + resolution))
