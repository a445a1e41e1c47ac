"""Held-out metrics of a run: the objective and a sampled bits/dim estimate on the images held out of training."""

import torch
from accelerate.logging import get_logger

from ..data import to_model_range
from ..evaluation.likelihood import bits_per_dim
from .latents import holdout_latents
from .randomness import HOLDOUT, make_generator
from .run import Run

logger = get_logger(__name__, log_level="INFO")


def holdout_metrics(run: Run) -> dict:
    """
    The cheap in-training signals on the held-out images, for the weights that will be saved (EMA if on):
    the objective with noise and timesteps fixed by --seed (comparable across steps), and the sampled estimate of
    the full-chain bits/dim over `validation_bpd_steps` UNet calls per image (ddpm_hub.evaluation.likelihood, seeded
    too); a conditional model is measured on each image's own condition.
    """
    o, device = run.options, run.accelerator.device
    unet = run.final_unet()
    was_training = unet.training
    unet.eval()
    x_0 = to_model_range(run.holdout).to(device)
    if run.vae is not None:  # a latent model: its objective on the latents of the held-out images
        x_0 = holdout_latents(run.vae, x_0, o.seed)
    generator = make_generator(o.seed, HOLDOUT, 1)
    timesteps = torch.randint(0, run.scheduler.config.num_train_timesteps, (len(x_0),), generator=generator)
    noise = torch.randn(x_0.shape, generator=generator).to(device)
    columns = {**run.holdout_columns, "images": x_0}  # a super-resolution model reads the images themselves
    condition = run.conditioning.batch(columns, device)
    with torch.no_grad():
        loss = run.objective(unet, x_0, timesteps=timesteps.to(device), noise=noise, condition=condition)
    if run.vae is not None:  # the bound is over latents, not the image's pixels: no bits/dim (likelihood.py)
        unet.train(was_training)
        return {"loss": loss.mean().item(), "bits_per_dim": None, "bits_per_dim_label": None, "num_images": len(x_0)}
    pipeline = type(run.pipeline).from_pipe(run.pipeline, unet=unet)  # bits_per_dim copies the scheduler
    bpd = bits_per_dim(
        pipeline,
        run.holdout,
        num_steps=o.validation.validation_bpd_steps,
        estimator="sampled",
        generator=make_generator(o.seed, HOLDOUT, 2),
        **run.conditioning.inputs_of(columns),  # conditional: the bound on -log p(x | label, prompt, low-res)
    )
    unet.train(was_training)
    return {
        "loss": loss.mean().item(),
        "bits_per_dim": bpd.mean(),
        "bits_per_dim_label": bpd.label,
        "num_images": len(x_0),
    }


def log_holdout_metrics(run: Run, step: int) -> dict | None:
    """Every rank computes the same (deterministic, small) numbers, so no rank waits; the main process logs them."""
    if run.holdout is None:
        return None
    with run.final_weights_on_device():
        metrics = holdout_metrics(run)
    if metrics["bits_per_dim"] is None:
        run.accelerator.log({"val/loss": metrics["loss"]}, step=step)
        logger.info("step %d held-out: loss %.4f (latents)", step, metrics["loss"])
        return metrics
    run.accelerator.log({"val/loss": metrics["loss"], "val/bits_per_dim": metrics["bits_per_dim"]}, step=step)
    logger.info(
        "step %d held-out: loss %.4f, %.3f bits/dim (%s)",
        step,
        metrics["loss"],
        metrics["bits_per_dim"],
        metrics["bits_per_dim_label"],
    )
    return metrics
