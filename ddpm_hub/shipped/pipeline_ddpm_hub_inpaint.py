# Copyright 2026 The ddpm_hub authors. Apache License 2.0.
"""DDPMHubInpaintPipeline: inpainting by RePaint (Lugmayr et al. 2022) with any trained DDPM, no retraining.

At every reverse step the known pixels are drawn from the forward process, q(x_{t-1} | x_0) (DDPM eq. 4), and the
unknown ones from the model, p(x_{t-1} | x_t) (Algorithm 2); the two are joined by the mask. Resampling lets the
model harmonise them: every `jump_length` steps the chain goes back up `jump_length` steps by the forward process,
q(x_{t'} | x_t), and down again, `jump_n_sample - 1` times. A latent model (a pipeline with a `vae`) runs RePaint on
the image's latents: the image is encoded (the posterior's mean), the mask brought to the latent grid (a latent is
known only where every pixel it stands for is known), the known latents re-imposed at every step, and the result
decoded; its known pixels are then the decoder's, not the input's (docs/control.md measures the difference).

Shipped next to `pipeline_ddpm_hub.py` in every published repo; plain diffusers loads it with
`DiffusionPipeline.from_pretrained(repo_id, custom_pipeline="pipeline_ddpm_hub_inpaint", trust_remote_code=True)`.
"""

import inspect
from collections.abc import Callable
from typing import Any, Literal

import torch
from diffusers import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

# Imported here too, not only through pipeline_ddpm_hub: diffusers copies a local folder's code files one import deep.
from .call_arguments_ddpm_hub import DEFAULT_CALLBACK_TENSOR_INPUTS, check_noise, repeat_each, repeat_per_prompt
from .condition_batch_ddpm_hub import Guided  # noqa: F401
from .conditioning_ddpm_hub import Conditioning  # noqa: F401
from .image_embeds_ddpm_hub import ImageEmbedsCondition  # noqa: F401
from .image_processing_ddpm_hub import convert_mode  # noqa: F401
from .latents_ddpm_hub import decode, encode, latent_mask  # noqa: F401
from .pipeline_ddpm_hub import ClassLabels, DDPMHubPipeline, prompt_arguments
from .samplers_ddpm_hub import ddpm_chain


def repaint_levels(num_steps: int, jump_length: int, jump_n_sample: int) -> list[int]:
    """
    The levels of the chain RePaint walks, from `num_steps` (x_T) down to 0 (x_0): one level down per reverse step;
    at each jump point (every `jump_length` levels from 0, below num_steps - jump_length), `jump_n_sample - 1` times
    back up `jump_length` levels. UNet calls: num_steps + (number of jump points) (jump_n_sample - 1) jump_length.
    """
    jumps_left = {level: jump_n_sample - 1 for level in range(0, num_steps - jump_length, jump_length)}
    level, levels = num_steps, [num_steps]
    while level > 0:
        level -= 1
        levels.append(level)
        if jumps_left.get(level, 0) > 0:
            jumps_left[level] -= 1
            for _ in range(jump_length):
                level += 1
                levels.append(level)
    return levels


class DDPMHubInpaintPipeline(DDPMHubPipeline):
    """
    Inpainting with a DDPM: RePaint. Built from a loaded pipeline with `DDPMHubInpaintPipeline.from_pipe(pipeline)`
    or loaded from the same folders and repos as `DDPMHubPipeline`. Works with unconditional and class-conditional
    models, with guidance. Needs a stateless ancestral scheduler (`DDPMHubScheduler`, `DDPMScheduler`).

    Examples:
        ```py
        >>> from ddpm_hub import DDPMHubInpaintPipeline

        >>> pipeline = DDPMHubInpaintPipeline.from_pretrained("runs/ddpm-digits-16")
        >>> completed = pipeline(image=digit, mask_image=right_half_white, num_inference_steps=100).images[0]
        ```
    """

    @torch.no_grad()
    def __call__(
        self,
        image,
        mask_image,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 250,
        jump_length: int = 10,
        jump_n_sample: int = 10,
        class_labels: ClassLabels = None,
        guidance_scale: float = 1.0,
        output_type: Literal["pil", "np", "pt"] = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = DEFAULT_CALLBACK_TENSOR_INPUTS,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        num_images_per_prompt: int = 1,
        latents: torch.Tensor | None = None,
    ) -> ImagePipelineOutput | tuple:
        """
        Args:
            image: the image(s) to complete: PIL of any mode (16-bit and float images scaled to [0, 1], alpha
                composited on white, as training decodes), numpy `[H x W (x C)]` (uint8, uint16, bool, or floats in
                [0, 1]), or torch `[(N x) C x H x W]` (uint8, or floats in [0, 1]); any size, each resized to the
                model's (with a warning).
            mask_image: diffusers' conventions: white (1) = the region to generate, black (0) = the pixels to keep,
                binarised at 0.5. A PIL mask is read in "L" / 255 (a transparent pixel counts as black: kept); a
                numpy or torch mask as its values, so that a uint8 mask of 0/1 and one of 0/255 both work. Any size.
                The kept pixels of the result equal the input's exactly (in [0, 1], up to float32 rounding: 1e-6); a
                latent model keeps the latents whose pixels are all kept, and its kept pixels are their decoding.
            num_inference_steps (`int`, defaults to 250): the (respaced) chain, as in RePaint's experiments.
            jump_length (`int`, defaults to 10) and jump_n_sample (`int`, defaults to 10): RePaint's resampling;
                jump_n_sample = 1 turns it off.
            num_images_per_prompt (`int`, defaults to 1): completions of each image, prompt or class label
                (diffusers' order: i0, i0, i1, i1).
            latents (`torch.Tensor` `[N x C x H x W]`, *optional*): x_T, the chain's start (RePaint draws the noise
                of its later steps and jumps from `generator`).
            Others: as `DDPMHubPipeline.__call__`; one image and mask serve every class label or prompt given.
        """
        if not (
            isinstance(jump_length, int) and jump_length >= 1 and isinstance(jump_n_sample, int) and jump_n_sample >= 1
        ):
            raise ValueError(
                f"jump_length and jump_n_sample must be integers >= 1, got {jump_length}, {jump_n_sample}."
            )
        chain_scheduler = ddpm_chain(self.scheduler)
        if chain_scheduler is None:
            raise ValueError(
                f"RePaint steps the chain back and forth, which needs a stateless ancestral scheduler "
                f"(DDPMHubScheduler or DDPMScheduler), not {type(self.scheduler).__name__}."
            )
        if chain_scheduler is not self.scheduler:  # a fast sampler shipped as the default: RePaint walks the chain
            repaint = type(self).from_pipe(self, scheduler=chain_scheduler)
            repaint.set_progress_bar_config(**getattr(self, "_progress_bar_config", {}))
            arguments = {name: value for name, value in locals().items() if name in PARAMETERS}
            return repaint(**arguments)
        callback = self.step_callback(callback_on_step_end, callback_on_step_end_tensor_inputs)
        conditions = {"class_labels": class_labels, **prompt_arguments(locals())}
        conditions = repeat_per_prompt(conditions, num_images_per_prompt)
        x_0 = self.preprocess(image, self.image_channels) * 2 - 1  # [N x C x H x W] in [-1, 1]
        keep = self.preprocess_mask(mask_image) == 0  # [N x 1 x H x W], True = known pixel
        if self.vae is not None:  # z'_0 [N x c x h x w], and True = a latent whose pixels are all known
            x_0 = encode(self.vae, x_0).to(device=self.device, dtype=self.unet.dtype)
            keep = latent_mask(keep, tuple(x_0.shape[-2:])) > 0.5
        described = any(conditions[name] is not None for name in ("class_labels", "prompt", "prompt_embeds"))
        images = self.conditioning.batch_size(conditions, num_images_per_prompt) if described else None
        x_0, keep = repeat_each(x_0, num_images_per_prompt), repeat_each(keep, num_images_per_prompt)
        images = images or max(len(x_0), len(keep), num_images_per_prompt)
        guided, batch_size = self.prepare_condition(images, guidance_scale, **conditions)
        if {len(x_0), len(keep)} - {1, batch_size}:
            raise ValueError(
                f"Got {len(x_0)} images and {len(keep)} masks for {batch_size} samples; pass one or one each."
            )
        x_0, keep = x_0.expand(batch_size, *x_0.shape[1:]), keep.expand(batch_size, *x_0.shape[1:])
        step_kwargs = self.check_inputs(batch_size, generator, 0.0, output_type, num_inference_steps)
        check_noise(latents, x_0.shape, "latents")

        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        chain = self.scheduler.timesteps  # level l >= 1 is timestep chain[K - l]; level 0 is x_0 (alpha-bar 1)
        alpha_bars = [1.0] + [float(self.scheduler.alphas_cumprod[int(t)]) for t in chain.flip(0)]
        levels = repaint_levels(len(chain), jump_length, jump_n_sample)

        def noise_like():
            return randn_tensor(x_0.shape, generator=generator, device=self.device, dtype=self.unet.dtype)

        x = noise_like() if latents is None else latents.to(device=self.device, dtype=self.unet.dtype)
        x = x * self.scheduler.init_noise_sigma  # level K: x_T ~ N(0, I)
        down = 0
        self.start_chain(guided, len(chain))  # the K reverse steps; the jumps up are not counted
        for level, next_level in self.progress_bar(list(zip(levels, levels[1:]))):
            if self.interrupt:
                continue
            if next_level < level:  # reverse step: unknown pixels from p(x_{t-1} | x_t), known from q(x_{t-1} | x_0)
                t = chain[len(chain) - level]
                output = self.model_output(self.scheduler.scale_model_input(x, t), t, self._guided)
                step = self.scheduler.step(output, t, x, **step_kwargs)
                alpha_bar = alpha_bars[next_level]
                known = alpha_bar**0.5 * x_0 + (1 - alpha_bar) ** 0.5 * noise_like() if next_level else x_0
                x = torch.where(keep, known, step.prev_sample)
                x = x if callback is None else callback(self, down, t, x, step)
                down += 1
            else:  # resampling jump: q(x_{t'} | x_t) for the level above
                ratio = alpha_bars[next_level] / alpha_bars[level]
                x = ratio**0.5 * x + (1 - ratio) ** 0.5 * noise_like()
        return self.output(x, output_type, return_dict)


PARAMETERS = tuple(inspect.signature(DDPMHubInpaintPipeline.__call__).parameters)[1:]

# diffusers' custom_pipeline loader takes the one DiffusionPipeline subclass among this module's names.
del DDPMHubPipeline
