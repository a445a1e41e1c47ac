"""Checkpoints of the runs that train one component on its own (an autoencoder, a CLIP, a diffusion prior): the same
atomic save and exact resume as a DDPM run (`ddpm_hub.training.checkpointing`), for a run object with `accelerator`,
`options`, `output_dir`, `data` and `ema`, given the model and what its weights are a model of (its record).

Each such trainer names its own wrappers (`save_clip_checkpoint`, `resume_prior`, ...) around these three."""

import shutil
from pathlib import Path

import torch
from accelerate.logging import get_logger

from ..errors import UsageError
from ..run_folder import CHECKPOINTS_DIR
from .checkpoint_folders import (
    CHECKPOINT_PREFIX,
    TrainingState,
    commit_checkpoint,
    latest_checkpoint,
    prune_checkpoints,
    record_differences,
    temporary_checkpoint_dir,
)
from .checkpointing import (
    CheckpointError,
    check_resumable,
    check_same_checkpoint,
    find_checkpoint,
    training_state,
)

logger = get_logger(__name__, log_level="INFO")


def check_component_weights(run, model: torch.nn.Module, step: int) -> None:
    """The weights (and the EMA) are finite; otherwise stop before anything is saved over good state."""
    models = {"": model, "EMA ": run.ema.model if run.ema is not None else None}
    bad = [
        f"{prefix}{name}"
        for prefix, module in models.items()
        if module is not None
        for name, p in module.named_parameters()
        if not bool(torch.isfinite(p).all())
    ]
    if bad:
        last = latest_checkpoint(run.output_dir / CHECKPOINTS_DIR)
        raise CheckpointError(
            f"the weights are not finite after step {step} (e.g. {', '.join(bad[:3])}); nothing was saved, and the "
            f"last good checkpoint is {last or 'none'}. Lower --learning_rate, then resume from it."
        )


def save_component_checkpoint(run, model: torch.nn.Module, record: dict, step: int, ema_folder: str) -> Path:
    """Accelerate's state + the EMA + `training_state.json`, written under a temporary name and renamed complete."""
    check_component_weights(run, model, step)
    accelerator, checkpoints_dir = run.accelerator, run.output_dir / CHECKPOINTS_DIR
    temporary = temporary_checkpoint_dir(checkpoints_dir, step)
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    if accelerator.is_main_process:
        if run.ema is not None:
            run.ema.save(temporary / ema_folder)
        training_state(run, step, record).write(temporary)
    accelerator.wait_for_everyone()
    final = temporary.with_name(f"{CHECKPOINT_PREFIX}{step}")
    if accelerator.is_main_process:
        final = commit_checkpoint(temporary, checkpoints_dir, step)
        prune_checkpoints(checkpoints_dir, run.options.checkpoints.checkpoints_total_limit)
        logger.info("Saved %s", final)
    accelerator.wait_for_everyone()
    return final


def resume_component(run, record: dict, kind: str, what: str, ema_folder: str) -> int:
    """
    Load the checkpoint --resume_from_checkpoint names, if any, after checking that it is one of this model (its
    record holds `kind` and no difference from `record`; `what` names the model in the message); returns its step
    (0: none).
    """
    o = run.options
    folder = find_checkpoint(o.checkpoints.resume_from_checkpoint, o.output_dir)
    check_same_checkpoint(run.accelerator, folder, o.output_dir)
    if folder is None:
        return 0
    state = TrainingState.read(folder)
    differences = record_differences(state.model or {}, record)
    if state.model is None or kind not in state.model or differences:
        raise UsageError(
            f"Cannot resume from {folder}: it is not a checkpoint of this {what} "
            f"({'; '.join(differences[:6]) or 'it records another kind of model'}). Resume it with the options of "
            "its own run (its training_options.json), or start this run in another --output_dir."
        )
    check_resumable(run, state, folder)
    run.accelerator.load_state(str(folder))
    if run.ema is not None:
        run.ema.load(folder / ema_folder, state.ema_updates)
    logger.info("Resumed from %s: step %d", folder, state.global_step)
    return state.global_step
