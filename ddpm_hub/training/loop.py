"""The training loop: optimizer steps over micro-batches, checkpoints and grids on schedule, a stop on time or a
non-finite loss (every rank together)."""

import contextlib
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..errors import DDPMHubError
from ..run_folder import CHECKPOINTS_DIR
from .batches import make_loader
from .build import Run
from .checkpoints import TrainingState, latest_checkpoint
from .randomness import DROPOUT, LABEL_DROPOUT, NOISE, derive_seed, make_generator
from .reporting import log_holdout_metrics, write_validation_grid
from .run_state import save_checkpoint


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
    o, accelerator = run.options, run.accelerator
    first_step = resumed.global_step if resumed else 0
    first_micro_batch = resumed.micro_batch if resumed else 0
    end = o.max_train_steps * o.gradient_accumulation_steps
    pin_memory = accelerator.device.type == "cuda"
    micro_batches = iter(make_loader(run.data, first_micro_batch, end, o.dataloader_num_workers, pin_memory))
    progress = tqdm(
        total=o.max_train_steps, initial=first_step, desc="train", disable=not accelerator.is_local_main_process
    )
    started, step_time, losses = time.monotonic(), 0.0, []
    step, stopped_by, last_checkpoint = first_step, "max_train_steps", None
    while step < o.max_train_steps:
        tick = time.monotonic()
        time_up = o.max_train_minutes is not None and tick - started > 60 * o.max_train_minutes
        batch = [next(micro_batches) for _ in range(o.gradient_accumulation_steps)]
        loss, stop = optimizer_step(run, batch, step + 1, time_up)  # stop: some rank's time is up (after this step)
        step, duration = step + 1, time.monotonic() - tick
        step_time += duration
        losses.append(loss)
        log_step(run, progress, step, loss, run.images_per_step / duration)
        if o.checkpointing_steps and step % o.checkpointing_steps == 0:
            save_checkpoint(run, step)
            last_checkpoint = step
        if o.validation_steps and step % o.validation_steps == 0 and step < o.max_train_steps:
            write_validation_grid(run, step)
            log_holdout_metrics(run, step)
        if stop:
            stopped_by = "max_train_minutes"
            break
    progress.close()
    validation = log_holdout_metrics(run, step)
    wall_time = time.monotonic() - started
    return TrainingResult(first_step, step, stopped_by, wall_time, step_time, losses, last_checkpoint, validation)


def micro_batch_loss(run: Run, m: int, x_0: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """The mean loss of micro-batch m: its noise, timesteps, dropout and label dropout come from (seed, m, rank)."""
    o, accelerator = run.options, run.accelerator
    rank = accelerator.process_index
    x_0 = x_0.to(accelerator.device, non_blocking=True)
    if labels is not None:
        labels = drop_labels(
            labels, o.class_dropout_prob, run.null_class_label, make_generator(o.seed, LABEL_DROPOUT, m, rank)
        )
        labels = labels.to(accelerator.device, non_blocking=True)
    torch.manual_seed(derive_seed(o.seed, DROPOUT, m, rank))  # dropout uses the global RNG
    generator = make_generator(o.seed, NOISE, m, rank, device=accelerator.device)
    return run.objective(run.model, x_0, generator, class_labels=labels).mean()


def drop_labels(
    labels: torch.Tensor, p: float, null_class_label: int | None, generator: torch.Generator
) -> torch.Tensor:
    """Classifier-free guidance training (Ho & Salimans 2022): each label becomes the null label with probability p."""
    if not p or null_class_label is None:
        return labels
    dropped = torch.rand(labels.shape, generator=generator) < p
    return torch.where(dropped, torch.full_like(labels, null_class_label), labels)


def optimizer_step(run: Run, micro_batches: list, step: int, time_up: bool) -> tuple[float, bool]:
    """One optimizer step over `gradient_accumulation_steps` micro-batches; returns (loss over ranks, stop?)."""
    accelerator, o = run.accelerator, run.options
    losses = []
    for i, (m, x_0, labels) in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(run.model):  # all-reduce once per step
            loss = micro_batch_loss(run, m, x_0, labels)
            accelerator.backward(loss / len(micro_batches))
        losses.append(loss.detach().float())
    loss = torch.stack(losses).mean()
    flags = accelerator.gather(torch.stack([loss, torch.tensor(float(time_up), device=loss.device)])[None])
    if not torch.isfinite(flags[:, 0]).all():  # every rank sees the same gathered values: all stop together
        raise NonFiniteLossError(non_finite_message(run, step, flags[:, 0].tolist()))
    if o.max_grad_norm > 0:
        accelerator.clip_grad_norm_(run.model.parameters(), o.max_grad_norm)
    run.optimizer.step()
    run.lr_scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    if run.ema is not None:
        run.ema.update(run.unet)
    return flags[:, 0].mean().item(), bool(flags[:, 1].max() > 0)


def non_finite_message(run: Run, step: int, losses: list[float]) -> str:
    last = latest_checkpoint(run.output_dir / CHECKPOINTS_DIR)
    where = f"the last good checkpoint is {last}" if last else "no checkpoint was saved yet"
    return (
        f"non-finite loss at step {step} (per process: {losses}); training stopped without saving, {where}. Lower "
        "--learning_rate, check --max_grad_norm and --mixed_precision, then resume with --resume_from_checkpoint."
    )


def log_step(run: Run, progress: tqdm, step: int, loss: float, speed: float) -> None:
    lr = run.lr_scheduler.get_last_lr()[0]
    logs = {"train/loss": loss, "train/lr": lr, "train/images_per_second": speed}
    if run.ema is not None:
        logs["train/ema_decay"] = run.ema.decay(run.ema.num_updates - 1)
    run.accelerator.log(logs, step=step)
    progress.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{speed:.0f}", refresh=False)
    progress.update(1)
