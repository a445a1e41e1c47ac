"""Sampling many images: the sampler table, and one function that samples images i..j with one seeding rule.

    pipeline = with_sampler(DDPMHubPipeline.from_pretrained("runs/ddpm-digits-16"), "dpmsolver++")
    images = sample_images(pipeline, range(16), seed=0, call_kwargs={"num_inference_steps": 20})  # uint8

The seeding rule: image i is drawn from `torch.Generator("cpu").manual_seed(seed + i)` (its x_T and every noise of
its chain), whatever the batch size, the number of processes, the device or the interruptions, so that image i is the
same in the grid of `ddpm-hub sample`, the files of `ddpm-hub sample --output_dir`, the samples `ddpm-hub eval`
scores and the grids of a training run. A conditional model's image i gets the condition the caller gives for it, by
default the kinds' cycle (`TrainingConditioning.default_inputs`: class i mod classes).
"""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, LCMScheduler, UniPCMultistepScheduler

from ..errors import UsageError
from ..pictures import to_uint8
from ..shipped.samplers_ddpm_hub import ddpm_chain
from ..shipped.scheduling_ddpm_hub import DDPMHubScheduler


@dataclass(frozen=True)
class SamplerKind:
    """A reverse process: the scheduler class, the options it is built with, and how tables name it."""

    scheduler_class: type
    label: str
    options: dict = field(default_factory=dict)


SAMPLERS: dict[str, SamplerKind] = {
    "ddpm": SamplerKind(DDPMHubScheduler, "DDPM ancestral"),
    "ddim": SamplerKind(DDIMScheduler, "DDIM (eta = 0)"),
    "dpmsolver++": SamplerKind(
        DPMSolverMultistepScheduler, "DPM-Solver++ (2M)", {"algorithm_type": "dpmsolver++", "solver_order": 2}
    ),
    "sde-dpmsolver++": SamplerKind(
        DPMSolverMultistepScheduler,
        "SDE-DPM-Solver++ (2M, stochastic)",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
    ),
    "unipc": SamplerKind(UniPCMultistepScheduler, "UniPC"),
    "lcm": SamplerKind(LCMScheduler, "LCM (consistency student)"),  # a consistency-distilled student's own sampler
}


# The sampler a trained pixel-space model is saved with, and its steps (`default_sampler`). Measured on the README's
# main job (benchmarks/sampler_choice.py, distance to the floor at 20 calls): UniPC on "trailing" timesteps with its
# x_0 clipped (thresholding at the chain's clip range) 1.17; DPM-Solver++ so 1.30, DDIM trailing 1.43, DDPM ancestral
# 2.91. Its 20 calls are the pipeline's default; the chain stays in its config (`ddpm_chain`).
DEFAULT_SAMPLER_STEPS = 20


def default_sampler(pipeline):
    """
    The scheduler a trained model is saved with: UniPC at trailing timesteps, clipping x_0 as its chain does, for a
    pixel-space DDPM whose chain clips and whose variance is fixed (the measured case); None (keep the DDPM chain's
    scheduler) for a latent model (its latents are not clipped), a learned variance (a sampler without it would drop
    it), a super-resolution model (its chain's quality was measured with DDPM), a chain that thresholds already, and
    a beta schedule of ddpm_hub's own.
    """
    config = pipeline.scheduler.config
    eligible = (
        getattr(pipeline, "vae", None) is None
        and config.get("clip_sample", False)
        and not config.get("thresholding", False)
        and config.get("variance_type", "fixed_small") in ("fixed_small", "fixed_large")
        and pipeline.conditioning.get("low_res") is None
    )
    if not eligible:
        return None
    try:  # diffusers' schedules only: a chain of ddpm_hub's own (sigmoid) keeps its scheduler, as the shipped code
        sampler = UniPCMultistepScheduler.from_config(  # reads the chain back with diffusers' DDPMScheduler
            config, timestep_spacing="trailing", thresholding=True, sample_max_value=config.get("clip_sample_range", 1)
        )
    except NotImplementedError:
        return None
    return sampler if torch.equal(sampler.alphas_cumprod, pipeline.scheduler.alphas_cumprod) else None


@dataclass(frozen=True)
class Sampler:
    """A sampler of `SAMPLERS` and its number of steps, written NAME-STEPS (`ddim-50`)."""

    name: str
    steps: int

    @property
    def label(self) -> str:
        return SAMPLERS[self.name].label

    def __str__(self) -> str:
        return f"{self.name}-{self.steps}"

    @classmethod
    def parse(cls, text: str) -> "Sampler":
        """`"ddim-50"` -> Sampler("ddim", 50)."""
        name, _, steps = text.strip().rpartition("-")
        if name not in SAMPLERS or not steps.isdigit() or int(steps) < 1:
            raise UsageError(
                f"Unknown sampler {text!r}: write NAME-STEPS with NAME one of {', '.join(SAMPLERS)} "
                "(e.g. ddpm-250, ddim-50, dpmsolver++-20)."
            )
        return cls(name, int(steps))


def with_sampler(pipeline, name: str):
    """
    `pipeline` with the sampler `name`: a new pipeline of the same class sharing every component but the scheduler
    (diffusers' `from_pipe`), built by `XScheduler.from_config(scheduler.config)` (a trained model's fast default
    sampler's chain: `ddpm_chain`); progress bars off.
    """
    if name not in SAMPLERS:
        raise UsageError(f"Unknown sampler {name!r}; valid choices are: {', '.join(SAMPLERS)}.")
    kind = SAMPLERS[name]
    chain = ddpm_chain(pipeline.scheduler) or pipeline.scheduler  # from the chain's settings, not a default sampler's
    scheduler = kind.scheduler_class.from_config(chain.config, **kind.options)
    swapped = type(pipeline).from_pipe(pipeline, scheduler=scheduler)
    swapped.set_progress_bar_config(disable=True)
    return swapped


def image_generator(seed: int, index: int) -> torch.Generator:
    """The generator of image `index`: the one seeding rule (a CPU generator: the same images on every device)."""
    return torch.Generator().manual_seed(seed + index)


def sample_batches(
    pipeline,
    indices: Iterable[int],
    seed: int = 0,
    batch_size: int = 64,
    inputs: Callable[[list[int]], dict] | None = None,
    call_kwargs: dict | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """
    `(indices, images)` batch by batch: images uint8 `[B x C x H x W]` (round(255 x), as PIL saves them), image i
    from `image_generator(seed, i)` with the condition arguments `inputs(batch indices)` (default: the model's cycle,
    class i mod classes) and the other call arguments `call_kwargs` (`num_inference_steps`, `guidance_scale`, ...).
    `progress` wraps the list of batches (a tqdm).
    """
    indices = list(indices)
    inputs = inputs or pipeline.conditioning.default_inputs
    batches = [indices[start : start + batch_size] for start in range(0, len(indices), batch_size)]
    for batch in progress(batches) if progress else batches:
        output = pipeline(
            batch_size=len(batch),
            generator=[image_generator(seed, i) for i in batch],
            output_type="pt",
            **inputs(batch),
            **(call_kwargs or {}),
        )
        yield batch, to_uint8(output.images).cpu()


def sample_images(pipeline, indices: Iterable[int], seed: int = 0, batch_size: int = 64, **kwargs) -> torch.Tensor:
    """Images `indices` as one uint8 tensor `[N x C x H x W]`; see `sample_batches` for the arguments."""
    batches = [images for _, images in sample_batches(pipeline, indices, seed, batch_size, **kwargs)]
    return torch.cat(batches)
