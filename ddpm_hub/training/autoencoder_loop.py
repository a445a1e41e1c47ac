"""An autoencoder run's loop and entry (`ddpm_hub.training.autoencoder` says what the run is): optimizer steps over the
micro-batches, the losses exchanged as a DDPM run's are (`loop.sync_losses`), checkpoints and the held-out PSNR on
schedule, then the end (`autoencoder_output`)."""

import contextlib

import torch
from accelerate import Accelerator

from .autoencoder import AutoencoderRun, AutoencoderSource, build_autoencoder_run, check_autoencoder_options
from .autoencoder_loss import autoencoder_loss, hinge_discriminator_loss, hinge_generator_loss
from .autoencoder_output import (
    finish_autoencoder,
    log_holdout_psnr,
    resume_autoencoder,
    save_autoencoder_checkpoint,
)
from .component_loop import build_and_train, component_main, train_component
from .loop import TrainingResult
from .options import TrainingOptions
from .randomness import NOISE, make_generator

# ----------------------------------------------------------------------------------------------------------------
# The loop


def micro_batch_loss(run: AutoencoderRun, m: int, x: torch.Tensor, adversarial: bool):
    """
    The loss of micro-batch m, its posterior draws from (seed, NOISE, m, rank); with `adversarial`, plus the
    discriminator's verdict on the reconstructions (the bare discriminator, frozen: it learns in its own pass).
    Returns (loss, x, x_hat detached).
    """
    accelerator, objective = run.accelerator, run.options.autoencoder
    x = x.to(accelerator.device, non_blocking=True)
    if run.options.speed.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    generator = make_generator(run.options.seed, NOISE, m, accelerator.process_index, device=accelerator.device)
    with accelerator.autocast():
        x_hat, mean, logvar = run.model(x, generator)
    loss, _ = autoencoder_loss(x, x_hat, mean, logvar, objective)
    if adversarial:
        critic = accelerator.unwrap_model(run.discriminator).requires_grad_(False)
        with accelerator.autocast():
            loss = loss + objective.disc_weight * hinge_generator_loss(critic(x_hat))
        critic.requires_grad_(True)
    return loss, x, x_hat.detach()


def discriminator_loss(run: AutoencoderRun, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss on a micro-batch's images and their reconstructions, in one forward."""
    with run.accelerator.autocast():
        real, fake = run.discriminator(torch.cat([x, x_hat])).chunk(2)
    return hinge_discriminator_loss(real, fake)


def optimizer_step(run: AutoencoderRun, micro_batches: list) -> torch.Tensor:
    """
    One optimizer step over `gradient_accumulation_steps` micro-batches (and one of the discriminator after
    --disc_start steps); returns the autoencoder's loss, on the device.
    """
    accelerator, o, losses = run.accelerator, run.options, []
    step = micro_batches[-1][0] // o.batches.gradient_accumulation_steps + 1
    adversarial = run.discriminator is not None and step > o.autoencoder.disc_start
    for i, (m, x, _) in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(run.model):  # all-reduce once per step
            loss, x, x_hat = micro_batch_loss(run, m, x, adversarial)
            accelerator.backward(loss / len(micro_batches))
        if adversarial:
            with contextlib.nullcontext() if last else accelerator.no_sync(run.discriminator):
                accelerator.backward(discriminator_loss(run, x, x_hat) / len(micro_batches))
        losses.append(loss.detach().float())
    if o.optimizer.max_grad_norm > 0:
        accelerator.clip_grad_norm_(run.model.parameters(), o.optimizer.max_grad_norm)
    run.optimizer.step()
    run.lr_scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    if adversarial:
        run.disc_optimizer.step()
        run.disc_optimizer.zero_grad(set_to_none=True)
    if run.ema is not None:
        run.ema.update(run.vae)
    return torch.stack(losses).mean()


def train_autoencoder(run: AutoencoderRun, first_step: int) -> TrainingResult:
    """Optimizer steps until max_train_steps or the time limit; checkpoints and held-out PSNR on schedule."""
    return train_component(run, first_step, optimizer_step, save_autoencoder_checkpoint, log_holdout_psnr)


# ----------------------------------------------------------------------------------------------------------------
# The entry


def autoencoder_main(o: TrainingOptions, dry_run: bool, source: AutoencoderSource) -> None:
    """`training.main`'s branch for a autoencoder configuration: check, then train and write the folder."""
    component_main(
        o, dry_run, source, "autoencoder configuration", check_autoencoder_options, train_and_write_autoencoder
    )


def train_and_write_autoencoder(o: TrainingOptions, source: AutoencoderSource, accelerator: Accelerator) -> None:
    build_and_train(
        build_autoencoder_run(o, source, accelerator), resume_autoencoder, train_autoencoder, finish_autoencoder
    )
