"""Saving a run's state into a checkpoint folder (`ddpm_hub.training.checkpoint_folders`) and resuming from one,
exactly."""

import errno
import os
import shutil
from pathlib import Path

import torch
from accelerate.logging import get_logger

from ..errors import DDPMHubError, UsageError, exception_chain, one_line
from ..run_folder import CHECKPOINTS_DIR
from .checkpoint_folders import (
    CHECKPOINT_PREFIX,
    EMA_FOLDER,
    TEXT_EMA_FOLDER,
    TRAINING_STATE,
    TrainingState,
    checkpoint_step,
    commit_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    record_differences,
    temporary_checkpoint_dir,
)
from .ema import EMA
from .run import Run

logger = get_logger(__name__, log_level="INFO")


class CheckpointError(DDPMHubError, RuntimeError):
    """A checkpoint could not be written (or must not be): earlier checkpoints are intact, the message names them."""


def save_checkpoint(run: Run, step: int) -> Path:
    """
    Accelerate state + EMA + data position, written under a temporary name and renamed when complete. Refused for
    non-finite weights (pruning could otherwise delete the last good checkpoint); a failed write (a full disk) removes
    the temporary folder and stops every rank together with a message.
    """
    check_finite_weights(run, step)
    accelerator, checkpoints_dir = run.accelerator, run.output_dir / CHECKPOINTS_DIR
    temporary = temporary_checkpoint_dir(checkpoints_dir, step)
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    error = None
    try:
        accelerator.save_state(str(temporary))  # every rank writes its RNG state; the main process the rest
        run.data.write_state(temporary, accelerator.process_index)  # a stream's position, per rank
        if accelerator.is_main_process:
            if run.ema is not None:
                run.ema.save(temporary / EMA_FOLDER)
            if run.text_ema is not None:
                run.text_ema.save(temporary / TEXT_EMA_FOLDER)
            if run.distillation is not None:
                run.distillation.save(temporary)
            training_state(run, step).write(temporary)
    except Exception as caught:  # noqa: BLE001 - torch, safetensors and the OS raise many types on a failed write
        error = caught
    failed = accelerator.gather(torch.tensor([float(error is not None)], device=accelerator.device))
    if bool(failed.any()):  # every rank sees the same flags: all stop together, none waits in a collective
        if accelerator.is_main_process:
            shutil.rmtree(temporary, ignore_errors=True)
        raise CheckpointError(write_failure_message(run, step, temporary, error))
    final = temporary.with_name(f"{CHECKPOINT_PREFIX}{step}")
    if accelerator.is_main_process:
        final = commit_checkpoint(temporary, checkpoints_dir, step)
        pruned = prune_checkpoints(checkpoints_dir, run.options.checkpoints.checkpoints_total_limit)
        logger.info("Saved %s%s", final, f"; pruned {', '.join(p.name for p in pruned)}" if pruned else "")
    accelerator.wait_for_everyone()
    return final


# errno values and library messages that mean the disk (or a file size limit) is full
_FULL_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
_FULL_MESSAGES = ("no space left", "file too large", "disk quota", "unexpected pos", "file write failed")


def write_failure_message(run: Run, step: int, temporary: Path, error: BaseException | None) -> str:
    last = latest_checkpoint(run.output_dir / CHECKPOINTS_DIR)
    kept = f"the last complete checkpoint, {last}, is intact" if last else "no earlier checkpoint exists"
    if error is None:
        return f"checkpoint {step} failed on another process; nothing was saved and {kept}."
    causes = list(exception_chain(error))
    full = any(
        getattr(c, "errno", None) in _FULL_ERRNOS or any(m in str(c).lower() for m in _FULL_MESSAGES) for c in causes
    )
    free = shutil.disk_usage(next(p for p in (temporary, *temporary.parents) if p.exists())).free
    what = "the disk is full" if full else "writing failed"
    return (
        f"could not write checkpoint {step} to {temporary.parent}: {what} ({one_line(error)}; "
        f"{free / 2**20:.0f} MiB free there). "
        f"The partial checkpoint was removed and {kept}. Free space (or choose --output_dir elsewhere), then resume "
        "with --resume_from_checkpoint latest."
    )


def check_finite_weights(run: Run, step: int) -> None:
    """The weights (and the EMA) are finite numbers; otherwise stop before anything is saved over good state."""
    bad = [f"{name}" for name, p in run.unet.named_parameters() if not bool(torch.isfinite(p).all())]
    if run.ema is not None:
        bad += [f"EMA {name}" for name, p in run.ema.model.named_parameters() if not bool(torch.isfinite(p).all())]
    if run.trained_text_encoder is not None:
        named = run.trained_text_encoder.named_parameters()
        bad += [f"text encoder {name}" for name, p in named if not bool(torch.isfinite(p).all())]
    if not bad:
        return
    last = latest_checkpoint(run.output_dir / CHECKPOINTS_DIR)
    where = f"the last good checkpoint is {last}" if last else "no checkpoint was saved yet"
    raise CheckpointError(
        f"the weights are not finite after step {step} ({len(bad)} tensors with NaN or inf, e.g. "
        f"{', '.join(bad[:3])}); nothing was saved or published, and {where}. Lower --learning_rate, check "
        "--max_grad_norm and --mixed_precision, then resume from it with --resume_from_checkpoint."
    )


def training_state(run: Run, step: int, record: dict | None = None) -> TrainingState:
    """The position of step `step` and what the weights are a model of (`record`, default: the DDPM run's)."""
    micro_batch = step * run.options.batches.gradient_accumulation_steps
    epoch, batch_in_epoch = run.data.position(micro_batch)
    return TrainingState(
        global_step=step,
        micro_batch=micro_batch,
        epoch=epoch,
        batch_in_epoch=batch_in_epoch,
        seed=run.options.seed,
        global_batch_size=run.data.global_batch_size,
        gradient_accumulation_steps=run.options.batches.gradient_accumulation_steps,
        num_images=run.data.num_images,
        ema_updates=run.ema.num_updates if run.ema is not None else None,
        model=model_record(run) if record is None else record,
    )


def model_record(run: Run) -> dict:
    """
    What the weights of a run are a model of, as a checkpoint records it: the UNet and scheduler configurations
    (architecture, prediction type, schedule, variance, T), the conditioning's settings, the objective's options and
    a distillation's stages (their calls and length fix which stage, teacher and label each step has), a latent
    model's scale of its latents. A resume with anything else would continue training another model, or the same one
    on another objective.
    """

    def public(config) -> dict:
        return {key: value for key, value in dict(config).items() if not key.startswith("_")}

    classes = run.conditioning.classes
    conditioning = {**run.conditioning.settings(), "dropout_prob": classes.dropout_prob if classes else None}
    return {
        "unet": public(run.unet.config),
        "scheduler": public(run.scheduler.config),
        "conditioning": conditioning,
        "objective": {"snr_gamma": run.options.model.snr_gamma},
        "distillation": distillation_record(run),
        "latents": latents_record(run),
    }


def latents_record(run: Run) -> dict | None:
    """A latent model's scale of its latents (--vae_scaling_factor, else the autoencoder's); None in pixels."""
    vae = run.vae
    return None if vae is None else {key: vae.config.get(key) for key in ("scaling_factor", "shift_factor")}


def distillation_record(run: Run) -> dict | None:
    """A distillation as a checkpoint records it: its method, and the stages' calls and lengths (progressive) or its
    points, target decay and loss (consistency)."""
    return None if run.distillation is None else run.distillation.record()


def find_checkpoint(resume_from_checkpoint: str | None, output_dir: str | os.PathLike) -> Path | None:
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        found = latest_checkpoint(Path(output_dir, CHECKPOINTS_DIR))
        if found is None:
            logger.info("--resume_from_checkpoint latest: no checkpoint in %s yet; starting a new run.", output_dir)
        return found
    return Path(resume_from_checkpoint)


def check_same_checkpoint(accelerator, folder: Path | None, output_dir: str | os.PathLike) -> None:
    """
    Every process resumes from the same checkpoint step, or none does. Processes that disagree (an --output_dir per
    machine instead of one shared folder: only the main process's machine has the checkpoints) would otherwise start
    at different steps and wait for each other in collectives until the process group's timeout (30 min on gloo);
    here every rank stops at once with a message instead.
    """
    if folder is None:
        mine = -1
    elif not (folder / TRAINING_STATE).is_file():
        mine = -2
    else:  # -3: a complete checkpoint given by a path not named checkpoint-<step>
        mine = checkpoint_step(folder) if checkpoint_step(folder) is not None else -3
    steps = accelerator.gather(torch.tensor([mine], device=accelerator.device)).tolist()
    if len(set(steps)) > 1:
        names = {-1: "no checkpoint", -2: f"no checkpoint at {folder}", -3: f"{folder}"}
        seen = ", ".join(f"process {rank}: {names.get(step, f'checkpoint-{step}')}" for rank, step in enumerate(steps))
        raise UsageError(
            f"The processes of this run do not see the same checkpoints in --output_dir {output_dir} ({seen}). "
            "Checkpoints are written by the main process: --output_dir must be one folder on a filesystem every "
            "machine sees, under the same path (see docs/multi-node.md). Nothing was loaded."
        )


def resume(run: Run) -> TrainingState | None:
    """Load the checkpoint named by --resume_from_checkpoint, if any; returns its position."""
    o = run.options
    folder = find_checkpoint(o.checkpoints.resume_from_checkpoint, o.output_dir)
    check_same_checkpoint(run.accelerator, folder, o.output_dir)
    if folder is None:
        return None
    state = TrainingState.read(folder)
    check_same_model(run, state, folder)
    check_resumable(run, state, folder)
    run.data.read_state(folder, run.accelerator.process_index, run.accelerator.num_processes)
    try:
        run.accelerator.load_state(str(folder))
        if run.ema is not None and (folder / EMA_FOLDER).is_dir():
            run.ema.load(folder / EMA_FOLDER, state.ema_updates)
        if run.text_ema is not None and (folder / TEXT_EMA_FOLDER).is_dir():
            run.text_ema.load(folder / TEXT_EMA_FOLDER, state.ema_updates)
        if run.distillation is not None:  # the stage after this step and its teacher, or the target network
            run.distillation.resume(run, state.global_step, folder)
    except DDPMHubError:
        raise
    except Exception as error:  # noqa: BLE001 - safetensors, torch.load and pickle raise many types on bad files
        raise CheckpointError(corrupt_checkpoint_message(folder, error)) from error
    if run.ema is not None and not (folder / EMA_FOLDER).is_dir():
        logger.warning("%s has no EMA weights; the EMA starts from the checkpoint's weights.", folder)
        run.ema = EMA(run.unet, o.ema.ema_max_decay, o.ema.ema_inv_gamma, o.ema.ema_power)
    logger.info(
        "Resumed from %s: step %d, epoch %d, batch %d", folder, state.global_step, state.epoch, state.batch_in_epoch
    )
    return state


def check_same_model(run: Run, state: TrainingState, folder: Path) -> None:
    """The checkpoint's recorded model is this run's: every difference is named, and the checkpoint is left intact."""
    if state.model is None:  # written before the record: loading finds an architecture mismatch, not the rest
        return
    differences = record_differences(state.model, model_record(run))
    if differences:
        shown = "; ".join(differences[:6]) + (f"; and {len(differences) - 6} more" if len(differences) > 6 else "")
        raise UsageError(
            f"Cannot resume from {folder}: it is a checkpoint of another model or objective than this run's "
            f"({shown}). Resume it with the options it was trained with (its run's training_options.json), or start "
            "this run in another --output_dir. The checkpoint is intact."
        )


def check_resumable(run: Run, state: TrainingState, folder: Path) -> None:
    """The data position only means something with the same data, seed and global batch."""
    now = {
        "seed": run.options.seed,
        "global_batch_size": run.data.global_batch_size,
        "gradient_accumulation_steps": run.options.batches.gradient_accumulation_steps,
        "num_images": run.data.num_images,
    }
    for name, value in now.items():
        if getattr(state, name) != value:
            raise UsageError(
                f"Cannot resume from {folder}: it was trained with {name}={getattr(state, name)}, this run has "
                f"{name}={value} (global_batch_size = train_batch_size x processes; num_images after skips, 0 for a "
                "stream). "
                "Use the same settings to continue it."
            )


def corrupt_checkpoint_message(folder: Path, error: BaseException) -> str:
    """
    A checkpoint whose recorded model matched (or that records none) failed to load: a damaged file, or, for a
    checkpoint written before the record, another architecture. Nothing is deleted, and no deletion is advised.
    """
    others = [p for p in list_checkpoints(folder.parent) if p != folder]
    previous = f"--resume_from_checkpoint {others[-1]}" if others else "no other checkpoint exists"
    state = TrainingState.read(folder)
    other_model = (
        ""
        if state.model is not None
        else " If it was written for another model (this checkpoint predates the record of its configuration), "
        "resume with the options of its own run."
    )
    return (
        f"checkpoint {folder} cannot be loaded ({one_line(error)}): a file in it is damaged or incomplete."
        f"{other_model} To continue from an earlier state, resume from the one before it ({previous}). Nothing was "
        "deleted."
    )
