"""ddpm_hub: DDPM (Ho et al. 2020) as a Hugging Face diffusers extension: train, evaluate, publish, load."""

from .cascade import DDPMHubCascadePipeline
from .pipeline import DDPMHubImg2ImgPipeline, DDPMHubInpaintPipeline, DDPMHubPipeline, DDPMHubSuperResolutionPipeline
from .scheduling_ddpm_hub import DDPMHubScheduler, DDPMHubSchedulerOutput
from .version import __version__

__all__ = [
    "DDPMHubCascadePipeline",
    "DDPMHubImg2ImgPipeline",
    "DDPMHubInpaintPipeline",
    "DDPMHubPipeline",
    "DDPMHubScheduler",
    "DDPMHubSuperResolutionPipeline",
    "DDPMHubSchedulerOutput",
    "__version__",
]
