"""Checkpoint folders, `output_dir/checkpoints/checkpoint-<step>/`: Accelerate's state (model, optimizer, LR
schedule, RNG states) plus the EMA weights and the data position (`training_state.json`). Written under a temporary
name and renamed when complete, so that a kill leaves either the old set of checkpoints or the new one: the folders
and their files. Saving a run into one and resuming from one: `ddpm_hub.training.checkpointing`.
"""

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import InputNotFoundError, UsageError
from ..loading.configs import weights_checksum  # noqa: F401 - where training takes it from
from ..run_folder import read_json

CHECKPOINT_PREFIX = "checkpoint-"
TEMPORARY_PREFIX = ".tmp-" + CHECKPOINT_PREFIX
TRAINING_STATE = "training_state.json"
EMA_FOLDER = "ema_unet"
TEXT_EMA_FOLDER = "ema_text_encoder"  # --train_text_encoder with --use_ema


OPTIONAL_FIELDS = ("ema_updates", "model")
# Where a run sets each recorded value, for the message that names what differs.
RECORD_OPTIONS = {
    "scheduler.prediction_type": "--prediction_type",
    "scheduler.variance_type": "--variance_type",
    "scheduler.num_train_timesteps": "--ddpm_num_steps",
    "scheduler.beta_schedule": "--ddpm_beta_schedule",
    "unet.sample_size": "--resolution",
    "objective.snr_gamma": "--snr_gamma",
    "conditioning.null_class_label": "--class_dropout_prob",
    "conditioning.dropout_prob": "--class_dropout_prob",
    "distillation": "--distill_from",
    "distillation.calls": "--distill_calls",
    "distillation.steps_per_stage": "--distill_steps_per_stage",
    "distillation.method": "--distill_method",
    "distillation.skip": "--consistency_skip",
    "distillation.target_decay": "--consistency_target_decay",
    "distillation.huber_c": "--consistency_huber_c",
    "distillation.guidance": "--distill_guidance",
    "latents": "--vae",
    "latents.scaling_factor": "--vae_scaling_factor",
    "latents.shift_factor": "--vae",
}


def record_differences(saved: dict, current: dict) -> list[str]:
    """
    `key: saved value in the checkpoint, current value in this run (--option)` for every recorded value that
    differs, as dotted keys (`scheduler.prediction_type`); a part one side records as None (no distillation) and the
    other does not is one. Keys only one side has (a newer diffusers' config field, a part an older ddpm_hub did not
    record) are not differences.
    """
    differences = []
    for part in sorted(set(saved) & set(current)):
        if (saved[part] is None) != (current[part] is None):  # e.g. a distillation resumed as plain training
            option = RECORD_OPTIONS.get(part)
            where = f" ({option})" if option else ""
            differences.append(f"{part}: {saved[part]!r} in the checkpoint, {current[part]!r} in this run{where}")
            continue
        before, now = saved[part] or {}, current[part] or {}
        for key in sorted(set(before) & set(now)):
            if _comparable(before[key]) != _comparable(now[key]):
                name = f"{part}.{key}"
                option = RECORD_OPTIONS.get(name, "--pipeline" if part in ("unet", "scheduler") else None)
                where = f" ({option})" if option else ""
                differences.append(f"{name}: {before[key]!r} in the checkpoint, {now[key]!r} in this run{where}")
    return differences


def _comparable(value):
    """JSON's view of a value (tuples as lists, int keys as strings): how the checkpoint recorded it."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


@dataclass
class TrainingState:
    """What a checkpoint adds to Accelerate's state: the data position and what it must agree with on resume."""

    global_step: int  # optimizer steps done
    micro_batch: int  # next micro-batch m to train on (global_step x gradient_accumulation_steps)
    epoch: int
    batch_in_epoch: int
    seed: int
    global_batch_size: int
    gradient_accumulation_steps: int
    num_images: int
    ema_updates: int | None = None
    # What the weights are a model of (`model_record`): the UNet and scheduler configurations, the conditioning and
    # the objective's options. None in checkpoints of ddpm_hub before it was recorded.
    model: dict | None = None

    def write(self, folder: Path) -> None:
        (folder / TRAINING_STATE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, folder: Path) -> "TrainingState":
        path = folder / TRAINING_STATE
        data = read_json(path, "a checkpoint's data position")
        if data is None:
            raise InputNotFoundError(f"{folder} is not a ddpm_hub training checkpoint: it has no {TRAINING_STATE}.")
        names = [f.name for f in fields(cls)]
        counts = [name for name in names if name not in OPTIONAL_FIELDS]
        missing = [name for name in counts if name not in data]
        wrong = not all(isinstance(data.get(name, 0), (int, type(None))) for name in [*counts, "ema_updates"])
        if missing or wrong or not isinstance(data.get("model"), (dict, type(None))):
            raise UsageError(
                f"{path} is damaged (missing or non-integer {', '.join(missing) or 'values'}); resume from another "
                f"checkpoint with --resume_from_checkpoint {folder.parent}/checkpoint-<step>."
            )
        return cls(**{name: data.get(name) for name in names})


def checkpoint_step(path: Path) -> int | None:
    match = re.fullmatch(re.escape(CHECKPOINT_PREFIX) + r"(\d+)", path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def list_checkpoints(checkpoints_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of interrupted saves are not checkpoints)."""
    folder = Path(checkpoints_dir)
    if not folder.is_dir():
        return []
    found = [(checkpoint_step(p), p) for p in folder.iterdir()]
    return [p for step, p in sorted((s, p) for s, p in found if s is not None)]


def latest_checkpoint(checkpoints_dir: str | os.PathLike) -> Path | None:
    checkpoints = list_checkpoints(checkpoints_dir)
    return checkpoints[-1] if checkpoints else None


def temporary_checkpoint_dir(checkpoints_dir: str | os.PathLike, step: int) -> Path:
    return Path(checkpoints_dir) / f"{TEMPORARY_PREFIX}{step}"


def commit_checkpoint(temporary: Path, checkpoints_dir: str | os.PathLike, step: int) -> Path:
    """
    Rename a fully written temporary folder to `checkpoint-<step>`: the rename is atomic, so a kill leaves either the
    old set of checkpoints or the new one, never a half-written `checkpoint-<step>`.
    """
    final = Path(checkpoints_dir) / f"{CHECKPOINT_PREFIX}{step}"
    if final.exists():  # the same step saved again (e.g. a rerun): move the old one aside first
        stale = final.with_name(f".stale-{final.name}")
        shutil.rmtree(stale, ignore_errors=True)
        os.replace(final, stale)
        os.replace(temporary, final)
        shutil.rmtree(stale, ignore_errors=True)
    else:
        os.replace(temporary, final)
    _fsync_dir(final.parent)
    return final


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported on every platform / filesystem
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def prune_checkpoints(checkpoints_dir: str | os.PathLike, total_limit: int | None) -> list[Path]:
    """Delete the oldest checkpoints beyond `total_limit`, and leftovers of interrupted saves; returns the deleted."""
    folder = Path(checkpoints_dir)
    deleted = [p for p in folder.glob(".tmp-*") if p.is_dir()] + [p for p in folder.glob(".stale-*") if p.is_dir()]
    checkpoints = list_checkpoints(folder)
    if total_limit is not None and len(checkpoints) > total_limit:
        deleted += checkpoints[: len(checkpoints) - total_limit]
    for path in deleted:
        shutil.rmtree(path, ignore_errors=True)
    return deleted
