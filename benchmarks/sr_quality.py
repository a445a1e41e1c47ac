"""
How well a 4x super-resolution model upsamples photographs it never saw, against bicubic upsampling. Not a test.

    python benchmarks/sr_quality.py runs/ddpm-sr-16-to-64 --noise_levels 0,25,50,100 --steps 50 --samples 4

The photographs: scikit-image's `astronaut`, `chelsea`, `coffee` and `rocket` and matplotlib's `grace_hopper`
(`pip install scikit-image`, the `bench` extra; never the two photographs of `builtin:photos`). Each gives up to
`--crops_per_photo` 64x64 crops on a regular grid at its own resolution; a crop's input is the crop box-downsampled
by 4 (as training makes inputs), rounded to 8 bits, given to the pipeline as a PIL image. For each noise level and
number of steps, `--samples` samples per input (image i from seed + i, `ddpm_hub.pipelines.sampling`):

- PSNR of single samples and of the mean of the samples (the model's posterior mean) against the crop, and of
  bicubic upsampling of the same input (PIL's);
- consistency: a sample box-downsampled by 4 against its input, in dB;
- sharpness: the high-frequency energy of samples (x minus its 3x3 box blur, squared, averaged) over the crops'.

Prints one JSON line; writes sr_quality.md (the table the model card includes) and sr_quality.json into --output_dir
(default: the model folder).
"""

import argparse
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

if importlib.util.find_spec("ddpm_hub") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ddpm_hub import DDPMHubSuperResolutionPipeline
from ddpm_hub.pipelines.sampling import image_generator
from ddpm_hub.run_folder import SR_QUALITY_FILE

SCIKIT_IMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
SIZE, SCALE = 64, 4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a trained 4x super-resolution pipeline (folder or Hub repo id)")
    parser.add_argument("--noise_levels", default="0,25,50,100", help="comma separated (default: %(default)s)")
    parser.add_argument("--steps", default="50", help="sampling steps, comma separated (default: %(default)s)")
    parser.add_argument("--samples", type=int, default=4, help="samples per input (default: %(default)s)")
    parser.add_argument("--crops_per_photo", type=int, default=6, help="64x64 crops per photograph (default: 6)")
    parser.add_argument("--batch_size", type=int, default=32, help="inputs per pipeline call (default: 32)")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    parser.add_argument("--output_dir", default=None, help="where the table goes (default: the model folder)")
    parser.add_argument(
        "--consistency", action="store_true", help="sample with the consistency projection (consistency=True)"
    )
    parser.add_argument(
        "--per_crop", action="store_true", help="also print, per crop, its PSNRs and sharpness (to stderr)"
    )
    args = parser.parse_args(argv)
    args.levels = [int(level) for level in args.noise_levels.split(",")]
    args.step_counts = [int(steps) for steps in args.steps.split(",")]
    return args


def photographs() -> dict[str, np.ndarray]:
    """uint8 [H x W x 3] photographs that builtin:photos does not hold."""
    try:
        import skimage.data
    except ImportError:
        raise SystemExit("sr_quality needs scikit-image's photographs: pip install -e '.[bench]'") from None
    import matplotlib.cbook

    photos = {name: getattr(skimage.data, name)() for name in SCIKIT_IMAGE_PHOTOS}
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as file:
        photos["grace_hopper"] = np.asarray(Image.open(file).convert("RGB"))
    return {name: image[..., :3] for name, image in photos.items()}


def crops(photos: dict[str, np.ndarray], per_photo: int) -> tuple[torch.Tensor, list[str]]:
    """uint8 [N x 3 x 64 x 64] crops on a regular grid of each photograph, and their names."""
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
    """Per image, in dB, for values in [0, 1]."""
    mse = ((x.double() - y.double()) ** 2).mean(dim=(1, 2, 3))
    return 10 * torch.log10(1 / mse.clamp(min=1e-12))


def high_frequency_energy(x: torch.Tensor) -> torch.Tensor:
    """Per image: mean of (x - 3x3 box blur of x)^2 (reflect padding)."""
    blurred = F.avg_pool2d(F.pad(x.double(), (1, 1, 1, 1), mode="reflect"), 3, stride=1)
    return ((x.double() - blurred) ** 2).mean(dim=(1, 2, 3))


def box_down(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x.double(), SCALE)


def upscale(pipeline, inputs: list[Image.Image], level: int, steps: int, args) -> torch.Tensor:
    """[N x samples x 3 x 64 x 64] in [0, 1]: `args.samples` samples of every input."""
    per_input = args.samples
    results = []
    for start in range(0, len(inputs), args.batch_size):
        batch = inputs[start : start + args.batch_size]
        images = [image for image in batch for _ in range(per_input)]
        first = (start) * per_input
        generator = [image_generator(args.seed, first + i) for i in range(len(images))]
        output = pipeline(
            image=images,
            noise_level=level,
            num_inference_steps=steps,
            generator=generator,
            output_type="pt",
            consistency=args.consistency,
        ).images
        results.append(output.reshape(len(batch), per_input, *output.shape[1:]).cpu())
    return torch.cat(results)


def per_crop(names: list[str], samples: torch.Tensor, truth: torch.Tensor, bicubic: torch.Tensor) -> None:
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


def markdown(rows: list[dict], settings: dict) -> str:
    lines = [
        "| noise level | steps | PSNR, one sample | PSNR, mean of "
        f"{settings['samples']} | PSNR, bicubic | consistency | sharpness (samples / photos) | sharpness, bicubic |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['noise_level']} | {row['steps']} | {row['psnr_single']:.2f} dB | **{row['psnr_mean']:.2f} dB** "
            f"| {row['psnr_bicubic']:.2f} dB | {row['consistency_db']:.1f} dB | {row['sharpness']:.2f} | "
            f"{row['sharpness_bicubic']:.2f} |"
        )
    lines += [
        "",
        f"{settings['num_inputs']} crops of 64x64 from photographs the model never saw "
        f"({', '.join(settings['photos'])}), each box-downsampled to 16x16 as its input; PSNR against the crop; "
        "consistency: a sample box-downsampled against its input; sharpness: high-frequency energy (x minus its "
        "3x3 box blur) relative to the crops'. "
        f"Device: {settings['device']}. Produced by `{settings['command']}`.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    pipeline = DDPMHubSuperResolutionPipeline.from_pretrained(args.model)
    pipeline.set_progress_bar_config(disable=True)
    photos = photographs()
    high, names = crops(photos, args.crops_per_photo)
    truth = high.float() / 255
    low = (box_down(truth) * 255).round().clamp(0, 255).to(torch.uint8)  # the inputs, as 8-bit images
    inputs = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in low]
    bicubic = (
        torch.stack(
            [
                torch.from_numpy(np.asarray(image.resize((SIZE, SIZE), Image.BICUBIC))).permute(2, 0, 1)
                for image in inputs
            ]
        ).float()
        / 255
    )
    photo_energy = high_frequency_energy(truth).mean()
    rows = []
    for steps in args.step_counts:
        for level in args.levels:
            started = time.perf_counter()
            samples = upscale(pipeline, inputs, level, steps, args)  # [N x K x 3 x 64 x 64]
            seconds = time.perf_counter() - started
            flat = samples.flatten(0, 1)
            repeated = truth.repeat_interleave(args.samples, dim=0)
            low_float = (low.float() / 255).repeat_interleave(args.samples, dim=0)
            consistency = 10 * torch.log10(1 / ((box_down(flat) - low_float.double()) ** 2).mean().clamp(min=1e-12))
            rows.append(
                {
                    "noise_level": level,
                    "steps": steps,
                    "psnr_single": float(psnr(flat, repeated).mean()),
                    "psnr_mean": float(psnr(samples.mean(dim=1), truth).mean()),
                    "psnr_bicubic": float(psnr(bicubic, truth).mean()),
                    "consistency_db": float(consistency),
                    "sharpness": float(high_frequency_energy(flat).mean() / photo_energy),
                    "sharpness_bicubic": float(high_frequency_energy(bicubic).mean() / photo_energy),
                    "seconds": round(seconds, 1),
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr)
            if args.per_crop:
                per_crop(names, samples, truth, bicubic)
    device = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    command = (
        f"python benchmarks/sr_quality.py {args.model} --noise_levels {args.noise_levels} --steps {args.steps} "
        f"--samples {args.samples} --crops_per_photo {args.crops_per_photo} --seed {args.seed}"
        + (" --consistency" if args.consistency else "")
    )
    settings = {
        "model": args.model,
        "samples": args.samples,
        "num_inputs": len(inputs),
        "photos": list(photos),
        "crops": names,
        "device": device,
        "command": command,
    }
    output_dir = Path(args.output_dir or args.model)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / SR_QUALITY_FILE).write_text(markdown(rows, settings))
    (output_dir / "sr_quality.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n")
    result = {"rows": rows, **{k: v for k, v in settings.items() if k != "crops"}}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
