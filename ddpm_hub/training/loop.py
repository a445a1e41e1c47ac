"""The training loop: optimizer steps over micro-batches, checkpoints and grids on schedule, a stop on time or a
non-finite loss (every rank together). Nothing waits for the device between the exchanges of `sync_losses`."""

import contextlib
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..errors import DDPMHubError
from ..run_folder import CHECKPOINTS_DIR
from .checkpoint_folders import TrainingState, latest_checkpoint
from .checkpointing import save_checkpoint
from .grids import write_validation_grid
from .latents import PosteriorImages, training_latents
from .randomness import CONDITION_DROPOUT, DROPOUT, NOISE, derive_seed, make_generator
from .run import Run
from .validation import log_holdout_metrics


class NonFiniteLossError(DDPMHubError, RuntimeError):
    """The loss became NaN or infinite: training stopped without saving; the message names the last checkpoint."""


@dataclass
class TrainingResult:
    first_step: int
    global_step: int
    stopped_by: str
    wall_time: float
    step_time: float  # time in optimizer steps only (no checkpoints, no grids)
    losses: list[float]
    last_checkpoint: int | None
    validation: dict | None = None  # the held-out metrics at the last step


def train(run: Run, resumed: TrainingState | None) -> TrainingResult:
    """
    Optimizer steps until max_train_steps (or the time limit). The losses stay on the device; every
    `logging_steps` steps, before each checkpoint or grid and at the end, the ranks exchange them once: a non-finite
    loss stops every rank (naming the step), the time limit is agreed on, and the losses are logged.
    """
    o, accelerator = run.options, run.accelerator
    max_steps, accumulation = o.length.max_train_steps, o.batches.gradient_accumulation_steps
    every_checkpoint, every_grid = o.checkpoints.checkpointing_steps, o.validation.validation_steps
    first_step = resumed.global_step if resumed else 0
    first_micro_batch = resumed.micro_batch if resumed else 0
    pin_memory = accelerator.device.type == "cuda"
    loader = run.data.loader(first_micro_batch, max_steps * accumulation, o.batches.dataloader_num_workers, pin_memory)
    micro_batches = iter(loader)
    progress = tqdm(total=max_steps, initial=first_step, desc="train", disable=not accelerator.is_local_main_process)
    started = synced_at = time.monotonic()
    step, stopped_by, last_checkpoint, losses, pending = first_step, "max_train_steps", None, [], []
    step_time = 0.0  # training time between loss exchanges: grids and checkpoints left out
    while step < max_steps:
        batch = [next(micro_batches) for _ in range(accumulation)]
        if run.distillation is not None:  # a new stage: the student so far becomes the teacher
            run.distillation.begin_step(run, step + 1)
        pending.append(optimizer_step(run, batch))
        step += 1
        progress.update(1)
        checkpoint = every_checkpoint and step % every_checkpoint == 0
        validation = every_grid and step % every_grid == 0 and step < max_steps
        if step % o.logging.logging_steps == 0 or checkpoint or validation or step == max_steps:
            minutes = o.length.max_train_minutes
            time_up = minutes is not None and time.monotonic() - started > 60 * minutes
            seconds = time.monotonic() - synced_at
            step_time += seconds
            values, stop = sync_losses(run, pending, step, time_up, seconds, progress)
            losses += values
            pending = []
            if checkpoint:
                save_checkpoint(run, step)
                last_checkpoint = step
            if validation:
                write_validation_grid(run, step)
                log_holdout_metrics(run, step)
            if stop:
                stopped_by = "max_train_minutes"
                break
            synced_at = time.monotonic()  # grids and checkpoints are not training time
    progress.close()
    validation = log_holdout_metrics(run, step)
    wall_time = time.monotonic() - started
    return TrainingResult(first_step, step, stopped_by, wall_time, step_time, losses, last_checkpoint, validation)


def micro_batch_loss(run: Run, m: int, x_0: torch.Tensor, values: dict) -> torch.Tensor:
    """
    The mean loss of micro-batch m: its noise, timesteps, dropout and condition dropout come from (seed, m, rank);
    `values` are what its images carry for the model's condition (`ddpm_hub.pipelines.conditioning`).
    """
    seed, accelerator = run.options.seed, run.accelerator
    rank = accelerator.process_index
    x_0 = x_0.to(accelerator.device, non_blocking=True)
    if run.vae is not None:  # latent diffusion: one draw from each image's posterior, from (seed, LATENT, m, rank)
        cached = isinstance(getattr(run.data, "images", None), PosteriorImages)  # run.cache_posteriors
        x_0 = training_latents(run.vae, x_0, seed, m, rank, posteriors=cached)
    condition, null = None, {}
    if run.conditioning:
        dropout = make_generator(seed, CONDITION_DROPOUT, m, rank)
        condition = run.conditioning.training_batch({**values, "images": x_0}, dropout, accelerator.device)
        if getattr(run.objective, "guidance", None) is not None:  # guidance distilled in: the teacher's null branch
            pair = run.conditioning.guidance_pair({**values, "images": x_0}, condition, accelerator.device)
            condition, null = pair[0], {"null": pair[1]}
    torch.manual_seed(derive_seed(seed, DROPOUT, m, rank))  # dropout uses the global RNG
    generator = make_generator(seed, NOISE, m, rank, device=accelerator.device)
    return run.objective(run.model, x_0, generator, condition=condition, **null).mean()


def optimizer_step(run: Run, micro_batches: list) -> torch.Tensor:
    """One optimizer step over `gradient_accumulation_steps` micro-batches; returns the loss, on the device."""
    accelerator, optimizer = run.accelerator, run.options.optimizer
    losses = []
    for i, (m, x_0, values) in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(run.model):  # all-reduce once per step
            loss = micro_batch_loss(run, m, x_0, values)
            accelerator.backward(loss / len(micro_batches))
        losses.append(loss.detach().float())
    if optimizer.max_grad_norm > 0:
        accelerator.clip_grad_norm_(run.trained_parameters(), optimizer.max_grad_norm)
    run.optimizer.step()
    run.lr_scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    if run.ema is not None:
        run.ema.update(run.unet)
    if run.text_ema is not None:
        run.text_ema.update(run.trained_text_encoder)
    if run.distillation is not None:  # a consistency distillation's target network follows the student
        run.distillation.end_step(run)
    return torch.stack(losses).mean()


def sync_losses(run: Run, pending: list, step: int, time_up: bool, seconds: float, progress) -> tuple[list, bool]:
    """
    The losses of the last steps from every rank, in one gather (the only wait for the device): stop every rank on a
    non-finite one, naming its step; log them; agree on the time limit. Returns (mean loss per step, stop?).
    """
    accelerator = run.accelerator
    device_losses = torch.stack(pending)  # [k]
    flag = torch.tensor([float(time_up)], device=device_losses.device)
    gathered = accelerator.gather(torch.cat([device_losses, flag])[None]).cpu()  # [processes x (k + 1)]
    per_step, stop = gathered[:, :-1], bool(gathered[:, -1].max() > 0)
    first = step - len(pending) + 1
    if not torch.isfinite(per_step).all():  # every rank sees the same gathered values: all stop together
        bad = int((~torch.isfinite(per_step)).any(dim=0).nonzero()[0])
        raise NonFiniteLossError(non_finite_message(run, first + bad, per_step[:, bad].tolist()))
    values = per_step.mean(dim=0).tolist()
    lr = run.lr_scheduler.get_last_lr()[0]
    speed = run.images_per_step * len(values) / seconds
    for offset, loss in enumerate(values):
        logs = {"train/loss": loss}
        if offset == len(values) - 1:
            logs.update({"train/lr": lr, "train/images_per_second": speed})
            if run.ema is not None:
                logs["train/ema_decay"] = run.ema.decay(run.ema.num_updates - 1)
        accelerator.log(logs, step=first + offset)
    progress.set_postfix(loss=f"{values[-1]:.4f}", lr=f"{lr:.2e}", img_s=f"{speed:.0f}", refresh=False)
    return values, stop


def non_finite_message(run: Run, step: int, losses: list[float]) -> str:
    last = latest_checkpoint(run.output_dir / CHECKPOINTS_DIR)
    where = f"the last good checkpoint is {last}" if last else "no checkpoint was saved yet"
    return (
        f"non-finite loss at step {step} (per process: {losses}); training stopped without saving, {where}. Lower "
        "--learning_rate, check --max_grad_norm and --mixed_precision, then resume with --resume_from_checkpoint."
    )
