"""From a name to a pipeline, one way: `Source.of(name)`, then `.load()` (the weights it holds) or `.build()` (fresh).

A name is, in this order:

1. a local pipeline folder (a `model_index.json`): *trained* when it has UNet weights (of any format: a folder of
   pickles is refused with a message when loaded, never mistaken for a configuration and re-initialised), else a
   *configuration* (fresh weights);
2. the name of a configuration under `pipelines/` (`ddpm-digits-16`);
3. a Hub repo id (`namespace/name`), read from the Hub (`HF_ENDPOINT`, the token of the environment): a repo saved by
   ddpm_hub, or a diffusers `DDPMPipeline` repo (google/ddpm-cifar10-32's layout), which loads as a `DDPMHubPipeline`.

`Source.of` reads the configs only (no weights: training and the commands check everything against them before any
work); `load` gives the pipeline the source holds, `build` a pipeline of the same configuration with fresh weights.
The command line (MODEL), training (`--pipeline`, `--distill_from`), evaluation, cascades and the benchmarks all go
through it. Loading a folder or repo the diffusers way, `DDPMHubPipeline.from_pretrained`, is what `load` calls.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from huggingface_hub.errors import HfHubHTTPError

from ..errors import DDPMHubError, InputNotFoundError, UsageError
from ..loading.components import check_weights, components_of, pipeline_folder, read_model_index
from ..loading.configs import available_pipelines, build_components, configuration_folder, read_unet_config
from ..loading.settings import LoadSettings
from ..run_folder import SCHEDULER_CONFIG, is_pipeline_folder, is_trained_folder, read_json
from ..shipped.samplers_ddpm_hub import ddpm_chain
from ..shipped.scheduling_ddpm_hub import DDPMHubScheduler
from .conditioning import TrainingConditioning
from .library import pipeline_class


class ModelLoadError(DDPMHubError):
    """MODEL could not be loaded (a missing or private repo, an unreachable Hub, a broken file)."""

    exit_code = 2


@dataclass(frozen=True)
class Source:
    """
    Where a pipeline comes from and what its configs say: a configuration, a trained folder, or a Hub repo.

        >>> from ddpm_hub.pipelines import Source
        >>> source = Source.of("ddpm-digits-16")          # a configuration: source.trained is False
        >>> pipeline = source.build(seed=0)               # fresh weights, the same for the same seed
        >>> trained = Source.of("runs/ddpm-digits-16")    # a training run's output folder, or "user/repo"
        >>> pipeline = trained.load()                     # its weights
    """

    name: str  # as it was given
    kind: Literal["config", "folder", "hub"]
    location: str  # the folder, or the repo id
    folder: Path  # where the configs were read: the folder itself, or a snapshot of the repo's JSON files
    model_index: dict
    unet_config: dict
    scheduler_config: dict
    settings: LoadSettings = LoadSettings()  # the revision, variant and dtype its weights are loaded with

    @classmethod
    def of(cls, name: str | os.PathLike, settings: LoadSettings | None = None) -> "Source":
        """
        The source a name points to (see the module docstring), its configs read and checked; no weights loaded.
        `settings`: the revision of a Hub repo, and the variant and dtype `load` reads the weights in.
        """
        name, settings = str(name), settings or LoadSettings()
        try:
            if is_pipeline_folder(Path(name)) or name in available_pipelines():
                folder = configuration_folder(name)
                trained = is_trained_folder(folder)
                if trained:  # weights of any format: pickles are refused here, not re-initialised
                    check_weights(folder, "unet", folder, allow_pickle=False, download_kwargs={})
                return cls._read(name, "folder" if trained else "config", str(folder), folder, settings)
            if looks_like_repo_id(name):
                folder = pipeline_folder(name, config_only=True, **settings.download())
                return cls._read(name, "hub", name, folder, settings)
        except DDPMHubError:
            raise
        except (HfHubHTTPError, OSError, ValueError) as error:  # Hub errors (worded by ddpm_hub.loading), files, JSON
            raise ModelLoadError(f"cannot load {name}{settings.described()}: {error}") from error
        configuration_folder(name)  # raises: the error lists the configurations
        raise AssertionError("unreachable")

    @classmethod
    def _read(cls, name: str, kind: str, location: str, folder: Path, settings: LoadSettings) -> "Source":
        index = read_model_index(folder, location)
        scheduler_config = read_json(folder / SCHEDULER_CONFIG, "the scheduler configuration")
        if scheduler_config is None:
            raise InputNotFoundError(f"{location} has no {SCHEDULER_CONFIG}: it is not a complete pipeline folder.")
        return cls(name, kind, location, folder, index, read_unet_config(folder), scheduler_config, settings)

    @property
    def trained(self) -> bool:
        return self.kind != "config"

    @property
    def components(self) -> dict[str, list]:
        return components_of(self.model_index)

    def conditioning(self) -> TrainingConditioning:
        """What the model is conditioned on (`ddpm_hub.pipelines.conditioning`), from its configs."""
        return TrainingConditioning.of(self.unet_config, self.model_index, self.components)

    def build(self, seed: int | None = 0, unet_overrides: dict | None = None, scheduler_overrides: dict | None = None):
        """
        A pipeline of this source's configuration with fresh weights, seeded by `seed` (`None` leaves the global RNG
        alone): the class its index names, each component built from its config with the installed class, in the
        settings' dtype. Overrides replace config values, e.g. `unet_overrides={"sample_size": 8}`.
        """
        index, components = build_components(self.folder, seed, unet_overrides, scheduler_overrides)
        pipeline = pipeline_class(index)(**components)
        return pipeline if self.settings.dtype is None else pipeline.to(dtype=self.settings.dtype)

    def load(self, seed: int | None = 0, unet_overrides: dict | None = None, scheduler_overrides: dict | None = None):
        """
        The pipeline this source holds: a trained folder's or repo's weights (at the settings' revision, variant and
        dtype), or a configuration built fresh from `seed` (to check the plumbing). A trained UNet takes only a new
        `sample_size` from `unet_overrides` (its weights fix the rest); a trained pipeline's scheduler is rebuilt as a
        `DDPMHubScheduler` with `scheduler_overrides`. A Hub or file failure is a `ModelLoadError` naming the source.
        """
        if not self.trained:
            return self.build(seed, unet_overrides, scheduler_overrides)
        try:
            pipeline = pipeline_class(self.model_index).from_pretrained(
                self.location, **self.settings.from_pretrained()
            )
        except DDPMHubError:
            raise
        except (HfHubHTTPError, OSError, ValueError) as error:  # Hub errors (worded by ddpm_hub.loading), files, JSON
            raise ModelLoadError(f"cannot load {self.name}{self.settings.described()}: {error}") from error
        sample_size = (unet_overrides or {}).get("sample_size")
        if sample_size is not None and sample_size != pipeline.unet.config.sample_size:
            pipeline.unet.register_to_config(sample_size=sample_size)
        if scheduler_overrides is not None:
            chain = ddpm_chain(pipeline.scheduler) or pipeline.scheduler  # a fast default sampler's chain
            pipeline.scheduler = DDPMHubScheduler.from_config({**chain.config, **scheduler_overrides})
        return pipeline

    def refuse_super_resolution(self, command: str, instead: str = "") -> None:
        """
        `command` draws images from noise alone (sample, inpaint, img2img, FID): a super-resolution model (its UNet
        takes a low-resolution image: it upsamples a given image) is refused, with what to use instead.
        """
        low_res = self.conditioning().low_res
        if low_res is None:
            return
        name = self.name
        raise UsageError(
            f"{name} is a super-resolution model (it upsamples a given image {low_res.scale}x), which {command} "
            f"cannot use: it needs a model that draws images from noise. Upsample images with `ddpm-hub upscale "
            f"{name} IMAGE...`, or a base model's samples with `ddpm-hub sample BASE --upscale {name}`{instead}."
        )


def looks_like_repo_id(name: str) -> bool:
    """`namespace/name`, not a local path (which exists, or starts with `.` or `/`)."""
    return name.count("/") == 1 and not Path(name).exists() and not name.startswith((".", "/"))
