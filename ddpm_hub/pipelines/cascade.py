"""`DDPMHubCascadePipeline`: a base model and one or more super-resolution stages, each upsampling the previous
stage's samples (Imagen's and DALL-E 2's cascades; Ho et al. 2021, Cascaded Diffusion Models).

    cascade = DDPMHubCascadePipeline.from_pretrained("runs/ddpm-digits-16", ["runs/ddpm-sr-16-to-64"])
    images = cascade(batch_size=4, num_inference_steps=[250, 100], noise_level=[None, 50]).images

The base may be an unCLIP folder (DALL-E 2: the prior and the decoder, then the super-resolution stages): it takes the
`prompt` and its own `prior_guidance_scale`, `decoder_guidance_scale`, `prior_num_inference_steps` and
`prior_num_candidates`, and `num_inference_steps[0]` is its decoder's.

Each stage is a folder or a Hub repo id. The condition arguments (class labels, prompts) go to every stage that takes
them; each stage has its own steps and (for the super-resolution stages) noise level. Image i uses the generator of
image i (`ddpm_hub.pipelines.sampling.image_generator`) in every stage, so a cascade's images are reproducible and the
base stage's samples are exactly what the base model alone gives.
"""

import warnings
from dataclasses import dataclass

import torch

from ..errors import UsageError, refused_as_usage
from ..shipped.pipeline_ddpm_hub import OUTPUT_TYPES
from .library import DDPMHubPipeline, DDPMHubSuperResolutionPipeline, DDPMHubUnCLIPPipeline, is_unclip
from .source import Source

# The arguments of a cascade call besides the condition arguments of its stages' models.
CALL_ARGUMENTS = ("batch_size", "generator", "num_inference_steps", "noise_level", "output_type", "guidance_scale")
# What an unCLIP base takes (`DDPMHubUnCLIPPipeline.__call__`'s names), its guidance scales its own.
UNCLIP_ARGUMENTS = (
    "prompt", "prior_guidance_scale", "decoder_guidance_scale", "prior_num_inference_steps", "prior_num_candidates",
)  # fmt: skip


@dataclass
class CascadeOutput:
    """The final images, and every stage's samples (`stages[0]` the base's), as the last stage's `output_type`."""

    images: object
    stages: list


class DDPMHubCascadePipeline:
    """A base pipeline and super-resolution stages, checked to fit one another (sizes and channels) when built."""

    def __init__(self, base: DDPMHubPipeline, stages: list[DDPMHubSuperResolutionPipeline]):
        if not isinstance(stages, (list, tuple)):
            raise UsageError(
                f"stages must be a list of super-resolution pipelines, one per stage after the base, got "
                f"{type(stages).__name__}: DDPMHubCascadePipeline(base, [stage])."
            )
        if not stages:
            raise UsageError("A cascade needs at least one super-resolution stage after the base model.")
        self.base, self.stages = base, list(stages)
        self.check()

    @classmethod
    def from_pretrained(cls, base: str, stages: list[str], device: str | None = None) -> "DDPMHubCascadePipeline":
        """The base and the stages from folders or Hub repo ids (`ddpm_hub.pipelines.Source`)."""
        source = Source.of(base)
        unclip = is_unclip(source.model_index)  # the prior and the decoder: every component, not the decoder's alone
        pipelines = [DDPMHubUnCLIPPipeline.from_pretrained(source.folder) if unclip else source.load()]
        pipelines += [Source.of(name).load() for name in stages]
        for name, pipeline in zip(stages, pipelines[1:]):
            if not isinstance(pipeline, DDPMHubSuperResolutionPipeline):
                raise UsageError(f"{name} is not a super-resolution model (its model_index.json names none).")
        if device is not None:
            pipelines = [pipeline.to(device) for pipeline in pipelines]
        return cls(pipelines[0], pipelines[1:])

    @property
    def pipelines(self) -> list[DDPMHubPipeline]:
        """The base, then the stages."""
        return [self.base, *self.stages]

    def set_progress_bar_config(self, **kwargs) -> None:
        for pipeline in self.pipelines:
            pipeline.set_progress_bar_config(**kwargs)

    def sizes(self) -> list[tuple[int, int, int]]:
        """(channels, height, width) of every stage's output, the base's first."""
        _, channels, height, width = self.base.sample_shape(1)
        sizes = [(channels, height, width)]
        for stage in self.stages:
            scale = stage.config.low_res_scale
            sizes.append((stage.image_channels, sizes[-1][1] * scale, sizes[-1][2] * scale))
        return sizes

    def check(self) -> None:
        """
        The base samples from noise, every stage is a super-resolution pipeline that takes the previous output's
        size, and no stage drops colour (an RGB output into a grayscale stage is refused; gray into RGB is converted
        and said).
        """
        if not isinstance(self.base, DDPMHubPipeline) or isinstance(self.base, DDPMHubSuperResolutionPipeline):
            raise UsageError(
                f"The base of a cascade samples images from noise (a DDPMHubPipeline), not a "
                f"{type(self.base).__name__}."
            )
        for i, stage in enumerate(self.stages, start=1):
            if not isinstance(stage, DDPMHubSuperResolutionPipeline):
                raise UsageError(
                    f"Stage {i} of the cascade is a {type(stage).__name__}, not a super-resolution pipeline "
                    "(DDPMHubSuperResolutionPipeline): every stage after the base upsamples the previous one's images."
                )
        sizes = self.sizes()
        for i, stage in enumerate(self.stages, start=1):
            channels, height, width = sizes[i]
            with stage_errors(i):
                stage.check_size((height, width))
            if channels != sizes[i - 1][0] and sizes[i - 1][0] != 1:
                raise UsageError(
                    f"Stage {i} takes {channels}-channel images and stage {i - 1} gives {sizes[i - 1][0]}: a cascade "
                    "does not drop channels (an RGB base into a grayscale stage). Use a stage of the base's channels."
                )
            if channels != sizes[i - 1][0]:
                warnings.warn(
                    f"Stage {i} takes {channels} channels and stage {i - 1} gives {sizes[i - 1][0]}: its input is "
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
        every stage or a list with one per stage (the base takes no noise level: None there); `conditions`
        (`class_labels`, `prompt`, `guidance_scale`, ...) go to every stage whose model takes them. Every argument of
        every stage is checked before the base samples: a keyword no stage takes is refused.
        """
        steps = self.per_stage(num_inference_steps, "num_inference_steps")
        levels = self.per_stage(noise_level, "noise_level", base_takes_it=False)
        self.check_call(steps, levels, output_type, conditions)
        batch_size = self.batch_size(batch_size, generator, conditions)
        stages = []
        if isinstance(self.base, DDPMHubUnCLIPPipeline):  # one image per prompt
            taken = self._taken(self.base, conditions)
            prompt = taken.pop("prompt")
            prompts = [prompt] * (batch_size or 1) if isinstance(prompt, str) else list(prompt)
            images = self.base(
                prompt=prompts, generator=generator, decoder_num_inference_steps=steps[0], output_type="pt", **taken
            ).images
        else:
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

    def per_stage(self, value, name: str, base_takes_it: bool = True) -> list:
        """
        One value for every stage, or a list of one per stage, the base's first; for an argument the base does not
        take (`noise_level`), one value is the stages' and a list has None for the base.
        """
        count = len(self.pipelines)
        if not isinstance(value, (list, tuple)):
            return [value if base_takes_it else None] + [value] * (count - 1)
        if len(value) != count:
            raise UsageError(
                f"{name}: one value, or a list of one per stage ({count}: the base, then {count - 1} "
                f"super-resolution), got {len(value)} values."
            )
        if not base_takes_it and value[0] is not None:
            raise UsageError(f"{name}[0] is the base's, which takes none: pass None there, got {value[0]!r}.")
        return list(value)

    def accepted(self) -> list[str]:
        """The keywords a call takes: the cascade's own, and the condition arguments of its stages' models."""
        taken = [name for pipeline in self.pipelines for name in self.condition_arguments(pipeline)]
        return list(dict.fromkeys([*CALL_ARGUMENTS, *taken]))

    def check_call(self, steps: list, levels: list, output_type: str, conditions: dict) -> None:
        """
        Every stage's arguments, before the base samples: keywords no stage takes, steps and noise levels, and the
        conditions each stage's model is given.
        """
        accepted = self.accepted()
        unknown = sorted(name for name in conditions if name not in accepted)
        if unknown:
            raise UsageError(
                f"{', '.join(unknown)}: no stage of this cascade takes it; the cascade takes {', '.join(accepted)}."
            )
        if output_type not in OUTPUT_TYPES:
            raise UsageError(f"Unknown output_type {output_type!r}; valid choices are: {', '.join(OUTPUT_TYPES)}.")
        scale = conditions.get("guidance_scale", 1.0)
        unclip = isinstance(self.base, DDPMHubUnCLIPPipeline)
        guided = any(kind.guided for pipeline in self.pipelines[unclip:] for kind in pipeline.conditioning.kinds)
        if scale != 1.0 and not guided:
            raise UsageError(
                f"guidance_scale={scale!r}: no stage of this cascade takes a condition to guide (class_labels or a "
                "prompt)"
                + (
                    "; the unCLIP base's scales are prior_guidance_scale and decoder_guidance_scale."
                    if unclip
                    else "."
                )
            )
        sizes = self.sizes()
        for i, pipeline in enumerate(self.pipelines):
            with stage_errors(i), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the stage itself warns when it runs
                pipeline.check_num_inference_steps(steps[i])
                if isinstance(pipeline, DDPMHubUnCLIPPipeline):
                    check_prompt(conditions.get("prompt"))
                    continue
                inputs = {name: conditions.get(name) for name in self.condition_arguments(pipeline)}
                if i > 0:
                    pipeline.check_noise_level(levels[i])
                    inputs["low_res"] = torch.zeros(1, *sizes[i - 1])  # what it will be given: the previous output
                pipeline.conditioning.check(inputs, self._taken(pipeline, conditions).get("guidance_scale", 1.0))

    def batch_size(self, batch_size: int | None, generator, conditions: dict) -> int | None:
        """
        The number of images of every stage: given, else one per generator of a list, else what the conditions
        describe; conditions of another count for any stage are refused before the base samples.
        """
        described = {
            pipeline.conditioning.batch_size(self._taken(pipeline, conditions), default=0)
            for pipeline in self.pipelines
        } - {0, 1}
        if batch_size is None:
            batch_size = len(generator) if isinstance(generator, list) else max(described, default=None)
        wrong = sorted(described - {batch_size})
        if wrong and batch_size is not None:
            raise UsageError(
                f"The conditions describe {wrong[0]} images and the cascade makes {batch_size} (batch_size, or one "
                "per generator): give one condition for all, or one per image."
            )
        return batch_size

    @staticmethod
    def condition_arguments(pipeline) -> list[str]:
        """The condition arguments a user gives a stage (the low-resolution image is the cascade's to give)."""
        if isinstance(pipeline, DDPMHubUnCLIPPipeline):
            return list(UNCLIP_ARGUMENTS)
        return [name for kind in pipeline.conditioning.kinds if kind.name != "low_res" for name in kind.call_arguments]

    @classmethod
    def _taken(cls, pipeline, conditions: dict) -> dict:
        """The condition arguments a stage's model takes (guidance only where it has a guided kind)."""
        arguments = set(cls.condition_arguments(pipeline))
        taken = {name: value for name, value in conditions.items() if name in arguments}
        unclip = isinstance(pipeline, DDPMHubUnCLIPPipeline)  # its own prior_ and decoder_guidance_scale
        if "guidance_scale" in conditions and not unclip and any(kind.guided for kind in pipeline.conditioning.kinds):
            taken["guidance_scale"] = conditions["guidance_scale"]
        return taken


def stage_errors(index: int):
    """A stage's refusal (a ValueError of its pipeline) as a `UsageError` that names the stage."""
    return refused_as_usage(f"Stage {index} of the cascade ({'the base' if index == 0 else 'super-resolution'})")


def check_prompt(prompt) -> None:
    """An unCLIP base draws from a prompt: a string, or a non-empty list of strings."""
    texts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(texts, (list, tuple)) or not texts or not all(isinstance(text, str) for text in texts):
        raise UsageError(
            f"The base of this cascade is an unCLIP pipeline: give prompt (a string or one per image), got {prompt!r}."
        )
