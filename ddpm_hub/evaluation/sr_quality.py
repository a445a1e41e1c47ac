"""How well a super-resolution model upsamples photographs it never saw, against bicubic upsampling: the table the
model card shows.

    ddpm-hub eval runs/ddpm-sr-16-to-64 --sr_quality --noise_levels 0,25,50,100 --steps 50 --samples_per_input 4

The photographs: scikit-image's `astronaut`, `chelsea`, `coffee` and `rocket` and matplotlib's `grace_hopper`
(`pip install 'ddpm-hub[bench]'`; never the two photographs of `builtin:photos`). Each gives up to `crops_per_photo`
64x64 crops on a regular grid at its own resolution; a crop's input is the crop box-downsampled by the model's scale
(as training makes inputs), rounded to 8 bits, given to the pipeline as a PIL image. For each noise level and number
of steps, `samples` samples per input (image i from seed + i, `ddpm_hub.pipelines.sampling`):

- PSNR and SSIM (`ssim`: Wang et al. 2004, computed here) of single samples and of the mean of the samples (the
  model's posterior mean) against the crop, and of bicubic upsampling of the same input (PIL's);
- consistency: a sample box-downsampled against its input, in dB;
- sharpness: the high-frequency energy of samples (x minus its 3x3 box blur, squared, averaged) over the crops'.
"""

import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import UsageError, writing
from ..pipelines.sampling import image_generator
from ..run_folder import SR_QUALITY_FILE, SR_QUALITY_JSON_FILE, check_finite

SCIKIT_IMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
SIZE = 64  # crops of SIZE x SIZE, the model's output; its input is SIZE / scale on a side
SSIM_SIGMA, SSIM_K1, SSIM_K2 = 1.5, 0.01, 0.03  # Wang et al. 2004: the Gaussian window and the stabilizing constants


def photographs() -> dict[str, np.ndarray]:
    """uint8 `[H x W x 3]` photographs that builtin:photos does not hold, by name."""
    try:
        import matplotlib.cbook
        import skimage.data
    except ImportError as error:
        raise UsageError(
            f"--sr_quality measures on scikit-image's and matplotlib's photographs, which are not importable here "
            f"({error}): pip install 'ddpm-hub[bench]'."
        ) from None
    photos = {name: getattr(skimage.data, name)() for name in SCIKIT_IMAGE_PHOTOS}
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as file:
        photos["grace_hopper"] = np.asarray(Image.open(file).convert("RGB"))
    return {name: image[..., :3] for name, image in photos.items()}


def crops(photos: dict[str, np.ndarray], per_photo: int) -> tuple[torch.Tensor, list[str]]:
    """uint8 `[N x 3 x 64 x 64]` crops on a regular grid of each photograph, and their names."""
    found, names = [], []
    for name, image in photos.items():
        rows, columns = image.shape[0] // SIZE, image.shape[1] // SIZE
        positions = [(r, c) for r in range(rows) for c in range(columns)]
        chosen = [positions[round(i)] for i in np.linspace(0, len(positions) - 1, per_photo)]
        for r, c in chosen:
            found.append(image[r * SIZE : (r + 1) * SIZE, c * SIZE : (c + 1) * SIZE].transpose(2, 0, 1))
            names.append(f"{name}[{r * SIZE}:{(r + 1) * SIZE}, {c * SIZE}:{(c + 1) * SIZE}]")
    return torch.from_numpy(np.stack(found)), names


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per image of `[N x C x H x W]`, in dB, for values in [0, 1]."""
    mse = ((x.double() - y.double()) ** 2).mean(dim=(1, 2, 3))
    return 10 * torch.log10(1 / mse.clamp(min=1e-12))


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    sigma: float = SSIM_SIGMA,
    k1: float = SSIM_K1,
    k2: float = SSIM_K2,
) -> torch.Tensor:
    """
    Structural similarity (Wang et al. 2004, eq. 13) per image of `[N x C x H x W]`, in float64:

        SSIM = (2 mu_x mu_y + C1) (2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1) (sigma_x^2 + sigma_y^2 + C2)),

    C1 = (k1 L)^2, C2 = (k2 L)^2 with L = `data_range`; the means, variances and covariance are weighted by a Gaussian
    window of `sigma` (11 taps for 1.5: radius int(3.5 sigma + 0.5)), population (co)variances; the map averaged
    over the positions where the window lies inside the image, and over the channels. The same number as
    scikit-image's `structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=L, channel_axis=...)`, without needing scikit-image.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise UsageError(
            f"SSIM compares images of one shape [N x C x H x W], got {list(x.shape)} and {list(y.shape)}."
        )
    radius = int(3.5 * sigma + 0.5)
    if min(x.shape[-2:]) < 2 * radius + 1:
        raise UsageError(f"SSIM's window is {2 * radius + 1} pixels wide; the images are {list(x.shape[-2:])}.")
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    window = torch.exp(-0.5 * (taps / sigma) ** 2)
    window = (window / window.sum()).to(x.device)
    channels = x.shape[1]

    def weighted_mean(z: torch.Tensor) -> torch.Tensor:  # separable Gaussian, valid positions only
        z = F.conv2d(z, window.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
        return F.conv2d(z, window.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)

    x, y = x.double(), y.double()
    mu_x, mu_y = weighted_mean(x), weighted_mean(y)
    var_x, var_y = weighted_mean(x * x) - mu_x**2, weighted_mean(y * y) - mu_y**2
    cov_xy = weighted_mean(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    similarity = (2 * mu_x * mu_y + c1) * (2 * cov_xy + c2) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return similarity.mean(dim=(1, 2, 3))


def high_frequency_energy(x: torch.Tensor) -> torch.Tensor:
    """Per image: mean of (x - 3x3 box blur of x)^2 (reflect padding)."""
    blurred = F.avg_pool2d(F.pad(x.double(), (1, 1, 1, 1), mode="reflect"), 3, stride=1)
    return ((x.double() - blurred) ** 2).mean(dim=(1, 2, 3))


def box_down(x: torch.Tensor, scale: int) -> torch.Tensor:
    return F.avg_pool2d(x.double(), scale)


@dataclass
class Inputs:
    """The crops, in [0, 1] `[N x 3 x 64 x 64]`, their 8-bit inputs (`low`, uint8, and `images`, PIL) and names."""

    truth: torch.Tensor
    low: torch.Tensor
    images: list[Image.Image]
    names: list[str]

    @classmethod
    def of(cls, photos: dict[str, np.ndarray], per_photo: int, scale: int) -> "Inputs":
        high, names = crops(photos, per_photo)
        truth = high.float() / 255
        low = (box_down(truth, scale) * 255).round().clamp(0, 255).to(torch.uint8)  # what a file holds
        return cls(truth, low, [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in low], names)

    def bicubic(self) -> torch.Tensor:
        """PIL's bicubic upsampling of every input to 64x64, in [0, 1]."""
        upsampled = [np.array(image.resize((SIZE, SIZE), Image.BICUBIC)) for image in self.images]
        return torch.stack([torch.from_numpy(image).permute(2, 0, 1) for image in upsampled]).float() / 255


def upscale(
    pipeline, inputs: list[Image.Image], level: int, steps: int, samples: int, batch_size: int, seed: int, **kwargs
) -> torch.Tensor:
    """`[N x samples x 3 x 64 x 64]` in [0, 1]: `samples` samples of every input, `batch_size` inputs per call."""
    results = []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size]
        images = [image for image in batch for _ in range(samples)]
        generator = [image_generator(seed, start * samples + i) for i in range(len(images))]
        output = pipeline(
            image=images, noise_level=level, num_inference_steps=steps, generator=generator, output_type="pt", **kwargs
        ).images
        results.append(output.reshape(len(batch), samples, *output.shape[1:]).cpu())
    return torch.cat(results)


def sr_quality(
    pipeline,
    photos: dict[str, np.ndarray],
    noise_levels: Sequence[int] = (0, 25, 50, 100),
    step_counts: Sequence[int] = (50,),
    samples: int = 4,
    crops_per_photo: int = 6,
    batch_size: int = 32,
    seed: int = 0,
    consistency: bool = False,
    per_crop: bool = False,
) -> tuple[list[dict], list[str]]:
    """
    One row per number of steps and noise level (the module docstring says what each number is), and the crops'
    names. `batch_size` inputs per pipeline call (`samples` images each); each row goes to stderr as it is done, with
    each crop's PSNRs and sharpness when `per_crop`.
    """
    inputs = Inputs.of(photos, crops_per_photo, pipeline.conditioning.low_res.scale)
    truth, bicubic = inputs.truth, inputs.bicubic()
    photo_energy = high_frequency_energy(truth).mean()
    rows = []
    for steps in step_counts:
        for level in noise_levels:
            started = time.perf_counter()
            drawn = upscale(pipeline, inputs.images, level, steps, samples, batch_size, seed, consistency=consistency)
            seconds = time.perf_counter() - started
            numbers = _row(drawn, inputs, bicubic, photo_energy)
            rows.append({"noise_level": level, "steps": steps, **numbers, "seconds": round(seconds, 1)})
            print(json.dumps(rows[-1]), file=sys.stderr)
            if per_crop:
                print_per_crop(inputs.names, drawn, truth, bicubic)
    return rows, inputs.names


def _row(drawn: torch.Tensor, inputs: Inputs, bicubic: torch.Tensor, photo_energy: torch.Tensor) -> dict:
    """The numbers of one table row from the samples `[N x K x 3 x 64 x 64]` of the inputs."""
    samples = drawn.shape[1]
    flat = drawn.flatten(0, 1)
    scale = inputs.truth.shape[-1] // inputs.low.shape[-1]
    repeated = inputs.truth.repeat_interleave(samples, dim=0)
    low = (inputs.low.float() / 255).repeat_interleave(samples, dim=0)
    consistency = 10 * torch.log10(1 / ((box_down(flat, scale) - low.double()) ** 2).mean().clamp(min=1e-12))
    return {
        "psnr_single": float(psnr(flat, repeated).mean()),
        "psnr_mean": float(psnr(drawn.mean(dim=1), inputs.truth).mean()),
        "psnr_bicubic": float(psnr(bicubic, inputs.truth).mean()),
        "ssim_single": float(ssim(flat, repeated).mean()),
        "ssim_mean": float(ssim(drawn.mean(dim=1), inputs.truth).mean()),
        "ssim_bicubic": float(ssim(bicubic, inputs.truth).mean()),
        "consistency_db": float(consistency),
        "sharpness": float(high_frequency_energy(flat).mean() / photo_energy),
        "sharpness_bicubic": float(high_frequency_energy(bicubic).mean() / photo_energy),
    }


def print_per_crop(names: list[str], samples: torch.Tensor, truth: torch.Tensor, bicubic: torch.Tensor) -> None:
    """Each crop's PSNR (mean of the samples, bicubic, the difference) and its samples' sharpness, to stderr."""
    mean, bicubic_psnr = psnr(samples.mean(dim=1), truth), psnr(bicubic, truth)
    energy = high_frequency_energy(samples.flatten(0, 1)).view(len(names), -1).mean(dim=1)
    sharpness = energy / high_frequency_energy(truth)
    for i, name in enumerate(names):
        print(
            f"  {name:32s} mean {mean[i]:6.2f} dB  bicubic {bicubic_psnr[i]:6.2f} dB  "
            f"({mean[i] - bicubic_psnr[i]:+6.2f})  sharpness {sharpness[i]:7.2f}",
            file=sys.stderr,
        )


def sr_quality_markdown(rows: list[dict], settings: dict) -> str:
    """The table of `sr_quality.md`: a row per noise level and number of steps, and what produced it."""
    lines = [
        f"| noise level | steps | PSNR, one sample | PSNR, mean of {settings['samples']} | PSNR, bicubic | SSIM, one "
        f"sample | SSIM, mean of {settings['samples']} | SSIM, bicubic | consistency | sharpness (samples / photos) | "
        "sharpness, bicubic |",
        "| ---: " * 11 + "|",
    ]
    for row in rows:
        lines.append(
            f"| {row['noise_level']} | {row['steps']} | {row['psnr_single']:.2f} dB | **{row['psnr_mean']:.2f} dB** "
            f"| {row['psnr_bicubic']:.2f} dB | {row['ssim_single']:.3f} | **{row['ssim_mean']:.3f}** | "
            f"{row['ssim_bicubic']:.3f} | {row['consistency_db']:.1f} dB | {row['sharpness']:.2f} | "
            f"{row['sharpness_bicubic']:.2f} |"
        )
    low = SIZE // settings.get("scale", 4)
    lines += [
        "",
        f"{settings['num_inputs']} crops of {SIZE}x{SIZE} from photographs the model never saw "
        f"({', '.join(settings['photos'])}), each box-downsampled to {low}x{low} as its input; PSNR and SSIM "
        "(Gaussian window, sigma 1.5) against the crop; consistency: a sample box-downsampled against its input; "
        "sharpness: high-frequency energy (x minus its 3x3 box blur) relative to the crops'. "
        f"Device: {settings['device']}. Produced by `{settings['command']}`.",
    ]
    return "\n".join(lines) + "\n"


def write_sr_quality(rows: list[dict], settings: dict, output_dir: str | os.PathLike) -> dict:
    """`sr_quality.md` and `sr_quality.json` in `output_dir`; returns their paths."""
    for row in rows:
        check_finite(row, f"the sr_quality row of noise level {row['noise_level']}, {row['steps']} steps")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    table, data = output_dir / SR_QUALITY_FILE, output_dir / SR_QUALITY_JSON_FILE
    with writing(table, "the super-resolution table"):
        table.write_text(sr_quality_markdown(rows, settings))
    with writing(data, "the super-resolution results", kept=f"{table} is written."):
        data.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n")
    return {"markdown": str(table), "json": str(data)}
