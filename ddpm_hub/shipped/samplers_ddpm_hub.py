# Copyright 2026 The ddpm_hub authors. Apache License 2.0.
"""Which scheduler walks which chain: the DDPM family (`is_ddpm_family`), the DDPM chain under the fast sampler a
trained model ships with (`ddpm_chain`), and the warning before a scheduler set to a chain known to draw noise
(`warn_if_noise`). Shipped with `pipeline_ddpm_hub.py` in every published repo, so self-contained: torch and diffusers.
"""

import inspect
import warnings

from diffusers import DDPMScheduler


# Copied from ddpm_hub.shipped.scheduling_ddpm_hub.is_ddpm_family (tests/test_conditioning.py checks the copy)
def is_ddpm_family(scheduler) -> bool:
    """
    A DDPM-family scheduler (an instance or a class): DDPMHubScheduler (installed, or loaded from a repo's shipped
    file) or diffusers' DDPMScheduler. Their steps are the ancestral steps of the DDPM chain, stateless (any timestep
    in any order: RePaint walks back and forth), and they carry the variance type that the likelihood and a learned
    variance need; DDIM, DPM-Solver and the other samplers do not.
    """
    klass = scheduler if isinstance(scheduler, type) else type(scheduler)
    return bool(getattr(klass, "ddpm_family", False)) or issubclass(klass, DDPMScheduler)


def ddpm_chain(scheduler):
    """
    The DDPM chain of a pipeline's scheduler, for what needs its ancestral steps (RePaint, the likelihood): the
    scheduler itself when DDPM-family; for the fast sampler a trained model ships with (UniPC, built from its chain's
    config, which it carries: `variance_type`), diffusers' `DDPMScheduler` on that chain (the same steps), its own
    timestep spacing and thresholding back (`CHAIN_SETTINGS`); else None (a swapped-in sampler, a distilled student).
    """
    if is_ddpm_family(scheduler):
        return scheduler
    if not carries_ddpm_chain(type(scheduler).__name__, scheduler.config):
        return None
    return DDPMScheduler.from_config({**scheduler.config, **CHAIN_SETTINGS})


def carries_ddpm_chain(class_name: str, config) -> bool:
    """A scheduler class and config that are a trained model's fast default sampler, built from its chain's config."""
    return class_name == "UniPCMultistepScheduler" and config.get("variance_type") is not None


# A first step whose x_0 = (x_t - sigma eps) / alpha multiplies the model's error by more than this draws noise unless
# x_0 is clipped: DPM-Solver++ at "trailing" timesteps on the cosine schedule (t = 999: 1 / alpha = 20,000) gave 65.7
# times the floor on the README's main job (benchmarks/sampler_choice.py); at "leading" ones (t = 950: 13) 2.05.
MAX_UNCLIPPED_AMPLIFICATION = 1000.0


def warn_if_noise(scheduler) -> None:
    """
    Warn before sampling with a scheduler set to a chain known to draw noise: an epsilon model's first x_0 read where
    alpha is so small that the model's error is amplified past `MAX_UNCLIPPED_AMPLIFICATION`, with no clipping
    (`clip_sample` of a scheduler that takes it, or `thresholding`).
    """
    config = scheduler.config
    accepted = inspect.signature(type(scheduler).__init__).parameters
    clipped = config.get("thresholding") or ("clip_sample" in accepted and config.get("clip_sample"))
    alphas_cumprod = getattr(scheduler, "alphas_cumprod", None)
    if clipped or config.get("prediction_type") != "epsilon" or alphas_cumprod is None or not len(scheduler.timesteps):
        return
    first = int(scheduler.timesteps[0])
    amplification = float(alphas_cumprod[first]) ** -0.5
    if amplification > MAX_UNCLIPPED_AMPLIFICATION:
        warnings.warn(
            f"{type(scheduler).__name__} starts at t = {first}, where x_0 = (x_t - sigma eps) / alpha multiplies the "
            f"model's error by {amplification:,.0f} and nothing clips it: expect noise. Use timestep_spacing "
            "'leading', or thresholding=True (a pixel model's x_0 lies in [-1, 1]), as the scheduler a trained "
            "model ships with does.",
            stacklevel=3,
        )


# What the fast default sampler changes of its chain's config: the chain's own values (a trained model's).
CHAIN_SETTINGS = {"timestep_spacing": "leading", "thresholding": False}
