"""`ddpm-hub sample BASE --upscale SR [--upscale SR2]`: a base model's images (a DDPM's, or an unCLIP folder's from
its prompts) upsampled stage by stage, a row per stage (`ddpm_hub.pipelines.cascade`)."""

import argparse

import torch

from ..errors import UsageError
from ..loading.settings import LoadSettings
from ..pictures import strip, to_pil
from ..pipelines.conditioning import ImageConditions
from ..pipelines.library import DDPMHubSuperResolutionPipeline
from ..pipelines.source import Source
from .common import generators, save


def sample_cascade(pipeline, args: argparse.Namespace, conditions: ImageConditions, call_kwargs: dict) -> int:
    """`ddpm-hub sample BASE --upscale SR [--upscale SR2]`: a row per stage, the same images upsampled."""
    from ..pipelines.cascade import DDPMHubCascadePipeline

    in_dtype = LoadSettings(torch_dtype=args.torch_dtype)  # --revision and --variant are MODEL's; the dtype is all's
    stages = [Source.of(name, in_dtype).load(seed=args.seed).to(args.device) for name in args.upscale]
    for name, stage in zip(args.upscale, stages):
        if not isinstance(stage, DDPMHubSuperResolutionPipeline):
            raise UsageError(f"--upscale {name}: it is not a super-resolution model.")
    cascade = DDPMHubCascadePipeline(pipeline, stages)
    steps = [args.steps] + [args.upscale_steps] * len(stages)
    output = cascade(
        generator=generators(args), batch_size=args.num_images, num_inference_steps=steps,
        noise_level=args.noise_level, output_type="pt", **conditions.inputs,
        **{key: call_kwargs[key] for key in ("guidance_scale", "prior_guidance_scale") if key in call_kwargs},
    )  # fmt: skip
    size = output.images.shape[-2:]
    rows = []
    for images in output.stages:  # enlarged (nearest) to the last stage's size, in its channels
        enlarged = torch.nn.functional.interpolate(images, size=size, mode="nearest")
        if enlarged.shape[1] != output.images.shape[1]:
            enlarged = enlarged.expand(-1, output.images.shape[1], -1, -1)
        rows.append(to_pil(enlarged * 2 - 1))
    return save(strip(rows, args.scale), args, num_images=args.num_images, stages=[args.model, *args.upscale])
