"""Checks that need no model: everything a user can get wrong fails here, in seconds, before any work is done."""

import importlib.util
import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from ..configs import read_unet_config, resolve_pipeline_config
from ..data.decode import image_size, size_text
from ..errors import InputNotFoundError, UsageError
from ..loading import check_unet_weights
from ..options import check_ranges
from ..run_folder import CHECKPOINTS_DIR, MODEL_INDEX, SCHEDULER_CONFIG, UNET_CONFIG, is_trained_folder, read_json
from ..scheduling_ddpm_hub import VARIANCE_TYPES
from .checkpoints import TrainingState, list_checkpoints
from .options import TrainingOptions


@dataclass
class PipelineSource:
    """Where the weights come from: a configuration (fresh weights), a trained folder or a Hub repo (fine-tuning)."""

    kind: Literal["config", "folder", "hub"]
    location: str
    unet_config: dict
    scheduler_config: dict


def check_options(o: TrainingOptions) -> tuple[TrainingOptions, PipelineSource]:
    """All the checks, in order of cost; returns the options with the pipeline's defaults filled in."""
    check_ranges(o)
    o.data.check()
    check_streaming_run(o)
    check_environment(o)
    check_output_dir(o)
    source = inspect_pipeline(o.pipeline)
    o = replace(o, data=o.data.resolved(resolution=source.unet_config["sample_size"]))
    o = resolve_class_dropout(o, source)
    check_model_compatibility(o, source)
    return o, source


def check_streaming_run(o: TrainingOptions) -> None:
    """A stream has no known length, no index to hold images out by, and is read in the training process."""
    if not o.data.streaming:
        return
    refused = {
        "--max_train_steps is required (a stream's length is not known, so --num_epochs cannot set it)": (
            o.max_train_steps is None
        ),
        f"--validation_holdout {o.validation_holdout} needs a decoded dataset": o.validation_holdout > 0,
        f"--max_images {o.data.max_images} applies to decoded datasets": o.data.max_images is not None,
        f"--dataloader_num_workers {o.dataloader_num_workers} must be 0 (each rank reads its stream in order, so that "
        "a checkpoint holds its exact position)": o.dataloader_num_workers > 0,
    }
    problems = [text for text, wrong in refused.items() if wrong]
    if problems:
        raise UsageError(f"--streaming: {'; '.join(problems)}.")


def resolve_class_dropout(o: TrainingOptions, source: PipelineSource) -> TrainingOptions:
    """Label dropout applies to a class-conditional UNet only; there it defaults to 0.1 (Ho & Salimans 2022)."""
    conditional = source.unet_config.get("num_class_embeds") is not None
    if not conditional:
        if o.class_dropout_prob:
            raise UsageError(
                f"--class_dropout_prob {o.class_dropout_prob} applies to class-conditional models; {o.pipeline} has "
                "no class embedding (num_class_embeds). Use a -cond configuration, e.g. ddpm-digits-16-cond."
            )
        return o
    return o if o.class_dropout_prob is not None else replace(o, class_dropout_prob=0.1)


def check_environment(o: TrainingOptions) -> None:
    """Optional packages and the Hub token: things that would otherwise fail after the model is built."""
    if o.logger == "wandb" and importlib.util.find_spec("wandb") is None:
        raise UsageError("--logger wandb needs the wandb package (pip install wandb); or use --logger tensorboard.")
    if o.enable_xformers_memory_efficient_attention and importlib.util.find_spec("xformers") is None:
        raise UsageError(
            "--enable_xformers_memory_efficient_attention needs the xformers package (pip install xformers)."
        )
    if o.push_to_hub:
        check_can_publish(o)


def check_can_publish(o: TrainingOptions) -> None:
    """--push_to_hub: the token, its write access and the namespace are checked before training, not after it."""
    from .. import hub

    try:
        hub.check_can_publish(hub_repo_id(o), private=o.hub_private_repo)
    except hub.PublishError as error:
        raise UsageError(f"--push_to_hub: {error}") from error


def hub_repo_id(o: TrainingOptions) -> str:
    return o.hub_model_id or Path(o.output_dir).resolve().name


def check_output_dir(o: TrainingOptions) -> None:
    check_writable_folder(Path(o.output_dir), "--output_dir")
    checkpoints = list_checkpoints(Path(o.output_dir, CHECKPOINTS_DIR))
    if o.resume_from_checkpoint is None and checkpoints and not o.overwrite_output_dir:
        raise UsageError(
            f"--output_dir {o.output_dir} holds checkpoints of an earlier run ({checkpoints[-1].name}, ...). "
            "Continue it with --resume_from_checkpoint latest, start over with --overwrite_output_dir (deletes "
            "them), or choose another --output_dir."
        )
    if o.resume_from_checkpoint is not None and o.overwrite_output_dir:
        raise UsageError("--resume_from_checkpoint and --overwrite_output_dir contradict each other; give one.")
    if o.resume_from_checkpoint not in (None, "latest"):
        path = Path(o.resume_from_checkpoint)
        if not path.is_dir():
            raise InputNotFoundError(
                f"--resume_from_checkpoint {o.resume_from_checkpoint!r} is not a folder; give a "
                f"{CHECKPOINTS_DIR}/checkpoint-<step> folder or 'latest'."
            )
        TrainingState.read(path)  # not a checkpoint of this script: a message naming the folder


def check_writable_folder(folder: Path, option: str) -> None:
    """`folder` is a folder, or can be created, and a file can be written in it (a real write: root ignores modes)."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{option} {folder} is a file, not a folder; choose a folder (it is created if missing).")
    existing = next(parent for parent in (folder, *folder.parents) if parent.exists())
    if not existing.is_dir():
        raise UsageError(f"{option} {folder} cannot be created: {existing} is a file.")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise UsageError(f"{option} {folder} is not writable ({existing}: {error.strerror or error}).") from None


def inspect_pipeline(name_or_path: str) -> PipelineSource:
    """Read the UNet and scheduler configs of `--pipeline` without building anything."""
    local = Path(name_or_path)
    looks_like_repo_id = name_or_path.count("/") == 1 and not local.exists() and not name_or_path.startswith(".")
    if looks_like_repo_id:
        return _inspect_hub_repo(name_or_path)
    folder = resolve_pipeline_config(name_or_path)  # an error listing the configurations
    trained = is_trained_folder(folder)  # weights of any format: pickles are refused here, not re-initialised
    if trained:
        check_unet_weights(folder, folder, allow_pickle=False, download_kwargs={})
    scheduler_config = read_json(folder / SCHEDULER_CONFIG, "the scheduler configuration")
    if scheduler_config is None:
        raise InputNotFoundError(f"{folder} has no {SCHEDULER_CONFIG}: it is not a complete pipeline folder.")
    return PipelineSource(
        kind="folder" if trained else "config",
        location=str(folder),
        unet_config=read_unet_config(folder),
        scheduler_config=scheduler_config,
    )


def _inspect_hub_repo(repo_id: str) -> PipelineSource:
    from huggingface_hub import hf_hub_download

    try:
        configs = [hf_hub_download(repo_id, name) for name in (UNET_CONFIG, SCHEDULER_CONFIG, MODEL_INDEX)]
    except Exception as error:
        raise UsageError(
            f"--pipeline {repo_id!r} is neither a local folder, a pipelines/ configuration nor a readable Hub "
            f"pipeline repo ({type(error).__name__}: {error})."
        ) from error
    unet_config, scheduler_config = (json.loads(Path(c).read_text()) for c in configs[:2])
    return PipelineSource("hub", repo_id, unet_config, scheduler_config)


def check_model_compatibility(o: TrainingOptions, source: PipelineSource) -> None:
    unet = source.unet_config
    downsamplings = len(unet["block_out_channels"]) - 1
    multiple = 2**downsamplings
    if any(side % multiple for side in image_size(o.data.resolution)):
        raise UsageError(
            f"--resolution {size_text(o.data.resolution)} does not fit the UNet of {o.pipeline}: it halves the image "
            f"{downsamplings} times, so the resolution must be a multiple of {multiple} in height and width (its "
            f"sample_size is {unet['sample_size']})."
        )
    scheduler = {**source.scheduler_config, **scheduler_overrides(o)}
    if scheduler.get("_class_name") not in ("DDPMHubScheduler", "DDPMScheduler"):
        raise UsageError(
            f"{o.pipeline}: training needs a DDPMHubScheduler or DDPMScheduler, not {scheduler.get('_class_name')}."
        )
    variance_type = scheduler.get("variance_type", "fixed_small")
    if variance_type not in VARIANCE_TYPES:
        raise UsageError(f"{o.pipeline}: variance_type {variance_type!r} is not one of {VARIANCE_TYPES}.")
    out_channels = unet_overrides(o, source).get("out_channels", unet["out_channels"])
    wanted = unet["in_channels"] * (2 if variance_type == "learned_range" else 1)
    if out_channels != wanted:
        raise UsageError(
            f"variance_type {variance_type} needs a UNet with {wanted} output channels; the trained UNet of "
            f"{o.pipeline} has {out_channels}. Keep the pipeline's variance_type to fine-tune it."
        )
    num_timesteps = scheduler.get("num_train_timesteps", 1000)
    if o.ddpm_num_inference_steps > num_timesteps:
        raise UsageError(
            f"--ddpm_num_inference_steps {o.ddpm_num_inference_steps} exceeds the {num_timesteps} training timesteps."
        )


def scheduler_overrides(o: TrainingOptions) -> dict:
    overrides = {
        "prediction_type": o.prediction_type,
        "variance_type": o.variance_type,
        "num_train_timesteps": o.ddpm_num_steps,
        "beta_schedule": o.ddpm_beta_schedule,
    }
    return {k: v for k, v in overrides.items() if v is not None}


def unet_overrides(o: TrainingOptions, source: PipelineSource) -> dict:
    """A configuration gets the run's resolution, and 2C output channels for learned_range; trained UNets stay."""
    if source.kind != "config":
        return {}
    unet = source.unet_config
    variance_type = o.variance_type or source.scheduler_config.get("variance_type", "fixed_small")
    channels = unet["in_channels"] * (2 if variance_type == "learned_range" else 1)
    return {"sample_size": sample_size_config(o.data.resolution), "out_channels": channels}


def sample_size_config(resolution: int | tuple[int, int]) -> int | list[int]:
    """The UNet's `sample_size` for a resolution: an int when square (as the paper's configurations), else [H, W]."""
    return resolution if isinstance(resolution, int) else list(image_size(resolution))
