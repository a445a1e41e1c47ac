"""ddpm_hub: DDPM (Ho et al. 2020) as a Hugging Face diffusers extension: train, evaluate, publish, load."""

from .pipeline_ddpm_hub import DDPMHubPipeline
from .scheduling_ddpm_hub import DDPMHubScheduler, DDPMHubSchedulerOutput

# Loading a repo whose model_index.json names DDPMHubScheduler uses this installed class, not the shipped file.
DDPMHubPipeline.register_scheduler_class(DDPMHubScheduler)

__version__ = "0.1.0"

__all__ = ["DDPMHubPipeline", "DDPMHubScheduler", "DDPMHubSchedulerOutput", "__version__"]
