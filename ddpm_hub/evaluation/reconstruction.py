"""How well an autoencoder gives images back: PSNR of 8-bit reconstructions, and, on the built-in digits, the distance
of reconstructions to the data in the digit classifier's features divided by the floor (`metrics.Reference`).

The second number is a ceiling for a latent model: its samples are decoded by the same decoder, so they can come no
closer to the data than the decoder's reconstructions of real images do. Images are compared as the issue asks:
reduced to 16x16 with an area filter (the digit classifier's resolution), then 8 bits.

    python benchmarks/vae_reconstruction.py runs/ddpm-vae-digits-64
"""

import math

import torch

from ..data.tensors import from_model_range, to_model_range
from ..shipped.latents_ddpm_hub import decode, encode

FEATURE_RESOLUTION = 16  # the digit classifier's input size


@torch.no_grad()
def reconstruct(vae, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """uint8 images `[N x C x H x W]` through the posterior's mean and the decoder, back to uint8."""
    out = []
    for start in range(0, len(images), batch_size):
        x = to_model_range(images[start : start + batch_size]).to(vae.device)
        out.append(from_model_range(decode(vae, encode(vae, x)).cpu()))
    return torch.cat(out)


def psnr(original: torch.Tensor, reconstructed: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each uint8 image `[N x C x H x W]`: 10 log10(255^2 / MSE); [N] (inf where identical)."""
    error = (original.double() - reconstructed.double()).pow(2).flatten(1).mean(dim=1)
    return 10 * torch.log10(255.0**2 / error)


def psnr_summary(original: torch.Tensor, reconstructed: torch.Tensor) -> dict:
    """The mean PSNR over images (identical images counted at 100 dB) and its worst image."""
    values = psnr(original, reconstructed).clamp(max=100.0)
    return {
        "psnr_db": round(float(values.mean()), 3),
        "psnr_db_min": round(float(values.min()), 3),
        "num_images": len(values),
    }


def area_reduced(images: torch.Tensor, size: int = FEATURE_RESOLUTION) -> torch.Tensor:
    """uint8 images reduced to `size` x `size` with an area filter (the mean of each block), back to uint8."""
    reduced = torch.nn.functional.interpolate(images.float(), size=(size, size), mode="area")
    return reduced.round().clamp(0, 255).to(torch.uint8)


def digit_reconstruction_quality(vae, images: torch.Tensor, seed: int = 0, kid_subset_size: int = 500) -> dict:
    """
    The reconstructions' distance to the digits in the digit classifier's features, and its ratio to the floor.
    `images`: every digit (uint8, the VAE's resolution). The digits are split in halves (`metrics.reference_split`):
    the reference half, and the other half, whose real images give the floor and whose reconstructions give the
    distance (n = half the digits in both). A ratio of 1.0 means the decoder loses nothing the features see.
    """
    from .metrics import extract_features, features_for, reference_split, sample_quality

    features = features_for("digits", "builtin:digits")
    real = extract_features(area_reduced(images), features.extract)
    rebuilt = extract_features(area_reduced(reconstruct(vae, images)), features.extract)
    reference, rebuilt_half = reference_split(real, seed), reference_split(rebuilt, seed).held_out
    subset = min(kid_subset_size, len(rebuilt_half))
    floor = reference.floor(len(rebuilt_half), subset, seed, features.standardize_kernel)
    quality = sample_quality(rebuilt_half, reference.features, subset, seed, features.standardize_kernel)
    return {
        "fd_digits": quality["fid"],
        "fd_digits_floor": floor["fid"],
        "fd_digits_ratio": quality["fid"] / floor["fid"] if floor["fid"] > 0 else math.nan,
        "num_images": len(rebuilt_half),
        "resolution": FEATURE_RESOLUTION,
        "features": features.description,
    }
