# Copyright 2026 The ddpm_hub authors. Apache License 2.0.
"""How an image or a mask given to ddpm_hub becomes pixels: one decoding path for every image that enters.

Training's decoder (`ddpm_hub.data.decode`) and the pipelines' `preprocess` (inpainting, image-to-image) convert a PIL
image of any mode with `convert_mode` here, so that a 16-bit PNG, a float TIFF or an image with transparency gives
the same pixels in both; numpy arrays get the same ranges by their dtype (`unit_array`). Shipped next to
`pipeline_ddpm_hub.py` in every published repo (plain diffusers loads it with `trust_remote_code=True`), so it stays
self-contained: numpy and PIL only.

Images:
- PIL, any mode: 16-bit modes (`I;16*`, `I`) scaled by 255 / 65535, float images (`F`) read as values in [0, 1],
  alpha (RGBA, LA, PA, a `transparency` entry) composited on white; then "L" or "RGB" (luma ITU-R 601-2 for L).
- numpy: uint8 is 0..255, uint16 0..65535, bool 0/1, floats [0, 1]; other integer types are refused (no known range).

Masks (white = the region to generate), diffusers' conventions (`VaeImageProcessor(do_binarize=True,
do_convert_grayscale=True)`): a PIL mask is converted to "L" and divided by 255, a numpy or torch mask is read as its
values (so a uint8 mask of 0/1 and one of 0/255 both mean keep/generate), and both are binarised at 0.5. One addition
for PIL masks with transparency (RGBA, LA, PA): a pixel's alpha scales its value, as if composited on black, so a
transparent pixel is kept and an opaque white one generated (diffusers drops the alpha: a mask painted on a
transparent layer would generate everything). An opaque mask reads exactly as in diffusers.
"""

import numpy as np
import PIL.Image

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
WHITE = (255, 255, 255, 255)
BLACK = (0, 0, 0, 255)


def convert_mode(image: PIL.Image.Image, channels: int) -> PIL.Image.Image:
    """
    Any PIL mode -> 8-bit "L" (channels=1) or "RGB" (channels=3): 16-bit modes scaled by 255 / 65535, float images
    read as [0, 1], alpha composited on white. A mode PIL cannot convert raises ValueError.
    """
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.float64) * (255.0 / 65535.0)
        image = PIL.Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))
    elif mode == "F":
        values = np.asarray(image).astype(np.float64) * 255.0
        image = PIL.Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))
    elif has_alpha(image):
        background = PIL.Image.new("RGBA", image.size, WHITE)
        image = PIL.Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")

    target = "L" if channels == 1 else "RGB"
    try:
        if channels == 1 and image.mode not in ("1", "L", "RGB"):
            image = image.convert("RGB")  # CMYK, YCbCr, P, ... -> RGB first so every mode gets the same luma
        return image if image.mode == target else image.convert(target)
    except ValueError as exc:
        raise ValueError(f"unsupported image mode {mode!r} ({exc})") from exc


def has_alpha(image: PIL.Image.Image) -> bool:
    """The image has transparency: an alpha band, or a `transparency` entry (palette or L/RGB images)."""
    return image.mode in ALPHA_MODES or "transparency" in image.info


def convert_mask(mask: PIL.Image.Image) -> PIL.Image.Image:
    """A PIL mask of any mode -> "L": transparent pixels count as black (kept), opaque ones as their gray value."""
    if has_alpha(mask):
        background = PIL.Image.new("RGBA", mask.size, BLACK)
        return PIL.Image.alpha_composite(background, mask.convert("RGBA")).convert("L")
    return convert_mode(mask, 1)


def unit_array(array: np.ndarray, what: str = "image") -> np.ndarray:
    """A numpy image as float32 in [0, 1] by its dtype: uint8 / 255, uint16 / 65535, bool as 0/1, floats as given."""
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32)
    raise ValueError(
        f"{what}: a numpy array of dtype {array.dtype} has no known range; pass uint8 (0..255), uint16 (0..65535), "
        "bool, or floats in [0, 1]."
    )
