"""From a name to a pipeline: the one resolver of the command line (MODEL) and of training (`--pipeline`).

A name is, in this order:

1. a local pipeline folder (a `model_index.json`): *trained* when it has UNet weights (of any format: a folder of
   pickles is refused with a message when loaded, never mistaken for a configuration and re-initialised), else a
   *configuration* (fresh weights);
2. the name of a configuration under `pipelines/` (`ddpm-digits-16`);
3. a Hub repo id (`namespace/name`), read from the Hub (`HF_ENDPOINT`, the token of the environment).

`resolve_pipeline` reads the configs only (no weights: training checks everything against them before any work);
`PipelineSource.pipeline` builds (a configuration) or loads (a trained folder or repo) the pipeline, with the run's
overrides; `load_pipeline` does both for the command line, and words every failure as one `ModelLoadError`.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from huggingface_hub.errors import HfHubHTTPError

from ..errors import DDPMHubError, InputNotFoundError, UsageError
from ..loading.components import check_weights, components_of, pipeline_folder, read_model_index
from ..loading.configs import available_pipelines, build_pipeline, read_unet_config, resolve_pipeline_config
from ..run_folder import SCHEDULER_CONFIG, is_pipeline_folder, is_trained_folder, read_json


class ModelLoadError(DDPMHubError):
    """MODEL could not be loaded (a missing or private repo, an unreachable Hub, a broken file)."""

    exit_code = 2


@dataclass(frozen=True)
class PipelineSource:
    """Where a pipeline comes from and what its configs say: a configuration, a trained folder, or a Hub repo."""

    kind: Literal["config", "folder", "hub"]
    location: str  # the folder, or the repo id
    model_index: dict
    unet_config: dict
    scheduler_config: dict

    @property
    def trained(self) -> bool:
        return self.kind != "config"

    @property
    def components(self) -> dict[str, list]:
        return components_of(self.model_index)

    def conditioning(self):
        """What the model is conditioned on (`ddpm_hub.pipelines.conditioning.Conditioning`), from its configs."""
        from .conditioning import Conditioning

        return Conditioning.of(self.unet_config, self.model_index, self.components)

    def pipeline(
        self, seed: int | None = 0, unet_overrides: dict | None = None, scheduler_overrides: dict | None = None
    ):
        """
        The pipeline: a configuration built with fresh weights from `seed`, or the trained one loaded. Overrides
        replace config values: a configuration takes all of them; a trained UNet only a new `sample_size` (its
        weights fix the rest), and a trained pipeline's scheduler is rebuilt as a `DDPMHubScheduler` with them.
        """
        from ..shipped.scheduling_ddpm_hub import DDPMHubScheduler
        from .library import pipeline_class

        if not self.trained:
            return build_pipeline(self.location, seed, unet_overrides, scheduler_overrides)
        pipeline = pipeline_class(self.model_index).from_pretrained(self.location)
        sample_size = (unet_overrides or {}).get("sample_size")
        if sample_size is not None and sample_size != pipeline.unet.config.sample_size:
            pipeline.unet.register_to_config(sample_size=sample_size)
        if scheduler_overrides is not None:
            pipeline.scheduler = DDPMHubScheduler.from_config({**pipeline.scheduler.config, **scheduler_overrides})
        return pipeline


def resolve_pipeline(name: str | os.PathLike) -> PipelineSource:
    """The source a name points to (see the module docstring), its configs read and checked; no weights loaded."""
    name = str(name)
    local = Path(name)
    if is_pipeline_folder(local) or name in available_pipelines():
        folder = resolve_pipeline_config(name)
        trained = is_trained_folder(folder)
        if trained:  # weights of any format: pickles are refused here, not re-initialised
            check_weights(folder, "unet", folder, allow_pickle=False, download_kwargs={})
        return _read_source("folder" if trained else "config", str(folder), folder)
    if looks_like_repo_id(name):
        try:
            snapshot = pipeline_folder(name, config_only=True)
        except (HfHubHTTPError, OSError, ValueError) as error:
            raise ModelLoadError(f"cannot load {name}: {error}") from error
        return _read_source("hub", name, snapshot)
    resolve_pipeline_config(name)  # raises: the error lists the configurations
    raise AssertionError("unreachable")


def looks_like_repo_id(name: str) -> bool:
    """`namespace/name`, not a local path (which exists, or starts with `.` or `/`)."""
    return name.count("/") == 1 and not Path(name).exists() and not name.startswith((".", "/"))


def _read_source(kind: str, location: str, folder: Path) -> PipelineSource:
    index = read_model_index(folder, location)
    scheduler_config = read_json(folder / SCHEDULER_CONFIG, "the scheduler configuration")
    if scheduler_config is None:
        raise InputNotFoundError(f"{location} has no {SCHEDULER_CONFIG}: it is not a complete pipeline folder.")
    return PipelineSource(kind, location, index, read_unet_config(folder), scheduler_config)


def load_pipeline(name: str | os.PathLike, seed: int | None = 0, command: str | None = None):
    """
    What the command line accepts as MODEL: a trained folder or Hub repo loaded, or a configuration built fresh from
    `seed` (to check the plumbing). A Hub or file failure becomes a `ModelLoadError` naming MODEL. With `command`
    (`ddpm-hub sample`: a command that draws images from noise), a super-resolution model is refused
    (`refuse_super_resolution`).
    """
    try:
        source = resolve_pipeline(name)
        if command is not None:  # from the configs, before any weights are read
            refuse_super_resolution(source.conditioning(), name, command)
        return source.pipeline(seed)
    except DDPMHubError:
        raise
    except (
        HfHubHTTPError,
        OSError,
        ValueError,
    ) as error:  # Hub errors (worded by ddpm_hub.loading.components), files, JSON
        raise ModelLoadError(f"cannot load {name}: {error}") from error


def refuse_super_resolution(conditioning, name: str | os.PathLike, command: str, instead: str = "") -> None:
    """
    `command` draws images from noise alone (sample, inpaint, img2img, FID): a model whose `conditioning` has a
    low-resolution image (super-resolution: it upsamples a given image) is refused, with what to use instead.
    """
    low_res = conditioning.low_res
    if low_res is None:
        return
    raise UsageError(
        f"{name} is a super-resolution model (it upsamples a given image {low_res.scale}x), which {command} cannot "
        "use: it needs a model that draws images from noise. Upsample images with "
        f"`ddpm-hub upscale {name} IMAGE...`, or a base model's samples with `ddpm-hub sample BASE --upscale {name}`"
        f"{instead}."
    )
