"""Saving a run's state into a checkpoint (`ddpm_hub.training.checkpoints`) and resuming from one, exactly."""

import os
import shutil
from pathlib import Path

from accelerate.logging import get_logger

from ..errors import UsageError
from ..run_folder import CHECKPOINTS_DIR
from .build import Run
from .checkpoints import (
    CHECKPOINT_PREFIX,
    EMA_FOLDER,
    TrainingState,
    commit_checkpoint,
    latest_checkpoint,
    prune_checkpoints,
    temporary_checkpoint_dir,
)
from .ema import EMA

logger = get_logger(__name__, log_level="INFO")


def save_checkpoint(run: Run, step: int) -> Path:
    """Accelerate state + EMA + data position, written under a temporary name and renamed when complete."""
    accelerator, checkpoints_dir = run.accelerator, run.output_dir / CHECKPOINTS_DIR
    temporary = temporary_checkpoint_dir(checkpoints_dir, step)
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))  # every rank writes its RNG state; the main process the rest
    if accelerator.is_main_process:
        if run.ema is not None:
            run.ema.save(temporary / EMA_FOLDER)
        training_state(run, step).write(temporary)
    accelerator.wait_for_everyone()
    final = temporary.with_name(f"{CHECKPOINT_PREFIX}{step}")
    if accelerator.is_main_process:
        final = commit_checkpoint(temporary, checkpoints_dir, step)
        pruned = prune_checkpoints(checkpoints_dir, run.options.checkpoints_total_limit)
        logger.info("Saved %s%s", final, f"; pruned {', '.join(p.name for p in pruned)}" if pruned else "")
    accelerator.wait_for_everyone()
    return final


def training_state(run: Run, step: int) -> TrainingState:
    micro_batch = step * run.options.gradient_accumulation_steps
    epoch, batch_in_epoch = run.data.position(micro_batch)
    return TrainingState(
        global_step=step,
        micro_batch=micro_batch,
        epoch=epoch,
        batch_in_epoch=batch_in_epoch,
        seed=run.options.seed,
        global_batch_size=run.data.global_batch_size,
        gradient_accumulation_steps=run.options.gradient_accumulation_steps,
        num_images=len(run.data.images),
        ema_updates=run.ema.num_updates if run.ema is not None else None,
    )


def find_checkpoint(resume_from_checkpoint: str | None, output_dir: str | os.PathLike) -> Path | None:
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        found = latest_checkpoint(Path(output_dir, CHECKPOINTS_DIR))
        if found is None:
            logger.info("--resume_from_checkpoint latest: no checkpoint in %s yet; starting a new run.", output_dir)
        return found
    return Path(resume_from_checkpoint)


def resume(run: Run) -> TrainingState | None:
    """Load the checkpoint named by --resume_from_checkpoint, if any; returns its position."""
    o = run.options
    folder = find_checkpoint(o.resume_from_checkpoint, o.output_dir)
    if folder is None:
        return None
    state = TrainingState.read(folder)
    check_resumable(run, state, folder)
    run.accelerator.load_state(str(folder))
    if run.ema is not None and (folder / EMA_FOLDER).is_dir():
        run.ema.load(folder / EMA_FOLDER, state.ema_updates)
    elif run.ema is not None:
        logger.warning("%s has no EMA weights; the EMA starts from the checkpoint's weights.", folder)
        run.ema = EMA(run.unet, o.ema_max_decay, o.ema_inv_gamma, o.ema_power)
    logger.info(
        "Resumed from %s: step %d, epoch %d, batch %d", folder, state.global_step, state.epoch, state.batch_in_epoch
    )
    return state


def check_resumable(run: Run, state: TrainingState, folder: Path) -> None:
    """The data position only means something with the same data, seed and global batch."""
    now = {
        "seed": run.options.seed,
        "global_batch_size": run.data.global_batch_size,
        "gradient_accumulation_steps": run.options.gradient_accumulation_steps,
        "num_images": len(run.data.images),
    }
    for name, value in now.items():
        if getattr(state, name) != value:
            raise UsageError(
                f"Cannot resume from {folder}: it was trained with {name}={getattr(state, name)}, this run has "
                f"{name}={value} (global_batch_size = train_batch_size x processes; num_images after skips). "
                "Use the same settings to continue it."
            )
