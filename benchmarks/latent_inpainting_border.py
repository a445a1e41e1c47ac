"""
What latent inpainting loses against pixel inpainting at the mask border: the PSNR of the *known* pixels of held-out
digits, within `--border` pixels of the mask's edge and farther from it, after

- the autoencoder's round trip, decode(encode(x)): what any latent model pays everywhere, a floor;
- latent inpainting: the known latents kept (a latent is known only where all its pixels are), the others drawn,
  all decoded. Drawn by RePaint with `--model` (a latent pipeline trained on `--vae`), else replaced by the latents
  of another held-out digit: a stand-in for a model that draws a plausible digit there, which isolates what the
  decoder carries across the edge from the region it redraws;
- pixel inpainting (RePaint in pixels) re-imposes the known pixels at every step: exact by construction
  (tests/test_control.py), so no row.

Two masks: the right part from the middle column (an edge on the latent grid) and from two columns further (inside a
latent: the known pixels of the cut latents are redrawn outright). Not a test; prints a Markdown table and one JSON
line.

    python benchmarks/latent_inpainting_border.py                                   # a tiny VAE trained here, ~1 min
    python benchmarks/latent_inpainting_border.py --vae runs/ddpm-vae-digits-64 --model runs/ddpm-latent-digits-64

Without `--vae`, an AutoencoderKL with f = 4 and 4 latent channels (16x16 digits, 4x4x4 latents) is trained on the
other digits for `--steps` steps (L1 plus a 1e-6 KL, as ddpm-vae-digits-64), seeded.
"""

import argparse
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import torch

if importlib.util.find_spec("ddpm_hub") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffusers import AutoencoderKL

from ddpm_hub import DDPMHubInpaintPipeline, Source
from ddpm_hub.data import load_image_tensor
from ddpm_hub.evaluation.digit_classifier import digit_split
from ddpm_hub.shipped.latents_ddpm_hub import decode, encode, latent_mask, vae_scale_factor


def tiny_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=16,
        mid_block_add_attention=False,
    )


def train_vae(images: torch.Tensor, steps: int, seed: int = 0) -> AutoencoderKL:
    """The tiny VAE on images in [-1, 1]: L1 per pixel + 1e-6 KL per pixel, Adam 2e-3 with a cosine decay, batch 32."""
    torch.manual_seed(seed)
    vae = tiny_vae().train()
    optimizer = torch.optim.Adam(vae.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = images[torch.randint(0, len(images), (32,), generator=generator)]
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        loss = (vae.decode(z).sample - x).abs().mean() + 1e-6 * posterior.kl().mean() / x[0].numel()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    vae.eval().requires_grad_(False)
    with torch.no_grad():  # CompVis' scale_by_std: latents of about unit variance, as a DDPM on them would see
        mean = vae.encode(images[:512]).latent_dist.mean
    vae.register_to_config(scaling_factor=float(1 / mean.std()))
    return vae


def psnr(a: torch.Tensor, b: torch.Tensor, where: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1] over the pixels `where` is True, all images together."""
    mse = float(((a - b) ** 2)[where.expand_as(a)].mean())
    return 10 * math.log10(1 / mse) if mse > 0 else math.inf


def bands(size: int, start: int, border: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(known pixels within `border` columns of the edge at `start`, known pixels farther), `[1 x 1 x size x size]`."""
    columns = torch.arange(size).view(1, 1, 1, size).expand(1, 1, size, size)
    known = columns < start
    return known & (columns >= start - border), known & (columns < start - border)


def inpaint_latents(images, mask, z_0, keep, pipeline, args) -> torch.Tensor:
    """
    The latents of the completed images (`images` in [0, 1], `mask` 1 = generate): RePaint with the model (which
    encodes the images to `z_0` and keeps the latents `keep` itself), or the known latents beside another digit's.
    """
    if pipeline is None:
        return torch.where(keep, z_0, z_0.roll(1, dims=0))
    generator = [torch.Generator().manual_seed(args.seed + i) for i in range(len(z_0))]
    return pipeline(list(images), mask, num_inference_steps=args.num_inference_steps, jump_length=10,
                    jump_n_sample=args.jump_n_sample, generator=generator, output_type="latent").images  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae", help="an AutoencoderKL folder (default: train a tiny one here)")
    parser.add_argument("--model", help="a latent pipeline on that VAE: RePaint draws the unknown latents")
    parser.add_argument("--steps", type=int, default=600, help="training steps of the tiny VAE (default: 600)")
    parser.add_argument("--num_images", type=int, default=128, help="held-out digits (default: 128)")
    parser.add_argument("--border", type=int, default=4, help="the band of known pixels, in pixels (default: 4)")
    parser.add_argument("--num_inference_steps", type=int, default=100)
    parser.add_argument("--jump_n_sample", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1: faster here)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    pipeline = DDPMHubInpaintPipeline.from_pipe(Source.of(args.model).load()) if args.model else None
    vae = pipeline.vae if pipeline is not None else (AutoencoderKL.from_pretrained(args.vae) if args.vae else None)
    size = vae.config.sample_size if vae is not None else 16
    images, _ = load_image_tensor("builtin:digits", resolution=size, channels=1)
    x = images.float() / 127.5 - 1  # [N x 1 x size x size] in [-1, 1]
    train, held_out = digit_split(len(x), args.num_images, args.seed)
    vae = (vae or train_vae(x[train], args.steps, args.seed)).eval().requires_grad_(False)
    if pipeline is not None:
        pipeline.set_progress_bar_config(disable=True)
    factor = vae_scale_factor(vae)
    x = x[held_out]
    with torch.no_grad():
        z_0 = encode(vae, x)  # the posterior's mean, scaled: what image-to-image and inpainting start from
        target = (x / 2 + 0.5).clamp(0, 1)
        round_trip = (decode(vae, z_0) / 2 + 0.5).clamp(0, 1)
        rows = []
        for start in (size // 2, size // 2 + factor // 2):
            keep_pixels = (torch.arange(size) < start).view(1, 1, 1, size).expand(len(x), 1, size, size).float()
            keep = latent_mask(keep_pixels, tuple(z_0.shape[-2:])) > 0.5  # [N x 1 x h x w]
            latents = inpaint_latents(target, 1 - keep_pixels, z_0, keep, pipeline, args)
            inpainted = (decode(vae, latents) / 2 + 0.5).clamp(0, 1)
            near, far = bands(size, start, args.border)
            kept = torch.nn.functional.interpolate(keep[:1].float(), scale_factor=factor).bool()  # latents kept
            redrawn = int((keep_pixels[:1].bool() & ~kept).sum())  # known pixels in an unknown latent
            edge = "on the latent grid" if start % factor == 0 else "inside a latent"
            rows.append({
                "edge": f"column {start} ({edge})", "known_pixels_redrawn_per_image": redrawn,
                "round_trip_near_db": psnr(round_trip, target, near),
                "round_trip_far_db": psnr(round_trip, target, far),
                "latent_near_db": psnr(inpainted, target, near), "latent_far_db": psnr(inpainted, target, far),
            })  # fmt: skip
    how = f"RePaint with {args.model}" if args.model else "another digit's latents beside the known ones"
    trained_here = not (args.vae or args.model)
    which = f"trained here, {args.steps} steps" if trained_here else args.vae or f"{args.model}'s"
    whole = psnr(round_trip, target, torch.ones_like(target, dtype=torch.bool))
    print(f"{len(x)} held-out digits at {size}x{size}, VAE f = {factor} ({which}; round trip {whole:.1f} dB over all "
          f"pixels), unknown latents: {how}; PSNR of the known pixels within {args.border} px of the edge / "
          "farther:\n")  # fmt: skip
    print("| mask edge | known pixels redrawn | VAE round trip | latent inpainting | pixel inpainting |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['edge']} | {row['known_pixels_redrawn_per_image']} per image "
              f"| {row['round_trip_near_db']:.1f} / {row['round_trip_far_db']:.1f} dB "
              f"| {row['latent_near_db']:.1f} / {row['latent_far_db']:.1f} dB | exact |")  # fmt: skip
    settings = {"vae": args.vae, "model": args.model, "vae_steps": args.steps if trained_here else None}
    settings.update(size=size, factor=factor, border=args.border, round_trip_db=whole)
    print(json.dumps({"rows": rows, **settings, "seconds": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()
