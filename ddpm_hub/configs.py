"""Pipeline configurations as data: `pipelines/<name>/` folders laid out like Hub pipeline repos without weights.

A folder holds `model_index.json`, `unet/config.json` and `scheduler/scheduler_config.json`; `build_pipeline` turns it
into a freshly initialised `DDPMHubPipeline`.
"""

import json
import os
from pathlib import Path

import torch
from diffusers import UNet2DModel

from .pipeline_ddpm_hub import MODEL_INDEX, DDPMHubPipeline

# The configurations that ship with the repository (found when ddpm_hub runs from a checkout or editable install).
PIPELINES_DIR = Path(__file__).resolve().parent.parent / "pipelines"


def available_pipelines() -> list[str]:
    """Names of the configuration folders under `pipelines/`."""
    if not PIPELINES_DIR.is_dir():
        return []
    return sorted(p.name for p in PIPELINES_DIR.iterdir() if (p / MODEL_INDEX).is_file())


def resolve_pipeline_config(name_or_path: str | os.PathLike) -> Path:
    """A folder path, or the name of a folder under `pipelines/` (e.g. `ddpm-digits-16`)."""
    for candidate in (Path(name_or_path), PIPELINES_DIR / str(name_or_path)):
        if (candidate / MODEL_INDEX).is_file():
            return candidate
    raise FileNotFoundError(
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
    index = json.loads((folder / MODEL_INDEX).read_text())
    unet_config = {**UNet2DModel.load_config(folder / "unet"), **(unet_overrides or {})}
    _, scheduler_name = index["scheduler"]
    scheduler_class = DDPMHubPipeline._scheduler_classes.get(scheduler_name)
    if scheduler_class is None:
        import diffusers

        scheduler_class = getattr(diffusers, scheduler_name)
    scheduler_config = {**scheduler_class.load_config(folder / "scheduler"), **(scheduler_overrides or {})}
    if seed is not None:
        torch.manual_seed(seed)
    unet = UNet2DModel.from_config(unet_config).eval()  # as from_pretrained returns it; training sets train()
    return DDPMHubPipeline(unet=unet, scheduler=scheduler_class.from_config(scheduler_config))


def load_or_build_pipeline(model: str, seed: int | None = 0) -> DDPMHubPipeline:
    """
    A trained pipeline folder or a Hub repo id (`DDPMHubPipeline.from_pretrained`), or else an untrained
    configuration (a `pipelines/<name>` folder or name, through `build_pipeline`): what the command line accepts as
    MODEL.
    """
    trained = any(Path(model, "unet").glob("*.safetensors"))
    configuration = Path(model).exists() or model in available_pipelines()
    if trained or not configuration:
        return DDPMHubPipeline.from_pretrained(model)
    return build_pipeline(model, seed=seed)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
