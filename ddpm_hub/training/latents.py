"""Training a DDPM on an autoencoder's latents (Rombach et al. 2022): `--vae NAME_OR_PATH`, or a trained latent
pipeline's own `vae/`. The autoencoder is frozen; the data stay pixels (decoded, cached, streamed as for any run) and
each micro-batch's images become latents z' = (z - shift) * scaling, z drawn from the posterior q(z | x) with a
generator of (seed, LATENT, m, rank), so a resumed run draws the same latents as an uninterrupted one.

A configuration works in latent space when its UNet takes the autoencoder's latent channels; its `sample_size` is the
latent grid, the training resolution (pixels) divided by the autoencoder's factor (4 for ddpm-vae-digits-64, 8 for
Stable Diffusion's).
"""

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..data.decode import image_size
from ..errors import UsageError
from ..loading.settings import LoadSettings
from ..pipelines.source import Source
from ..shipped.latents_ddpm_hub import encode, encode_posterior, posterior_latents
from .options import ModelOptions
from .randomness import HOLDOUT, LATENT, make_generator

AUTOENCODER_CLASSES = ("AutoencoderKL",)
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Autoencoder:
    """The autoencoder a run trains on: where it comes from and its config (read before any weights)."""

    name: str
    subfolder: str | None
    config: dict
    option: str  # how the user named it: "--vae" or "--pipeline"
    settings: LoadSettings = LoadSettings()  # --revision, --variant and --torch_dtype

    @property
    def factor(self) -> int:
        """Pixels per latent along a side: 2 ** (down blocks - 1)."""
        return 2 ** (len(self.config["block_out_channels"]) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.config["latent_channels"])

    @property
    def image_channels(self) -> int:
        return int(self.config["in_channels"])

    def load(self):
        """The autoencoder's weights (safetensors), frozen, in --torch_dtype (default float32) and eval mode."""
        from diffusers import AutoencoderKL

        name = f"{self.option} {self.name}{self.settings.described()}"
        try:
            vae = AutoencoderKL.from_pretrained(
                self.name, subfolder=self.subfolder, use_safetensors=True, **self.settings.from_pretrained()
            )
        except (OSError, ValueError) as error:
            raise UsageError(f"{name}: cannot load the autoencoder's weights: {error}") from error
        return vae.to(self.settings.dtype or torch.float32).eval().requires_grad_(False)


def autoencoder_of(model: ModelOptions, source: Source) -> Autoencoder | None:
    """
    The autoencoder of a run: `--vae` (a folder or Hub repo of a diffusers AutoencoderKL, or its `--vae_subfolder`),
    else a trained pipeline's own `vae/`; None for a pixel-space run. A configuration that names a `vae` component
    (a latent configuration: its vae/ holds the shape, not weights) needs `--vae`. Read at --revision, loaded as
    --variant in --torch_dtype.
    """
    vae, subfolder, settings = model.vae, model.vae_subfolder, model.loading(frozen=True)
    entry = source.components.get("vae") or [None, None]
    if vae is None:
        if entry[0] is None:
            return None
        if not source.trained:
            raise UsageError(
                f"--pipeline {source.name} is a latent configuration: its UNet works on an autoencoder's latents. "
                "Pass the autoencoder with --vae: a folder trained here (runs/ddpm-vae-digits-64), or a diffusers "
                "AutoencoderKL on the Hub (stabilityai/sd-vae-ft-mse)."
            )
        config = _read_config(source.location, "vae", "--pipeline", settings.revision)
        return Autoencoder(source.location, "vae", config, "--pipeline", settings)
    return Autoencoder(vae, subfolder, _read_config(vae, subfolder, "--vae", settings.revision), "--vae", settings)


@functools.lru_cache(maxsize=8)  # the checks, the model and the data each ask: one read (a Hub request) per run
def _read_config(name: str, subfolder: str | None, option: str, revision: str | None = None) -> dict:
    from diffusers import AutoencoderKL

    where = f"{option} {name}" + (f" (subfolder {subfolder})" if subfolder else "")
    where += f" (revision {revision})" if revision else ""
    try:
        config = AutoencoderKL.load_config(name, subfolder=subfolder, revision=revision)
    except (OSError, ValueError) as error:
        local = "" if Path(name).exists() else f"there is no folder {name} here, and as a Hub repo: "
        raise UsageError(
            f"{where}: no autoencoder configuration found ({local}{error}); expected a diffusers AutoencoderKL folder "
            "(one trained by training/configs/ddpm-vae-digits-64.yaml) or Hub repo (config.json and safetensors "
            "weights), or --vae_subfolder for one inside a pipeline repo."
        ) from error
    if config.get("_class_name") not in AUTOENCODER_CLASSES:
        raise UsageError(
            f"{where}: its config.json is a {config.get('_class_name')!r}, not one of "
            f"{', '.join(AUTOENCODER_CLASSES)}."
        )
    return dict(config)


def check_autoencoder(autoencoder: Autoencoder, source: Source, training_size) -> None:
    """The UNet takes the latent channels, the resolution is a whole number of latents, no low-resolution kind."""
    conditioning = source.conditioning()
    wanted = conditioning.image_channels(source.unet_config["in_channels"])
    name = f"{autoencoder.option} {autoencoder.name}"
    if wanted != autoencoder.latent_channels:
        raise UsageError(
            f"{name} has {autoencoder.latent_channels} latent channels and the UNet of --pipeline {source.name} takes "
            f"{wanted}: use a configuration whose UNet takes the autoencoder's latents (ddpm-latent-digits-64 for "
            "ddpm-vae-digits-64's four)."
        )
    if conditioning.low_res is not None:
        raise UsageError(f"{name}: super-resolution models train in pixels here; leave out --vae.")
    if any(side % autoencoder.factor for side in image_size(training_size)):
        raise UsageError(
            f"--resolution {training_size} is not a whole number of latents: {name} makes one latent of every "
            f"{autoencoder.factor}x{autoencoder.factor} pixels."
        )


def latent_size(training_size, autoencoder: Autoencoder | None):
    """The UNet's grid for a training resolution: the pixels, or the latents they encode to."""
    if autoencoder is None:
        return training_size
    height, width = image_size(training_size)
    return (height // autoencoder.factor, width // autoencoder.factor)


def pixel_size(sample_size, autoencoder: Autoencoder | None):
    """The default training resolution of a UNet `sample_size`: itself, or the pixels its latents decode to."""
    if autoencoder is None:
        return sample_size
    height, width = image_size(sample_size)
    return [height * autoencoder.factor, width * autoencoder.factor]


def training_latents(vae, x_0: torch.Tensor, seed: int, m: int, rank: int, posteriors: bool = False) -> torch.Tensor:
    """
    z' of micro-batch m: one draw from each image's posterior, from (seed, LATENT, m, rank); `x_0` is pixels (encoded
    here: a stream, or a dataset in RAM), or with `posteriors` their cached posteriors (`PosteriorImages`).
    """
    if posteriors:
        return draw_latents(vae, x_0, seed, m, rank)
    generator = make_generator(seed, LATENT, m, rank, device=x_0.device)
    with torch.no_grad():
        return encode(vae, x_0, generator=generator, sample=True)


def holdout_latents(vae, x_0: torch.Tensor, seed: int) -> torch.Tensor:
    """z' of the held-out images, one fixed draw each (comparable from step to step)."""
    generator = make_generator(seed, HOLDOUT, 3, device=x_0.device)
    with torch.no_grad():
        return encode(vae, x_0, generator=generator, sample=True)


# ----------------------------------------------------------------------------------------------------------------
# The posteriors of a decoded dataset, encoded once per machine and cached next to its pixels

POSTERIORS_DIR = "posteriors"  # inside a decoded cache folder: <vae weights sha256[:16]>.npy, float32 [N x 2c x h x w]
ENCODE_BATCH = 64


class PosteriorImages:
    """
    The training images as their posteriors q(z | x): `get_batch(indices, generator)` gives float32
    [B x 2c x h x w], the mean and the log-variance of each image's latent, flipped left-right with the images'
    rule (`torch.rand(B, generator) < 0.5`, the same draws as the pixels would get), ready for `draw_latents`.
    """

    def __init__(self, posteriors: torch.Tensor, random_flip: bool, indices: torch.Tensor | None = None):
        self.posteriors, self.random_flip, self.indices = posteriors, random_flip, indices

    def __len__(self) -> int:
        return len(self.posteriors) if self.indices is None else len(self.indices)

    def get_batch(self, indices: list[int], generator: torch.Generator | None = None) -> torch.Tensor:
        rows = torch.as_tensor(indices) if self.indices is None else self.indices[indices]
        batch = self.posteriors[rows].clone()
        if self.random_flip:
            flip = torch.rand(len(rows), generator=generator) < 0.5
            batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
        return batch


def cached_posteriors(vae, images: torch.Tensor, file: Path, accelerator) -> torch.Tensor:
    """
    (mean, logvar) of every image of a decoded cache `file` ([N x 2c x h x w]), keyed by the autoencoder's weights:
    read from `posteriors/<sha256>.npy` beside the file, or encoded by each machine's main process (written whole,
    then renamed) while the other processes wait. Another autoencoder has another file.
    """
    import numpy as np
    from tqdm.auto import tqdm

    from ..data import to_model_range
    from ..loading.configs import weights_checksum

    path = Path(file).parent / POSTERIORS_DIR / f"{weights_checksum(vae)[:16]}.npy"
    with accelerator.local_main_process_first():
        if not path.is_file():
            path.parent.mkdir(exist_ok=True)
            means = []
            with torch.no_grad():
                for start in tqdm(range(0, len(images), ENCODE_BATCH), desc="encode posteriors", unit="batch"):
                    x = to_model_range(images[start : start + ENCODE_BATCH]).to(vae.device)
                    mean, logvar = encode_posterior(vae, x)
                    means.append(torch.cat([mean, logvar], dim=1).cpu())
            partial = path.with_suffix(f".{os.getpid()}.partial")
            with open(partial, "wb") as handle:
                np.save(handle, torch.cat(means).numpy())
            os.replace(partial, path)
            logger.info("Encoded %d images into their posteriors, cached in %s", len(images), path)
    return torch.from_numpy(np.load(path, mmap_mode="r").copy())


def draw_latents(vae, batch: torch.Tensor, seed: int, m: int, rank: int) -> torch.Tensor:
    """z' of micro-batch m from its cached posteriors `[B x 2c x h x w]`: the noise of (seed, LATENT, m, rank)."""
    mean, logvar = batch.chunk(2, dim=1)
    generator = make_generator(seed, LATENT, m, rank, device=batch.device)
    noise = randn_tensor(mean.shape, generator=generator, device=batch.device, dtype=mean.dtype)
    return posterior_latents(mean, logvar, vae, noise)
