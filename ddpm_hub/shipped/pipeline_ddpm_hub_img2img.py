# Copyright 2026 The ddpm_hub authors. Apache License 2.0.
"""DDPMHubImg2ImgPipeline: image-to-image by SDEdit (Meng et al. 2022) with any trained DDPM.

The input image x_0 is diffused to x_t ~ q(x_t | x_0) (DDPM eq. 4) at t = strength * T, then the reverse chain runs
from there: the model keeps the image's layout and colours and replaces its details, more of them the higher the
strength. A latent model (a pipeline with a `vae`) does the same on the image's latents, SDEdit as Stable Diffusion's
img2img runs it: the image is encoded (the posterior's mean), noised and denoised in latent space, and decoded. Shipped
next to `pipeline_ddpm_hub.py` in every published repo; plain diffusers loads it with
`DiffusionPipeline.from_pretrained(repo_id, custom_pipeline="pipeline_ddpm_hub_img2img", trust_remote_code=True)`.
"""

import math
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
from .latents_ddpm_hub import decode, encode  # noqa: F401
from .pipeline_ddpm_hub import ClassLabels, DDPMHubPipeline, prompt_arguments
from .samplers_ddpm_hub import ddpm_chain  # noqa: F401


def check_strength_steps(strength: float, chain_length: int, num_steps: int, num_train_timesteps: int) -> None:
    """
    A strength above 0 runs at least one reverse step (as diffusers' img2img refuses a strength and a number of steps
    that leave none): otherwise the input would come back unchanged without a word.
    """
    if num_steps >= 1:
        return
    fixes = [f"raise strength to at least {1 / chain_length:.4g}"]
    if math.ceil(1 / strength) <= num_train_timesteps:
        fixes.append(f"num_inference_steps to at least {math.ceil(1 / strength)}")
    raise ValueError(
        f"strength={strength} with num_inference_steps={chain_length} runs round({strength} x {chain_length}) = 0 "
        f"reverse steps: {' or '.join(fixes)} (strength=0 returns the input)."
    )


class DDPMHubImg2ImgPipeline(DDPMHubPipeline):
    """
    Image-to-image with a DDPM: SDEdit. Built from a loaded pipeline with `DDPMHubImg2ImgPipeline.from_pipe(pipeline)`
    or loaded from the same folders and repos as `DDPMHubPipeline`.

    Examples:
        ```py
        >>> from ddpm_hub import DDPMHubImg2ImgPipeline

        >>> pipeline = DDPMHubImg2ImgPipeline.from_pretrained("runs/ddpm-digits-16")
        >>> cleaned = pipeline(image=noisy_digit, strength=0.6, num_inference_steps=250).images[0]
        ```
    """

    @torch.no_grad()
    def __call__(
        self,
        image,
        strength: float = 0.6,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 1000,
        noise: torch.Tensor | None = None,
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
    ) -> ImagePipelineOutput | tuple:
        """
        Args:
            image: the image(s) to edit: PIL of any mode (16-bit and float images scaled to [0, 1], alpha composited
                on white, as training decodes), numpy `[H x W (x C)]` (uint8, uint16, bool, or floats in [0, 1]), or
                torch `[(N x) C x H x W]` (uint8, or floats in [0, 1]); any size, each resized to the model's (with a
                warning): a latent model's output size, where it encodes them.
            strength (`float` in [0, 1], defaults to 0.6): how far into the forward process the image is taken:
                t = strength * T, so round(strength * num_inference_steps) reverse steps run. 0 returns the input (a
                latent model's: decode(encode(image)), the input within the VAE's reconstruction error);
                1 starts from x_T ~ N(0, I) as Algorithm 2 does (q(x_T | x_0) is N(0, I) up to the image's weight
                sqrt(alpha-bar_T), e.g. 0.006 for the linear schedule), so it equals plain sampling from `noise`.
            noise (`torch.Tensor` `[N x C x H x W]`, *optional*): the eps of q(x_t | x_0), or x_T at strength 1 (a
                latent model's: `latent_shape(N)`).
            num_images_per_prompt (`int`, defaults to 1): edits of each image, prompt or class label (diffusers'
                order: i0, i0, i1, i1).
            Others: as `DDPMHubPipeline.__call__`; one input image serves every class label or prompt given.
        """
        if not 0 <= strength <= 1:
            raise ValueError(f"strength must be in [0, 1], got {strength}.")
        callback = self.step_callback(callback_on_step_end, callback_on_step_end_tensor_inputs)
        conditions = {"class_labels": class_labels, **prompt_arguments(locals())}
        conditions = repeat_per_prompt(conditions, num_images_per_prompt)
        x_0 = self.preprocess(image, self.image_channels) * 2 - 1  # [N x C x H x W] in [-1, 1]
        if self.vae is not None:  # z'_0: the scaled posterior mean, [N x c x h x w]
            x_0 = encode(self.vae, x_0).to(device=self.device, dtype=self.unet.dtype)
        described = any(conditions[name] is not None for name in ("class_labels", "prompt", "prompt_embeds"))
        images = self.conditioning.batch_size(conditions, num_images_per_prompt) if described else None
        x_0 = repeat_each(x_0, num_images_per_prompt)
        images = images or max(len(x_0), num_images_per_prompt)
        guided, batch_size = self.prepare_condition(images, guidance_scale, **conditions)
        if len(x_0) not in (1, batch_size):
            raise ValueError(f"Got {len(x_0)} images for {batch_size} class labels; pass one image, or one per label.")
        x_0 = x_0.expand(batch_size, *x_0.shape[1:])
        step_kwargs = self.check_inputs(batch_size, generator, 0.0, output_type, num_inference_steps)

        # 1. The tail of the chain that strength selects: round(strength * K) of its K steps.
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        chain = self.scheduler.timesteps
        num_steps = round(strength * len(chain))
        if strength == 0:  # the forward process at t = 0: the input itself (a latent model's encoding, decoded)
            return self.output(x_0, output_type, return_dict)
        check_strength_steps(strength, len(chain), num_steps, self.scheduler.config.num_train_timesteps)
        timesteps = chain[len(chain) - num_steps :]

        # 2. x_t ~ q(x_t | x_0) (eq. 4) at the first kept t; at strength 1, x_T ~ N(0, I).
        check_noise(noise, x_0.shape)  # one eps per output image, as the images
        if noise is None:
            noise = randn_tensor(x_0.shape, generator=generator, device=self.device, dtype=self.unet.dtype)
        noise = noise.to(device=self.device, dtype=self.unet.dtype)
        if num_steps == len(chain):
            x_t = noise * self.scheduler.init_noise_sigma
        else:
            x_t = self.scheduler.add_noise(x_0, noise, timesteps[:1].repeat(batch_size))

        # 3. The reverse chain from there (Algorithm 2).
        image = self.denoise(x_t, timesteps, guided, step_kwargs, callback)
        return self.output(image, output_type, return_dict)


# diffusers' custom_pipeline loader takes the one DiffusionPipeline subclass among this module's names.
del DDPMHubPipeline
