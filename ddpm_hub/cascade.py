"""`DDPMHubCascadePipeline`: a base model and one or more super-resolution stages, each upsampling the previous
stage's samples (Imagen's and DALL-E 2's cascades; Ho et al. 2021, Cascaded Diffusion Models).

    cascade = DDPMHubCascadePipeline.from_pretrained("runs/ddpm-digits-16", ["runs/ddpm-sr-16-to-64"])
    images = cascade(batch_size=4, num_inference_steps=[250, 100], noise_level=[None, 50]).images

Each stage is a folder or a Hub repo id. The condition arguments (class labels, prompts) go to every stage that takes
them; each stage has its own steps and (for the super-resolution stages) noise level. Image i uses the generator of
image i (`ddpm_hub.sampling.image_generator`) in every stage, so a cascade's images are reproducible and the base
stage's samples are exactly what the base model alone gives.
"""

import warnings
from dataclasses import dataclass

import torch

from .errors import UsageError
from .pipeline import DDPMHubPipeline, DDPMHubSuperResolutionPipeline
from .resolver import load_pipeline


@dataclass
class CascadeOutput:
    """The final images, and every stage's samples (`stages[0]` the base's), as the last stage's `output_type`."""

    images: object
    stages: list


class DDPMHubCascadePipeline:
    """A base pipeline and super-resolution stages, checked to fit one another (sizes and channels) when built."""

    def __init__(self, base: DDPMHubPipeline, stages: list[DDPMHubSuperResolutionPipeline]):
        if not stages:
            raise UsageError("A cascade needs at least one super-resolution stage after the base model.")
        self.base, self.stages = base, list(stages)
        self.check()

    @classmethod
    def from_pretrained(cls, base: str, stages: list[str], device: str | None = None) -> "DDPMHubCascadePipeline":
        """The base and the stages from folders or Hub repo ids (`ddpm_hub.resolver`)."""
        pipelines = [load_pipeline(name) for name in (base, *stages)]
        for name, pipeline in zip(stages, pipelines[1:]):
            if not isinstance(pipeline, DDPMHubSuperResolutionPipeline):
                raise UsageError(f"{name} is not a super-resolution model (its model_index.json names none).")
        if device is not None:
            pipelines = [pipeline.to(device) for pipeline in pipelines]
        return cls(pipelines[0], pipelines[1:])

    def set_progress_bar_config(self, **kwargs) -> None:
        for pipeline in (self.base, *self.stages):
            pipeline.set_progress_bar_config(**kwargs)

    def sizes(self) -> list[tuple[int, int, int]]:
        """(channels, height, width) of every stage's output, the base's first."""
        _, channels, height, width = self.base.sample_shape(1)
        sizes = [(channels, height, width)]
        for stage in self.stages:
            scale = stage.config.low_res_scale
            sizes.append((stage.unet.config.in_channels // 2, sizes[-1][1] * scale, sizes[-1][2] * scale))
        return sizes

    def check(self) -> None:
        """Each stage takes the previous output's size; a change of channels (gray to RGB) is converted and said."""
        sizes = self.sizes()
        for i, stage in enumerate(self.stages):
            channels, height, width = sizes[i + 1]
            stage.check_size((height, width))
            if channels != sizes[i][0]:
                warnings.warn(
                    f"Stage {i + 1} takes {channels} channels and stage {i} gives {sizes[i][0]}: its input is "
                    "converted.",
                    stacklevel=3,
                )

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int | None = None,
        generator: list[torch.Generator] | None = None,
        num_inference_steps: int | list[int] = 100,
        noise_level: int | None | list[int | None] = None,
        output_type: str = "pil",
        **conditions,
    ) -> CascadeOutput:
        """
        Sample the base, then upsample stage by stage. `num_inference_steps` and `noise_level` are one value for
        every stage or a list with one per stage (the base's noise level is ignored); `conditions` (`class_labels`,
        `prompt`, `guidance_scale`, ...) go to every stage whose model takes them.
        """
        count = 1 + len(self.stages)
        steps = num_inference_steps if isinstance(num_inference_steps, list) else [num_inference_steps] * count
        levels = noise_level if isinstance(noise_level, list) else [noise_level] * count
        if len(steps) != count or len(levels) != count:
            raise UsageError(f"num_inference_steps and noise_level: one value, or one per stage ({count}).")
        stages = []
        images = self.base(
            batch_size=batch_size, generator=generator, num_inference_steps=steps[0], output_type="pt",
            **self._taken(self.base, conditions),
        ).images  # fmt: skip
        stages.append(images)
        for stage, stage_steps, level in zip(self.stages, steps[1:], levels[1:]):
            images = stage(
                image=images, noise_level=level, generator=generator, num_inference_steps=stage_steps,
                output_type="pt", **self._taken(stage, conditions),
            ).images  # fmt: skip
            stages.append(images)
        last = self.stages[-1]
        if output_type != "pt":
            stages = [last.output(image * 2 - 1, output_type, True).images for image in stages]
        return CascadeOutput(stages[-1], stages)

    @staticmethod
    def _taken(pipeline, conditions: dict) -> dict:
        """The condition arguments a stage's model takes (guidance only where it has a guided kind)."""
        arguments = set(pipeline.conditioning.call_arguments)
        taken = {name: value for name, value in conditions.items() if name in arguments}
        if "guidance_scale" in conditions and any(kind.guided for kind in pipeline.conditioning.kinds):
            taken["guidance_scale"] = conditions["guidance_scale"]
        return taken
