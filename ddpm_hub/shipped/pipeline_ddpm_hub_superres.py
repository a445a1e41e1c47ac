# Copyright 2026 The ddpm_hub authors. Apache License 2.0.
"""DDPMHubSuperResolutionPipeline: a DDPM conditioned on a low-resolution image (Ho et al. 2021, Cascaded Diffusion
Models; the super-resolution stages of Imagen and DALL-E 2), with noise conditioning augmentation.

The low-resolution image is corrupted at the augmentation level `noise_level`, upsampled bicubically and concatenated
to x_t on the channels; the level reaches the UNet as its class embedding (`conditioning_ddpm_hub.LowResCondition`).
The UNet is fully convolutional: any input whose upsampled size the UNet can halve as often as it does is taken.
Shipped at the root of every super-resolution repo; plain diffusers loads it with
`DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True)`.
"""

import warnings
from collections.abc import Callable
from typing import Any, Literal

import PIL.Image
import torch
from diffusers import AutoencoderKL, ImagePipelineOutput, UNet2DConditionModel, UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

# Imported here too, not only through pipeline_ddpm_hub: diffusers copies a local folder's code files one import deep.
from .call_arguments_ddpm_hub import (
    DEFAULT_CALLBACK_TENSOR_INPUTS,
    check_noise,
    number_of_images,
    repeat_each,
    repeat_per_prompt,
    start_latents,
)
from .condition_batch_ddpm_hub import LowResCondition
from .conditioning_ddpm_hub import Conditioning  # noqa: F401
from .image_embeds_ddpm_hub import ImageEmbedsCondition  # noqa: F401
from .image_processing_ddpm_hub import convert_mode  # noqa: F401
from .latents_ddpm_hub import decode  # noqa: F401
from .pipeline_ddpm_hub import MAX_IMAGE_SIDE, ClassLabels, DDPMHubPipeline, prompt_arguments
from .samplers_ddpm_hub import ddpm_chain  # noqa: F401


class DDPMHubSuperResolutionPipeline(DDPMHubPipeline):
    """
    Super-resolution with a DDPM: `low_res_scale` times the input's size, the input's detail completed by the reverse
    process. Loaded from a super-resolution folder or repo (`DDPMHubPipeline.from_pretrained` gives this class for
    one too). A model with a class embedding or a prompt takes `class_labels` or `prompt` and guidance as well.

    Args (besides `DDPMHubPipeline`'s):
        low_res_scale (`int`): the upsampling factor (4).
        max_noise_level (`int`): the largest augmentation level the model was trained on.
        default_noise_level (`int`): the level used when a call gives none (chosen by measurement, see the model's
            card).
        residual_scale (`float`, *optional*): set for a model that diffuses `residual_scale` times the residual of
            the image over its upsampled input (`LowResCondition`); None for a model of the image itself.

    Examples:
        ```py
        >>> from ddpm_hub import DDPMHubSuperResolutionPipeline

        >>> upscaler = DDPMHubSuperResolutionPipeline.from_pretrained("runs/ddpm-sr-16-to-64")
        >>> large = upscaler(image=small, num_inference_steps=100).images[0]  # 16x16 in, 64x64 out
        ```
    """

    def __init__(
        self,
        unet: UNet2DModel | UNet2DConditionModel,
        scheduler: SchedulerMixin,
        text_encoder=None,
        tokenizer=None,
        id2label: dict[int, str] | dict[str, str] | None = None,
        null_class_label: int | None = None,
        num_classes: int | None = None,
        low_res_scale: int = 4,
        max_noise_level: int = 250,
        default_noise_level: int = 0,
        residual_scale: float | None = None,
        default_num_inference_steps: int | None = None,
        vae: AutoencoderKL | None = None,
    ):
        super().__init__(
            unet, scheduler, text_encoder, tokenizer, id2label, null_class_label, num_classes,
            default_num_inference_steps=default_num_inference_steps, vae=vae,
        )  # fmt: skip
        self.register_to_config(
            low_res_scale=low_res_scale,
            max_noise_level=max_noise_level,
            default_noise_level=default_noise_level,
            residual_scale=residual_scale,
        )

    @torch.no_grad()
    def __call__(
        self,
        image,
        noise_level: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int | None = None,
        timesteps: list[int] | None = None,
        eta: float = 0.0,
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
        batch_size: int | None = None,
        consistency: bool = False,
        num_images_per_prompt: int = 1,
        latents: torch.Tensor | None = None,
    ) -> ImagePipelineOutput | tuple:
        """
        Args:
            image: the low-resolution image(s): PIL (any mode: converted to the model's channels, with a warning for
                a colour change), a list of PIL images of one size, numpy `[H x W (x C)]` / `[N x H x W x C]` in [0, 1]
                or uint8, or torch `[(N x) C x H x W]` in [0, 1]. The output is `low_res_scale` times its size.
            noise_level (`int`, *optional*): the augmentation level s, in 0 .. `max_noise_level` (default: the
                model's `default_noise_level`); 0 conditions on the image as it is.
            generator: per image, it draws x_T, then the augmentation noise, then the steps' noise.
            num_inference_steps (`int`, *optional*): as `DDPMHubPipeline.__call__`, but 250 by default (a distilled
                student: its calls).
            batch_size (`int`, *optional*): the number of samples (default: one per image, label or prompt), times
                `num_images_per_prompt` (samples of each image, label or prompt: i0, i0, i1, i1 as diffusers orders).
            latents (`torch.Tensor` `[N x C x H x W]`, *optional*): x_T at the output's size; `noise` is its older
                name.
            consistency (`bool`, defaults to `False`): at every step, replace what the box filter of the predicted x_0
                sees by the input (x_0 - up(down(x_0)) + up(input), nearest-neighbour up: the projection of DDNM,
                Wang et al. 2023), so that the sample box-downsampled by the scale is the input.
            Others: as `DDPMHubPipeline.__call__`; one input image serves every class label or prompt given.
        """
        if num_inference_steps is None:
            num_inference_steps = self.config.get("default_num_inference_steps") or 250
        kind = low_res_kind(self)
        callback = self.step_callback(callback_on_step_end, callback_on_step_end_tensor_inputs)
        noise, noise_name = start_latents(latents, noise)
        level = self.check_noise_level(noise_level)
        channels = self.image_channels  # the UNet takes x_t and the low-resolution image, concatenated
        warn_if_converted(image, channels)
        low_res = self.preprocess(image, channels, resize=False) * 2 - 1  # [N x C x h x w] in [-1, 1]
        size = (low_res.shape[-2] * kind.scale, low_res.shape[-1] * kind.scale)
        self.check_size(size)
        conditions = {"class_labels": class_labels, **prompt_arguments(locals())}
        conditions = repeat_per_prompt(conditions, num_images_per_prompt)
        low_res = repeat_each(low_res, num_images_per_prompt)
        described = self.conditioning.batch_size({**conditions, "low_res": low_res}, default=0)
        total = number_of_images(batch_size, num_images_per_prompt, described)
        if described and described != total:
            raise ValueError(
                f"batch_size={batch_size} (x num_images_per_prompt={num_images_per_prompt}), but the images and "
                f"conditions describe {described} samples."
            )
        batch_size = total
        if len(low_res) not in (1, batch_size):
            raise ValueError(f"Got {len(low_res)} images for {batch_size} samples; pass one image, or one per sample.")
        step_kwargs = self.check_inputs(
            batch_size, generator, eta, output_type, num_inference_steps if timesteps is None else None
        )
        shape = (batch_size, low_res.shape[1], *size)  # x_t has the image's channels; the UNet takes twice them
        check_noise(noise, shape, noise_name)

        # 1. x_T ~ N(0, I), then the augmentation z_s ~ q(z_s | z_0) of the low-resolution image at level s.
        if noise is None:
            noise = randn_tensor(shape, generator=generator, device=self.device, dtype=self.unet.dtype)
        x = noise.to(device=self.device, dtype=self.unet.dtype) * self.scheduler.init_noise_sigma
        low_res = low_res.expand(batch_size, *low_res.shape[1:])
        levels = torch.full((batch_size,), level)
        augmentation = randn_tensor(low_res.shape, generator=generator, device=self.device, dtype=low_res.dtype)
        augmented = kind.augment(low_res, levels, augmentation, self.scheduler.alphas_cumprod)
        guided, _ = self.prepare_condition(
            batch_size, guidance_scale, low_res=augmented, noise_level=levels, clean_low_res=low_res, **conditions
        )

        # 2. The reverse chain (Algorithm 2), guided when asked, projected onto the input when asked.
        self._consistency_target = low_res.to(self.unet.dtype) if consistency else None
        if timesteps is not None:
            self.scheduler.set_timesteps(timesteps=timesteps, device=self.device)
        else:
            self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        try:
            x = self.denoise(x, self.scheduler.timesteps, guided, step_kwargs, callback)
        finally:
            self._consistency_target = None
        return self.output(guided.condition.to_image(x), output_type, return_dict)  # a residual model: the image

    _consistency_target = None

    def model_output(self, x_t: torch.Tensor, t, guided) -> torch.Tensor:
        """The UNet output, projected onto the input's box-filter consistency when `consistency=True`."""
        output = super().model_output(x_t, t, guided)
        if self._consistency_target is None:
            return output
        channels = x_t.shape[1]
        alpha_bar = self.scheduler.alphas_cumprod[int(t)].to(x_t)
        prediction = self.scheduler.config.prediction_type
        mean = output[:, :channels]
        if prediction == "epsilon":
            x_0 = (x_t - (1 - alpha_bar).sqrt() * mean) / alpha_bar.sqrt()
        elif prediction == "sample":
            x_0 = mean
        else:  # v
            x_0 = alpha_bar.sqrt() * x_t - (1 - alpha_bar).sqrt() * mean
        scale = self.config.low_res_scale
        up = lambda image: torch.nn.functional.interpolate(image, scale_factor=scale, mode="nearest")  # noqa: E731
        image = guided.condition.to_image(x_0)  # a model of the residual: its image
        projected = guided.condition.to_model(
            image - up(LowResCondition.downsample(image, scale)) + up(self._consistency_target)
        )
        if prediction == "epsilon":
            mean = (x_t - alpha_bar.sqrt() * projected) / (1 - alpha_bar).sqrt()
        elif prediction == "sample":
            mean = projected
        else:
            mean = (alpha_bar.sqrt() * x_t - projected) / (1 - alpha_bar).sqrt()
        return torch.cat([mean, output[:, channels:]], dim=1)

    def check_noise_level(self, noise_level) -> int:
        """The augmentation level of a call: given, or the model's default; an integer in 0..max_noise_level."""
        kind = low_res_kind(self)
        level = self.config.default_noise_level if noise_level is None else noise_level
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= kind.max_noise_level:
            raise ValueError(
                f"noise_level must be an integer in 0..{kind.max_noise_level} (the levels this model was trained on), "
                f"got {noise_level!r}."
            )
        return level

    # The largest output side a call makes: the input's side times low_res_scale at most this.
    max_output_side = MAX_IMAGE_SIDE

    def check_size(self, size: tuple[int, int]) -> None:
        """
        The output size must halve as often as the UNet does (the sizes it takes are multiples of that), and stay
        within `max_output_side`.
        """
        scale, limit = self.config.low_res_scale, self.max_output_side
        if max(size) > limit:
            raise ValueError(
                f"An input of {size[0] // scale}x{size[1] // scale} upsamples to {size[0]}x{size[1]}; this pipeline "
                f"makes outputs of at most {limit} pixels a side, so it takes inputs of at most {limit // scale} "
                f"pixels a side (x{scale}). Upsample a smaller image or tiles of it, or raise max_output_side."
            )
        multiple = 2 ** (len(self.unet.config.block_out_channels) - 1)
        if size[0] % multiple or size[1] % multiple:
            raise ValueError(
                f"An input of {size[0] // scale}x{size[1] // scale} upsamples to {size[0]}x{size[1]}, which this UNet "
                f"cannot take: its output sides must be multiples of {multiple}, so the input's of "
                f"{max(1, multiple // scale)} (e.g. {multiple * 4 // scale}x{multiple * 4 // scale})."
            )


def low_res_kind(pipeline) -> LowResCondition:
    """The low-resolution kind of a pipeline's conditioning (refused for a model that has none)."""
    kind = pipeline.conditioning.get("low_res")
    if kind is None:
        raise ValueError("This model is not a super-resolution model (no low_res_scale in its settings).")
    return kind


def warn_if_converted(image, channels: int) -> None:
    """Say so when the input's colours are converted to the model's channels (grayscale to RGB, or RGB to gray)."""
    first = image[0] if isinstance(image, list) and image else image
    if isinstance(first, PIL.Image.Image):
        given = 1 if first.mode in ("1", "L", "LA", "I", "I;16", "F", "P") and first.mode != "P" else 3
    elif hasattr(first, "shape") and len(first.shape) >= 3:
        given = first.shape[-3] if isinstance(first, torch.Tensor) else first.shape[-1]
    else:
        given = 1  # [H x W]
    if given != channels:
        names = {1: "grayscale", 3: "RGB"}
        warnings.warn(
            f"The input is {names.get(given, f'{given}-channel')} and the model {names.get(channels, channels)}: "
            "it was converted.",
            stacklevel=3,
        )


# diffusers' custom_pipeline loader takes the one DiffusionPipeline subclass among this module's names.
del DDPMHubPipeline
