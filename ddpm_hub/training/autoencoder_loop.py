"""An autoencoder run's loop and entry (`ddpm_hub.training.autoencoder` says what the run is): optimizer steps over the
micro-batches, the losses exchanged as a DDPM run's are (`loop.sync_losses`), checkpoints and the held-out PSNR on
schedule, then the end (`autoencoder_output`)."""

import contextlib
import json
import time

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from .autoencoder import AutoencoderRun, AutoencoderSource, build_autoencoder_run, check_autoencoder_options
from .autoencoder_loss import autoencoder_loss, hinge_discriminator_loss, hinge_generator_loss
from .autoencoder_output import (
    finish_autoencoder,
    log_holdout_psnr,
    resume_autoencoder,
    save_autoencoder_checkpoint,
)
from .loop import TrainingResult, sync_losses
from .options import TrainingOptions, dry_run_report
from .output import hold_output_dir, start_output
from .randomness import NOISE, make_generator
from .run import close_accelerator, make_accelerator

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
    o, accelerator = run.options, run.accelerator
    max_steps, accumulation = o.length.max_train_steps, o.batches.gradient_accumulation_steps
    every_checkpoint, every_check = o.checkpoints.checkpointing_steps, o.validation.validation_steps
    loader = run.data.loader(
        first_step * accumulation, max_steps * accumulation, o.batches.dataloader_num_workers,
        accelerator.device.type == "cuda",
    )  # fmt: skip
    micro_batches = iter(loader)
    progress = tqdm(total=max_steps, initial=first_step, desc="train", disable=not accelerator.is_local_main_process)
    started = synced_at = time.monotonic()
    step, stopped_by, last_checkpoint, losses, pending, step_time = first_step, "max_train_steps", None, [], [], 0.0
    while step < max_steps:
        pending.append(optimizer_step(run, [next(micro_batches) for _ in range(accumulation)]))
        step += 1
        progress.update(1)
        checkpoint = every_checkpoint and step % every_checkpoint == 0
        check = every_check and step % every_check == 0 and step < max_steps
        if step % o.logging.logging_steps == 0 or checkpoint or check or step == max_steps:
            minutes = o.length.max_train_minutes
            time_up = minutes is not None and time.monotonic() - started > 60 * minutes
            seconds = time.monotonic() - synced_at
            step_time += seconds
            values, stop = sync_losses(run, pending, step, time_up, seconds, progress)
            losses, pending = losses + values, []
            if checkpoint:
                save_autoencoder_checkpoint(run, step)
                last_checkpoint = step
            if check:
                log_holdout_psnr(run, step)
            if stop:
                stopped_by = "max_train_minutes"
                break
            synced_at = time.monotonic()
    progress.close()
    validation = log_holdout_psnr(run, step)
    return TrainingResult(
        first_step, step, stopped_by, time.monotonic() - started, step_time, losses, last_checkpoint, validation
    )


# ----------------------------------------------------------------------------------------------------------------
# The entry


def autoencoder_main(o: TrainingOptions, dry_run: bool, source: AutoencoderSource) -> None:
    """`training.main`'s branch for an autoencoder configuration: check, then train and write the folder."""
    o = check_autoencoder_options(o, source)
    if dry_run:
        report = json.loads(dry_run_report(o, source))
        print(json.dumps({**report, "pipeline_source": "autoencoder configuration"}, indent=2))
        return
    accelerator = make_accelerator(o)
    with hold_output_dir(o, accelerator):
        train_and_write_autoencoder(o, source, accelerator)
    close_accelerator(accelerator)


def train_and_write_autoencoder(o: TrainingOptions, source: AutoencoderSource, accelerator: Accelerator) -> None:
    run = build_autoencoder_run(o, source, accelerator)
    first_step = resume_autoencoder(run)
    start_output(run)
    result = train_autoencoder(run, first_step)
    finish_autoencoder(run, result)
