"""The loop and the entry of the runs that train one component on its own (an autoencoder, a CLIP, a diffusion
prior): optimizer steps until --max_train_steps or --max_train_minutes, the losses exchanged every --logging_steps,
checkpoints and the held-out check on their schedules, then the folder written. Each trainer gives its own step,
checkpoint and check (`ddpm_hub.training.autoencoder_loop`, `clip_loop`, `prior_loop`)."""

import json
import time
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from .loop import TrainingResult, sync_losses
from .options import TrainingOptions, dry_run_report
from .output import hold_output_dir, start_output
from .run import close_accelerator, make_accelerator


def train_component(
    run,
    first_step: int,
    optimizer_step: Callable[[object, list], torch.Tensor],
    save_checkpoint: Callable[[object, int], object],
    held_out_check: Callable[[object, int], dict | None],
) -> TrainingResult:
    """Optimizer steps from `first_step` until max_train_steps or the time limit; checkpoints, checks on schedule."""
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
                save_checkpoint(run, step)
                last_checkpoint = step
            if check:
                held_out_check(run, step)
            if stop:
                stopped_by = "max_train_minutes"
                break
            synced_at = time.monotonic()
    progress.close()
    validation = held_out_check(run, step)
    return TrainingResult(
        first_step, step, stopped_by, time.monotonic() - started, step_time, losses, last_checkpoint, validation
    )


def component_main(
    o: TrainingOptions, dry_run: bool, source, label: str, check_options: Callable, train_and_write: Callable
) -> None:
    """`training.main`'s branch for one component's configuration (`label`): check, then train and write."""
    o = check_options(o, source)
    if dry_run:
        report = json.loads(dry_run_report(o, source))
        print(json.dumps({**report, "pipeline_source": label}, indent=2))
        return
    accelerator = make_accelerator(o)
    with hold_output_dir(o, accelerator):
        train_and_write(o, source, accelerator)
    close_accelerator(accelerator)


def build_and_train(run, resume: Callable, train: Callable, finish: Callable) -> None:
    """Resume the run if asked, start its output, train, and write the folder."""
    first_step = resume(run)
    start_output(run)
    finish(run, train(run, first_step))
