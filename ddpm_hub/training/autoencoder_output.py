"""An autoencoder run's checkpoints (saved atomically, resumed exactly) and its end: the scaling factor measured on the
training images and written into `config.json`, the weights (the EMA when on) as an `AutoencoderKL` folder,
`reconstructions.png` and `training_summary.json` (`ddpm_hub.training.autoencoder`).

The scaling factor is 1 / std of the latents a latent DDPM trains on: draws z = mean + sigma * eps from each training
image's posterior. Their variance over every latent entry is Var(mean) + E[sigma^2], computed exactly (no draw), as
CompVis' `scale_by_std` estimates it from one batch of draws.
"""

from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate.logging import get_logger
from accelerate.utils import gather_object

from ..data.tensors import to_model_range
from ..evaluation.reconstruction import psnr_summary, reconstruct
from ..loading.configs import weights_checksum
from ..pictures import make_grid, to_pil_images
from ..run_folder import SUMMARY_FILE, write_json
from ..shipped.latents_ddpm_hub import encode_posterior
from .autoencoder import AutoencoderRun
from .batches import center_crops
from .component_checkpoints import check_component_weights, resume_component, save_component_checkpoint
from .loop import TrainingResult
from .output import run_summary

logger = get_logger(__name__, log_level="INFO")

EMA_FOLDER = "ema_vae"
RECONSTRUCTIONS_FILE = "reconstructions.png"
GRID_COLUMNS = 8
SCALING_IMAGES = 10_000  # the scaling factor is measured on at most this many training images


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints


def autoencoder_record(run: AutoencoderRun) -> dict:
    """What the weights are a model of: the autoencoder's configuration and the objective's options."""
    config = {key: value for key, value in dict(run.vae.config).items() if not key.startswith("_")}
    return {"autoencoder": config, "objective": asdict(run.options.autoencoder)}


def check_finite_weights(run: AutoencoderRun, step: int) -> None:
    """The weights (and the EMA) are finite; otherwise stop before anything is saved over good state."""
    check_component_weights(run, run.vae, step)


def save_autoencoder_checkpoint(run: AutoencoderRun, step: int) -> Path:
    """Accelerate's state + the EMA + `training_state.json`, written under a temporary name and renamed complete."""
    return save_component_checkpoint(run, run.vae, autoencoder_record(run), step, EMA_FOLDER)


def resume_autoencoder(run: AutoencoderRun) -> int:
    """Load the checkpoint --resume_from_checkpoint names, if any, after checking it; returns its step (0: none)."""
    return resume_component(run, autoencoder_record(run), "autoencoder", "autoencoder and objective", EMA_FOLDER)


# ----------------------------------------------------------------------------------------------------------------
# Measures and the end


def training_batches(run: AutoencoderRun, batch_size: int = 128) -> Iterator[torch.Tensor]:
    """
    The training rows of the decoded dataset (uint8), cropped to the training size, in batches: the first
    `SCALING_IMAGES` of them (all of a small dataset; a large one's memory-mapped rows are never all copied).
    """
    dataset = run.dataset
    rows = torch.arange(len(dataset.images)) if dataset.indices is None else dataset.indices
    for batch in rows[:SCALING_IMAGES].split(batch_size):
        yield center_crops(dataset.images[batch], run.options.data.random_crop)


def check_images(run: AutoencoderRun) -> tuple[torch.Tensor, str]:
    """The images reconstructions are measured on: the held-out ones, else the first training images."""
    if run.dataset.holdout is not None:
        return run.dataset.holdout, "held-out"
    return next(training_batches(run, run.options.validation.num_validation_images)), "training"


@torch.no_grad()
def measure_scaling_factor(vae, batches: Iterable[torch.Tensor]) -> dict:
    """
    1 / std of the posterior draws z over every image of `batches` (uint8 `[B x C x H x W]`) and every latent entry
    (module docstring), with the latents' mean and std, the posteriors' RMS std and the number of images.
    """
    count, total, squares, variances, num_images = 0, 0.0, 0.0, 0.0, 0
    for images in batches:
        num_images += len(images)
        mean, logvar = encode_posterior(vae, to_model_range(images))
        mean, logvar = mean.double(), logvar.double().clamp(-30.0, 20.0)
        count += mean.numel()
        total += float(mean.sum())
        squares += float(mean.pow(2).sum())
        variances += float(logvar.exp().sum())
    latent_mean = total / count
    variance = squares / count - latent_mean**2 + variances / count
    return {
        "scaling_factor": 1.0 / variance**0.5,
        "latent_mean": latent_mean,
        "latent_std": variance**0.5,
        "posterior_std_rms": (variances / count) ** 0.5,
        "num_images": num_images,
    }


def log_holdout_psnr(run: AutoencoderRun, step: int) -> dict | None:
    """PSNR of the held-out images' reconstructions by the weights that would be saved; None without a holdout."""
    if run.dataset.holdout is None:
        return None
    vae = run.final_vae()
    images = run.dataset.holdout
    metrics = psnr_summary(images, reconstruct(vae, images))
    run.accelerator.log({"validation/psnr_db": metrics["psnr_db"]}, step=step)
    return metrics


def write_reconstructions(run: AutoencoderRun, vae, path: Path) -> None:
    """Rows of originals over rows of their reconstructions, `GRID_COLUMNS` images a row."""
    images, _ = check_images(run)
    images = images[: run.options.validation.num_validation_images]
    rebuilt = reconstruct(vae, images)
    tiles = []
    for start in range(0, len(images), GRID_COLUMNS):
        row = slice(start, start + GRID_COLUMNS)
        tiles += to_pil_images(images[row]) + to_pil_images(rebuilt[row])
    make_grid(tiles, columns=min(GRID_COLUMNS, len(images))).save(path)


def finish_autoencoder(run: AutoencoderRun, result: TrainingResult) -> None:
    """The last checkpoint, then (main process) the scaling factor, the AutoencoderKL folder, the grid, the summary."""
    accelerator, o = run.accelerator, run.options
    check_finite_weights(run, result.global_step)
    checksums = gather_object([weights_checksum(run.vae)])
    if len(set(checksums)) != 1:
        raise RuntimeError(f"The processes ended with different weights (sha256 per rank: {checksums}).")
    if o.checkpoints.checkpointing_steps and result.last_checkpoint != result.global_step:
        if result.global_step > result.first_step:
            save_autoencoder_checkpoint(run, result.global_step)
    if accelerator.is_main_process:
        vae = run.final_vae().eval()
        scaling = measure_scaling_factor(vae, training_batches(run))
        vae.register_to_config(scaling_factor=scaling["scaling_factor"])
        vae.save_pretrained(run.output_dir, safe_serialization=True)
        write_reconstructions(run, vae, run.output_dir / RECONSTRUCTIONS_FILE)
        write_autoencoder_summary(run, result, checksums, scaling)
        logger.info(
            "Wrote the AutoencoderKL (scaling_factor %.4f), %s and the summary to %s",
            scaling["scaling_factor"],
            RECONSTRUCTIONS_FILE,
            run.output_dir,
        )
    accelerator.wait_for_everyone()


def write_autoencoder_summary(run: AutoencoderRun, result: TrainingResult, checksums: list, scaling: dict) -> None:
    """`training_summary.json`: the run's record as a DDPM run's, plus the autoencoder's measures."""
    o = run.options
    _, which = check_images(run)
    summary = run_summary(run, result, checksums, run.vae)
    record = asdict(summary)
    record["autoencoder"] = {
        "class": type(run.vae).__name__,
        "downsampling_factor": run.source.factor,
        "latent_channels": run.vae.config.latent_channels,
        "scaling": scaling,
        "objective": asdict(o.autoencoder),
        "reconstructions": f"{RECONSTRUCTIONS_FILE}: {which} images over their reconstructions",
    }
    write_json(run.output_dir / SUMMARY_FILE, record)
