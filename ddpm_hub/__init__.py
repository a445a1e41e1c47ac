"""ddpm_hub: DDPM (Ho et al. 2020) as a Hugging Face diffusers extension: train, evaluate, publish, load.

The package by concern (each sub-package's docstring says what lives there and what it may import; the layering is
written in docs/internals.md):

- `ddpm_hub.shipped`: the self-contained files a published repo carries (scheduler, pipelines, conditioning);
- `ddpm_hub.loading`: folders, configurations and Hub repos read into components;
- `ddpm_hub.data`: datasets decoded once into the on-disk cache, or streamed;
- `ddpm_hub.pipelines`: the pipelines users import, cascades, samplers, and `Source` (a name to a pipeline);
- `ddpm_hub.evaluation`: bits/dim, FID/KID, the sampler sweep, accuracies, exported samples;
- `ddpm_hub.hub`: publishing and the model card;
- `ddpm_hub.training`: the Accelerate training run (`accelerate launch training/train.py`, `ddpm-hub train`);
- `ddpm_hub.cli`: the `ddpm-hub` command line, one module per command.
"""

import importlib
import importlib.abc
import importlib.util
import sys

from .pipelines import (
    DDPMHubCascadePipeline,
    DDPMHubImg2ImgPipeline,
    DDPMHubInpaintPipeline,
    DDPMHubPipeline,
    DDPMHubSuperResolutionPipeline,
    DDPMHubUnCLIPImageVariationPipeline,
    DDPMHubUnCLIPPipeline,
    Source,
)
from .shipped.scheduling_ddpm_hub import DDPMHubScheduler, DDPMHubSchedulerOutput
from .version import __version__

__all__ = [
    "DDPMHubCascadePipeline",
    "DDPMHubImg2ImgPipeline",
    "DDPMHubInpaintPipeline",
    "DDPMHubPipeline",
    "DDPMHubScheduler",
    "DDPMHubSuperResolutionPipeline",
    "DDPMHubSchedulerOutput",
    "DDPMHubUnCLIPImageVariationPipeline",
    "DDPMHubUnCLIPPipeline",
    "Source",
    "__version__",
]

# Modules that lived at the package's root until 0.1 (059b148), by their new place: `import ddpm_hub.pipeline_ddpm_hub`
# (or a pickle naming it) still gives the module, now `ddpm_hub.shipped.pipeline_ddpm_hub`.
MOVED_MODULES = {
    **{
        f"ddpm_hub.{name}": f"ddpm_hub.shipped.{name}"
        for name in (
            "scheduling_ddpm_hub",
            "pipeline_ddpm_hub",
            "pipeline_ddpm_hub_img2img",
            "pipeline_ddpm_hub_inpaint",
            "pipeline_ddpm_hub_superres",
            "conditioning_ddpm_hub",
            "image_processing_ddpm_hub",
        )
    },
    "ddpm_hub.pipeline": "ddpm_hub.pipelines.library",
    "ddpm_hub.conditioning": "ddpm_hub.pipelines.conditioning",
    "ddpm_hub.cascade": "ddpm_hub.pipelines.cascade",
    "ddpm_hub.sampling": "ddpm_hub.pipelines.sampling",
    "ddpm_hub.resolver": "ddpm_hub.pipelines.source",
    "ddpm_hub.configs": "ddpm_hub.loading.configs",
    "ddpm_hub.text": "ddpm_hub.loading.text",
    "ddpm_hub.hub_errors": "ddpm_hub.loading.hub_errors",
    "ddpm_hub.model_card": "ddpm_hub.hub.model_card",
    "ddpm_hub.likelihood": "ddpm_hub.evaluation.likelihood",
    "ddpm_hub.metrics": "ddpm_hub.evaluation.metrics",
    "ddpm_hub.digit_classifier": "ddpm_hub.evaluation.digit_classifier",
    "ddpm_hub.export": "ddpm_hub.evaluation.export",
    "ddpm_hub.images": "ddpm_hub.pictures",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path as the module at its new place (the same module object, not a copy)."""

    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED_MODULES else None

    def create_module(self, spec):
        return importlib.import_module(MOVED_MODULES[spec.name])

    def exec_module(self, module):
        pass


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())
