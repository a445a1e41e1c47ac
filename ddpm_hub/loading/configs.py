"""Pipeline configurations as data: `pipelines/<name>/` folders laid out like Hub pipeline repos without weights.

A folder holds `model_index.json`, `unet/config.json` and `scheduler/scheduler_config.json`; `build_components` turns
it into components with fresh weights. Which name means which folder, repo or configuration:
`ddpm_hub.pipelines.Source`.
"""

import hashlib
import os
from pathlib import Path

import torch

from ..errors import DDPMHubError, InputNotFoundError, UsageError
from ..resources import resource_path
from ..run_folder import MODEL_INDEX, UNET_CONFIG, is_pipeline_folder, read_json
from .components import (
    PIPELINE_SETTINGS,
    check_component_folder,
    component_class,
    components_of,
    read_model_index,
    scheduler_class,
)

# The configurations that ship with ddpm_hub: the checkout's top-level pipelines/, or their copy inside a wheel.
PIPELINES_DIR = resource_path("pipelines")


def available_pipelines() -> list[str]:
    """Names of the configuration folders under `pipelines/`."""
    if not PIPELINES_DIR.is_dir():
        return []
    return sorted(p.name for p in PIPELINES_DIR.iterdir() if is_pipeline_folder(p))


def configuration_folder(name_or_path: str | os.PathLike) -> Path:
    """A folder path, or the name of a folder under `pipelines/` (e.g. `ddpm-digits-16`)."""
    for candidate in (Path(name_or_path), PIPELINES_DIR / str(name_or_path)):
        if is_pipeline_folder(candidate):
            return Path(candidate)
    raise InputNotFoundError(
        f"No pipeline configuration at {str(name_or_path)!r}: expected a folder with {MODEL_INDEX}, unet/config.json "
        f"and scheduler/scheduler_config.json, or one of the names {', '.join(available_pipelines()) or '(none)'}."
    )


def build_components(
    folder: Path, seed: int | None = 0, unet_overrides: dict | None = None, scheduler_overrides: dict | None = None
) -> tuple[dict, dict]:
    """
    `(model index, components and settings)` of a pipeline folder with fresh weights: each component built from its
    config with the installed class the index names (`ddpm_hub.pipelines.Source.build` makes the pipeline of them).

    Args:
        folder: a folder with `model_index.json` and the components' configs (a configuration, or a trained folder's).
        seed: seeds the weight initialisation (`None` leaves the global RNG alone).
        unet_overrides / scheduler_overrides: config values to replace, e.g. `{"sample_size": 8}`.
    """
    index = read_model_index(folder)
    unet_class = component_class(index["unet"], folder / MODEL_INDEX)
    unet_config = {**read_unet_config(folder), **(unet_overrides or {})}
    scheduler_type = scheduler_class(index["scheduler"], folder / MODEL_INDEX)
    scheduler_config = {**scheduler_type.load_config(folder / "scheduler"), **(scheduler_overrides or {})}
    if seed is not None:
        torch.manual_seed(seed)
    try:
        unet = unet_class.from_config(unet_config).eval()  # as from_pretrained returns it; training sets train()
        scheduler = scheduler_type.from_config(scheduler_config)
        others = {
            name: build_component(folder, name, entry)
            for name, entry in components_of(index).items()
            if name not in ("unet", "scheduler")
        }
    except DDPMHubError:  # a component folder missing or incomplete: already named
        raise
    except (ValueError, TypeError, KeyError, OSError) as error:
        raise UsageError(f"{folder}: the configuration cannot be built: {error}") from error
    settings = {key: index[key] for key in PIPELINE_SETTINGS if key in index}  # e.g. a super-resolution's scale
    return index, {"unet": unet, "scheduler": scheduler, **others, **settings}


def build_component(folder: Path, name: str, entry: list):
    """
    A component other than the UNet and the scheduler, from its folder: a transformers model with fresh weights from
    its `config.json` (after the UNet, from the same seeded generator; a T5 encoder's heads started at the offsets
    its config names, `ddpm_hub.loading.text.start_heads_at_offsets`), a tokenizer from its files; None if absent.
    """
    if entry[0] is None:
        return None
    klass = component_class(entry, folder / MODEL_INDEX)
    check_component_folder(folder / name, name, entry, klass, folder)  # never a path taken for a Hub repo id
    import transformers
    from diffusers.models.modeling_utils import ModelMixin

    if issubclass(klass, ModelMixin):  # e.g. a latent configuration's autoencoder: its shape, fresh weights
        return klass.from_config(klass.load_config(folder / name)).eval()
    if issubclass(klass, transformers.PreTrainedModel):
        from .text import start_heads_at_offsets

        return start_heads_at_offsets(klass(klass.config_class.from_pretrained(folder / name))).eval()
    return klass.from_pretrained(folder / name)


def read_unet_config(folder: str | os.PathLike) -> dict:
    """`unet/config.json` of a pipeline folder, with the keys the project relies on checked."""
    path = Path(folder, UNET_CONFIG)
    config = read_json(path, "the UNet configuration")
    if config is None:
        raise InputNotFoundError(f"{folder} has no {UNET_CONFIG}: it is not a complete pipeline folder.")
    missing = [key for key in UNET_KEYS if key not in config]
    if missing:
        raise UsageError(f"{path} lacks {', '.join(missing)}: a UNet configuration needs them.")
    for key, (valid, accepted) in UNET_KEYS.items():
        if not valid(config[key]):
            raise UsageError(f"{path}: {key} must be {accepted}, got {config[key]!r}.")
    return config


def _positive(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _positive_list(value, length: int | None = None) -> bool:
    return isinstance(value, list) and len(value) == (length or len(value)) > 0 and all(map(_positive, value))


# The keys the project relies on: each one's check and what it accepts.
UNET_KEYS = {
    "sample_size": (
        lambda value: _positive(value) or _positive_list(value, 2),
        "a positive integer or a [height, width] pair of them",
    ),
    "in_channels": (_positive, "a positive integer"),
    "out_channels": (_positive, "a positive integer"),
    "block_out_channels": (_positive_list, "a non-empty list of positive integers"),
}


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def weights_checksum(module: torch.nn.Module) -> str:
    """sha256 of every tensor of the state dict, in key order: equal iff the weights are bit-identical."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
