"""The pipelines users import, and the one way from a name to a pipeline.

- `library`: `DDPMHubPipeline` and its task pipelines (inpainting, img2img, super-resolution, unCLIP image
  variations): the sampling code of
  the shipped files (`ddpm_hub.shipped`) plus loading, saving and publishing with the installed package;
- `conditioning`, `condition_kinds`: the library side of a model's conditioning (`TrainingConditioning`) and of its
  kinds (`TrainingClassCondition`, ...): data, dropout for guidance, grids, the card's words;
- `cascade`: a base model followed by super-resolution stages;
- `sampling`: samplers by name and image i drawn from seed + i, the same in every command;
- `source`: `Source`, a configuration, a trained folder or a Hub repo by name, with one `load` and one `build`.

Layer: imports loading, data, `ddpm_hub.shipped` and the root modules. Two calls reach upward when they are made
(`DDPMHubPipeline.push_to_hub` and `.likelihood`, the user's handles on publishing and evaluation).
"""

from .cascade import DDPMHubCascadePipeline
from .library import (
    DDPMHubImg2ImgPipeline,
    DDPMHubInpaintPipeline,
    DDPMHubPipeline,
    DDPMHubSuperResolutionPipeline,
    DDPMHubUnCLIPImageVariationPipeline,
    DDPMHubUnCLIPPipeline,
)
from .source import ModelLoadError, Source

__all__ = [
    "DDPMHubCascadePipeline",
    "DDPMHubImg2ImgPipeline",
    "DDPMHubInpaintPipeline",
    "DDPMHubPipeline",
    "DDPMHubSuperResolutionPipeline",
    "DDPMHubUnCLIPImageVariationPipeline",
    "DDPMHubUnCLIPPipeline",
    "ModelLoadError",
    "Source",
]
