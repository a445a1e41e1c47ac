"""Decoding one image: any file or Hub value, any PIL mode and size -> uint8 `[C x H x W]` (see `ddpm_hub.data`).

Sizes: a `resolution` is an int (square, H = W) or a pair (height, width); `image_size` turns either into the pair.
Only numpy and PIL run here (no torch op), so that the decode worker processes of `ddpm_hub.data.parallel` stay light.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps

from ..shipped.image_processing_ddpm_hub import convert_mode

# The loader's own version: part of the decoded cache's key (`ddpm_hub.data.cache`). Bump it whenever a change here
# or in `_load_digits` changes the pixels that come out, so that no cache of the old pixels is reused.
DECODER_VERSION = 2

Resolution = int | tuple[int, int]


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


def caption_list(value) -> list[str]:
    """
    An example's captions as a list of non-empty strings: a string, or a list of them (one is drawn per epoch); a
    missing or empty caption, or another type, skips the example.
    """
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise SkipImage(
            "no caption" if value is None or items == [] else f"caption is a {type(value).__name__}, not text"
        )
    texts = [item.strip() for item in items if isinstance(item, str) and item.strip()]
    if len(texts) != len(items):
        raise SkipImage(f"missing, empty or non-text caption(s) in {value!r}"[:120])
    return texts


def image_size(resolution: Resolution) -> tuple[int, int]:
    """(height, width) of an int (square) or a (height, width) pair."""
    if isinstance(resolution, int):
        return resolution, resolution
    height, width = resolution
    return int(height), int(width)


def is_size(value) -> bool:
    """An int >= 1 (square), or a (height, width) pair of them (a list or a tuple)."""
    sides = list(value) if isinstance(value, (list, tuple)) else [value]
    return len(sides) in (1, 2) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sides)


def size_text(resolution: Resolution) -> str:
    """`"16"` for a square resolution, `"8x16"` (height x width) otherwise: what messages and file names show."""
    height, width = image_size(resolution)
    return str(height) if height == width else f"{height}x{width}"


def open_file(path: str, resolution: Resolution | None = None) -> Image.Image:
    """
    Open and fully decode one image file, EXIF orientation applied: every image file that enters (training data,
    and the inputs of `ddpm-hub inpaint / img2img / noise`). With `resolution`, too small images are rejected before
    decoding the pixels.
    """
    try:
        with Image.open(path) as image:
            if resolution is not None:
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


def check_size(image: Image.Image, resolution: Resolution) -> None:
    """Images are only ever shrunk: one that would have to be enlarged to cover H x W is skipped."""
    width, height = image.size
    target_height, target_width = image_size(resolution)
    if target_height == target_width and min(width, height) < target_height:
        raise SkipImage(f"too small: {width}x{height}, short side {min(width, height)} < resolution {target_height}")
    if width < target_width or height < target_height:
        raise SkipImage(
            f"too small: {width}x{height} (width x height) for resolution {target_height}x{target_width} "
            "(height x width)"
        )


def image_to_array(image: Image.Image, resolution: Resolution, channels: int, center_crop: bool) -> np.ndarray:
    """A decoded PIL image of any mode and size -> uint8 numpy [channels x H x W]."""
    check_size(image, resolution)
    image = _resize(_convert_mode(image, channels), image_size(resolution), center_crop)
    pixels = np.asarray(image, dtype=np.uint8)  # [H x W] (L) or [H x W x 3] (RGB)
    pixels = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels)


def _convert_mode(image: Image.Image, channels: int) -> Image.Image:
    """Any PIL mode -> "L" or "RGB": the one conversion of every image that enters (`image_processing_ddpm_hub`)."""
    try:
        return convert_mode(image, channels)
    except ValueError as exc:
        raise SkipImage(str(exc)) from exc


def _resize(image: Image.Image, size: tuple[int, int], center_crop: bool) -> Image.Image:
    """
    Resize to cover `size` = (H, W) keeping the aspect ratio, then crop the centre H x W; or squash to H x W. For a
    square size this is torchvision's Resize(int) + CenterCrop arithmetic: the short side becomes H.
    """
    target_height, target_width = size
    if not center_crop:
        return image.resize((target_width, target_height), Image.Resampling.BILINEAR)
    width, height = image.size
    if target_width * height >= target_height * width:  # the width limits: it becomes W, the height follows
        new_width, new_height = target_width, int(target_width * height / width)
    else:
        new_width, new_height = int(target_height * width / height), target_height
    if (new_width, new_height) != (width, height):
        image = image.resize((new_width, new_height), Image.Resampling.BILINEAR)
    left = int(round((new_width - target_width) / 2.0))
    top = int(round((new_height - target_height) / 2.0))
    return image.crop((left, top, left + target_width, top + target_height))
