"""ddpm_hub: DDPM (Ho et al. 2020) as a Hugging Face diffusers extension: train, evaluate, publish, load."""

from .pipeline import DDPMHubPipeline
from .scheduling_ddpm_hub import DDPMHubScheduler, DDPMHubSchedulerOutput
from .version import __version__

__all__ = ["DDPMHubPipeline", "DDPMHubScheduler", "DDPMHubSchedulerOutput", "__version__"]
