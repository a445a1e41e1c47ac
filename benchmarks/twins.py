"""diffusers' own DDPMPipeline on a ddpm_hub pipeline's UNet and noise schedule: what the sampling benchmarks hold
ddpm_hub's sampling against (the same weights, the same betas, diffusers' DDPMScheduler)."""

from diffusers import DDPMPipeline, DDPMScheduler


def diffusers_twin(ours) -> DDPMPipeline:
    return DDPMPipeline(unet=ours.unet, scheduler=DDPMScheduler.from_config(ours.scheduler.config))
