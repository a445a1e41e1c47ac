"""Pipeline configurations as data: `pipelines/<name>/` folders laid out like Hub pipeline repos without weights.

A folder holds `model_index.json`, `unet/config.json` and `scheduler/scheduler_config.json`; `build_pipeline` turns it
into a freshly initialised `DDPMHubPipeline`.
"""

import os
from pathlib import Path

import torch
from diffusers import UNet2DModel
from huggingface_hub.errors import HfHubHTTPError

from .errors import DDPMHubError, InputNotFoundError, UsageError
from .loading import read_model_index, scheduler_class
from .pipeline import DDPMHubPipeline
from .resources import resource_path
from .run_folder import MODEL_INDEX, UNET_CONFIG, is_pipeline_folder, is_trained_folder, read_json

# The configurations that ship with ddpm_hub: the checkout's top-level pipelines/, or their copy inside a wheel.
PIPELINES_DIR = resource_path("pipelines")


def available_pipelines() -> list[str]:
    """Names of the configuration folders under `pipelines/`."""
    if not PIPELINES_DIR.is_dir():
        return []
    return sorted(p.name for p in PIPELINES_DIR.iterdir() if is_pipeline_folder(p))


def resolve_pipeline_config(name_or_path: str | os.PathLike) -> Path:
    """A folder path, or the name of a folder under `pipelines/` (e.g. `ddpm-digits-16`)."""
    for candidate in (Path(name_or_path), PIPELINES_DIR / str(name_or_path)):
        if is_pipeline_folder(candidate):
            return candidate
    raise InputNotFoundError(
        f"No pipeline configuration at {str(name_or_path)!r}: expected a folder with {MODEL_INDEX}, unet/config.json "
        f"and scheduler/scheduler_config.json, or one of the names {', '.join(available_pipelines()) or '(none)'}."
    )


def build_pipeline(
    name_or_path: str | os.PathLike,
    seed: int | None = 0,
    unet_overrides: dict | None = None,
    scheduler_overrides: dict | None = None,
) -> DDPMHubPipeline:
    """
    A randomly initialised `DDPMHubPipeline` from a configuration folder.

    Args:
        name_or_path: a folder, or a name under `pipelines/`.
        seed: seeds the weight initialisation (`None` leaves the global RNG alone).
        unet_overrides / scheduler_overrides: config values to replace, e.g. `{"sample_size": 8}`.
    """
    folder = resolve_pipeline_config(name_or_path)
    unet_config = {**read_unet_config(folder), **(unet_overrides or {})}
    scheduler_type = scheduler_class(read_model_index(folder)["scheduler"], folder / MODEL_INDEX)
    scheduler_config = {**scheduler_type.load_config(folder / "scheduler"), **(scheduler_overrides or {})}
    if seed is not None:
        torch.manual_seed(seed)
    try:
        unet = UNet2DModel.from_config(unet_config).eval()  # as from_pretrained returns it; training sets train()
        scheduler = scheduler_type.from_config(scheduler_config)
    except (ValueError, TypeError, KeyError) as error:
        raise UsageError(f"{folder}: the configuration cannot be built: {error}") from error
    return DDPMHubPipeline(unet=unet, scheduler=scheduler)


def read_unet_config(folder: str | os.PathLike) -> dict:
    """`unet/config.json` of a pipeline folder, with the keys the project relies on checked."""
    path = Path(folder, UNET_CONFIG)
    config = read_json(path, "the UNet configuration")
    if config is None:
        raise InputNotFoundError(f"{folder} has no {UNET_CONFIG}: it is not a complete pipeline folder.")
    missing = [key for key in UNET_KEYS if key not in config]
    if missing:
        raise UsageError(f"{path} lacks {', '.join(missing)}: a UNet2DModel configuration needs them.")
    return config


UNET_KEYS = ("sample_size", "in_channels", "out_channels", "block_out_channels")


def load_or_build_pipeline(model: str, seed: int | None = 0) -> DDPMHubPipeline:
    """
    A trained pipeline folder or a Hub repo id (`DDPMHubPipeline.from_pretrained`), or else an untrained
    configuration (a `pipelines/<name>` folder or name, through `build_pipeline`): what the command line accepts as
    MODEL. "Trained" is what the folder is (UNet weights of any format), so a folder of pickle weights is refused with
    a message, never re-initialised. A Hub or file failure becomes a `ModelLoadError` naming MODEL.
    """
    configuration = is_pipeline_folder(model) or model in available_pipelines()
    if not is_trained_folder(model) and configuration:
        return build_pipeline(model, seed=seed)
    try:
        return DDPMHubPipeline.from_pretrained(model)
    except DDPMHubError:
        raise
    except (HfHubHTTPError, OSError, ValueError) as error:  # Hub errors (worded by ddpm_hub.loading), files, JSON
        raise ModelLoadError(f"cannot load {model}: {error}") from error


class ModelLoadError(DDPMHubError):
    """MODEL could not be loaded (a missing or private repo, an unreachable Hub, a broken file)."""

    exit_code = 2


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
