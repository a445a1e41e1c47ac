"""Small image helpers shared by sampling, training and publishing (no torchvision)."""

import math

import numpy as np
import torch
from PIL import Image


def make_grid(images: list[Image.Image], columns: int | None = None, padding: int = 2) -> Image.Image:
    """Tile equally sized PIL images into one grid (rows of `columns`, default: as square as possible)."""
    if not images:
        raise ValueError("make_grid needs at least one image.")
    width, height = images[0].size
    if any(im.size != (width, height) for im in images):
        raise ValueError("make_grid needs images of one size.")
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    grid = Image.new(images[0].mode, (columns * (width + padding) + padding, rows * (height + padding) + padding))
    for i, image in enumerate(images):
        row, col = divmod(i, columns)
        grid.paste(image, (padding + col * (width + padding), padding + row * (height + padding)))
    return grid


def upscale(image: Image.Image, factor: int) -> Image.Image:
    """Nearest-neighbour enlargement, so that 16x16 samples stay readable in a README."""
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def to_uint8(images: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Floats in [0, 1] (a numpy array or a torch tensor, any shape) -> uint8 of the same kind, rounded."""
    scaled = (images * 255).round().clip(0, 255)
    return scaled.to(torch.uint8) if isinstance(images, torch.Tensor) else scaled.astype(np.uint8)
