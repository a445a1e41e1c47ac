"""The latent space of an autoencoder (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion
Models"): where a latent DDPM's chain runs, and the maps between it and pixels.

A diffusers `AutoencoderKL` encodes an image x in [-1, 1] into a diagonal Gaussian posterior q(z | x); the DDPM works
on z' = (z - shift_factor) * scaling_factor, scaled so that its entries have about unit variance as the forward process
assumes (`scaling_factor` is 1 / std of the latents over the training data; `shift_factor` their mean, where the VAE's
config sets one, as in Stable Diffusion 3 and FLUX). The decoder maps z = z' / scaling_factor + shift_factor back to
pixels. Shipped with every pipeline; torch and diffusers only.
"""

import torch
from diffusers import AutoencoderKL  # noqa: F401 - the class a latent pipeline's `vae` is
from diffusers.utils.torch_utils import randn_tensor


def vae_scale_factor(vae) -> int:
    """How many pixels a latent stands for along each side: 2 ** (number of the encoder's down blocks - 1)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def latent_factors(vae) -> tuple[float, float]:
    """(scaling_factor, shift_factor) of the VAE's config: (1, 0) where it sets none."""
    scaling = getattr(vae.config, "scaling_factor", None)
    shift = getattr(vae.config, "shift_factor", None)
    return (1.0 if scaling is None else float(scaling)), (0.0 if shift is None else float(shift))


def posterior_latents(mean: torch.Tensor, logvar: torch.Tensor, vae, noise: torch.Tensor | None = None):
    """z' of a posterior N(mean, exp(logvar)): its mean when `noise` is None, else mean + std * noise; scaled."""
    scaling, shift = latent_factors(vae)
    z = mean if noise is None else mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * noise
    return (z - shift) * scaling


def encode_posterior(vae, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, logvar) of q(z | x) for images in [-1, 1] `[N x C x H x W]`, in float32."""
    dist = vae.encode(images.to(device=vae.device, dtype=vae.dtype)).latent_dist
    return dist.mean.float(), dist.logvar.float()


def encode(vae, images: torch.Tensor, generator: torch.Generator | list | None = None, sample: bool = False):
    """
    z' of images in [-1, 1]: the posterior's mean (deterministic, what image-to-image and inpainting start from), or a
    draw from it with `sample` (what training sees), from `generator` (one per image when a list).
    """
    mean, logvar = encode_posterior(vae, images)
    noise = randn_tensor(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype) if sample else None
    return posterior_latents(mean, logvar, vae, noise)


def decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """Pixels in [-1, 1] (not clamped) of z' `[N x c x h x w]`: the decoder of z' / scaling_factor + shift_factor."""
    scaling, shift = latent_factors(vae)
    z = latents.to(device=vae.device, dtype=vae.dtype) / scaling + shift
    return vae.decode(z).sample.float()


def image_size(vae, latent_size: tuple[int, int]) -> tuple[int, int]:
    """The pixel size (height, width) of a latent grid."""
    factor = vae_scale_factor(vae)
    return latent_size[0] * factor, latent_size[1] * factor


def latent_mask(mask: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """
    A pixel mask `[N x 1 x H x W]` (1: keep) on the latent grid: a latent is kept only where every pixel it stands
    for is kept (min-pooling), so that a generated region never shrinks under the encoder's receptive field.
    """
    factor_h, factor_w = mask.shape[-2] // latent_size[0], mask.shape[-1] // latent_size[1]
    return -torch.nn.functional.max_pool2d(-mask.float(), kernel_size=(factor_h, factor_w))
