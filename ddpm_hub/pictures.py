"""Pictures: grids and strips (no torchvision), and pictures of the two processes (the DDPM paper's figures) and of
controlled generation, as PIL images.

- `forward_strip`: x_t ~ q(x_t | x_0) (eq. 4) of one image at chosen t: the forward process destroying it.
- `reverse_trajectory`: x_t and the predicted x_0 at chosen steps of one sampling run (paper, figure 6), recorded
  through the pipeline's `callback_on_step_end`.
- `strip`: images in rows, enlarged (nearest neighbour) so that 16x16 samples stay readable.

Timesteps are the paper's: t = 0 is the data x_0 and t = T the last step of the forward process (diffusers'
0-based index t - 1).
"""

import math

import numpy as np
import torch
from PIL import Image

from .shipped.scheduling_ddpm_hub import DDPMHubScheduler


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


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """Float images `[N x C x H x W]` in [-1, 1] -> PIL (mode L for one channel)."""
    pixels = ((images.detach().float().cpu() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return to_pil_images(pixels)


def to_pil_images(images: torch.Tensor) -> list[Image.Image]:
    """uint8 images `[N x C x H x W]` -> PIL (mode L for one channel)."""
    arrays = images.permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arrays]


def strip(rows: list[list[Image.Image]], scale: int = 1) -> Image.Image:
    """Rows of equally sized images, one grid row each, enlarged `scale` times."""
    columns = max(len(row) for row in rows)
    mode = rows[0][0].mode
    blank = Image.new(mode, rows[0][0].size)
    tiles = [image for row in rows for image in row + [blank] * (columns - len(row))]
    return upscale(make_grid(tiles, columns=columns), scale)


def forward_strip(
    x_0: torch.Tensor, scheduler: DDPMHubScheduler, timesteps: list[int], generator: torch.Generator | None = None
) -> list[Image.Image]:
    """
    One image `[1 x C x H x W]` in [-1, 1] at each paper timestep t in `timesteps` (0 .. T): x_0 itself for t = 0,
    else sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps (eq. 4), each with its own eps.
    """
    T = scheduler.config.num_train_timesteps
    bad = [t for t in timesteps if not 0 <= t <= T]
    if bad:
        raise ValueError(f"timesteps must be in 0..{T} (0 is the data, {T} the last forward step), got {bad}.")
    frames = []
    for t in timesteps:
        if t == 0:
            frames.append(x_0)
            continue
        noise = torch.randn(x_0.shape, generator=generator, dtype=x_0.dtype)
        frames.append(scheduler.add_noise(x_0, noise, torch.tensor([t - 1])))
    return to_pil(torch.cat(frames))


def reverse_trajectory(pipeline, num_frames: int = 8, **call_kwargs) -> tuple[list[list[Image.Image]], list[int]]:
    """
    Sample with `pipeline(**call_kwargs)` and record x_t and the predicted x_0 at `num_frames` steps spread over the
    chain (the last one is the sample). Returns (rows, paper timesteps): for each image a row of x_t and a row of
    predicted x_0. The scheduler's step must report `pred_original_sample` (DDPMHubScheduler, DDIMScheduler do).
    """
    recorded: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(pipe, i, t, tensors):
        if tensors["pred_original_sample"] is None:
            raise ValueError(f"{type(pipe.scheduler).__name__} does not report the predicted x_0 of a step.")
        recorded[i] = (int(t), tensors["image"].clone(), tensors["pred_original_sample"].clone())
        return {}

    pipeline(
        **call_kwargs,
        output_type="pt",
        callback_on_step_end=record,
        callback_on_step_end_tensor_inputs=["image", "pred_original_sample"],
    )
    steps = sorted(recorded)
    chosen = sorted({steps[round(k)] for k in np.linspace(0, len(steps) - 1, num_frames)})
    timesteps = [recorded[i][0] + 1 for i in chosen]  # the step from paper time t to the one before it
    x_t = [to_pil(recorded[i][1]) for i in chosen]  # frames x images
    x_0 = [to_pil(recorded[i][2]) for i in chosen]
    rows = []
    for image in range(len(x_t[0])):
        rows += [[frame[image] for frame in x_t], [frame[image] for frame in x_0]]
    return rows, timesteps
