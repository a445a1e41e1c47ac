# Copyright 2026 The ddpm_hub authors. Apache License 2.0.
"""DDPMHubPipeline: unconditional pixel-space sampling with a UNet2DModel and a DDPM-family scheduler.

This file is the code that plain diffusers runs for `DiffusionPipeline.from_pretrained(repo_id,
trust_remote_code=True)`: it is shipped at the root of every published repo, so it stays self-contained (torch and
diffusers only) and holds sampling only. Loading with the installed classes, saving with the code files, publishing
and the likelihood are added by the `DDPMHubPipeline` of the installed package (`ddpm_hub/pipeline.py`).
"""

import inspect
from typing import Any, Literal

import torch
from diffusers import DDPMScheduler, DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

OUTPUT_TYPES = ("pil", "np", "pt")

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> from ddpm_hub import DDPMHubPipeline

        >>> pipeline = DDPMHubPipeline.from_pretrained("pipelines/ddpm-digits-16")  # a trained folder or a Hub repo id
        >>> images = pipeline(batch_size=4, num_inference_steps=50, generator=torch.manual_seed(0)).images
        >>> images[0].save("digit.png")
        ```
"""


class DDPMHubPipeline(DiffusionPipeline):
    """
    Pipeline for unconditional image generation with a DDPM (Ho et al. 2020).

    Args:
        unet ([`UNet2DModel`]): the noise (or x_0, or v) prediction network; `out_channels` is twice `in_channels`
            when the scheduler learns the variance (`variance_type="learned_range"`).
        scheduler ([`SchedulerMixin`]): `DDPMHubScheduler`, or any diffusers scheduler built from its config
            (`DDIMScheduler`, `DPMSolverMultistepScheduler`, `UniPCMultistepScheduler`, `DDPMScheduler`, ...).
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: UNet2DModel, scheduler: SchedulerMixin):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    # ----------------------------------------------------------------------------------------------------------------
    # Sampling

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 1000,
        timesteps: list[int] | None = None,
        eta: float = 0.0,
        noise: torch.Tensor | None = None,
        output_type: Literal["pil", "np", "pt"] = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """
        Generate images with the reverse process (Algorithm 2).

        Args:
            batch_size (`int`, defaults to 1): number of images.
            generator (`torch.Generator` or a list of `batch_size` of them): makes sampling deterministic; a list
                gives each image its own stream, so image i is the same whatever the batch size.
            num_inference_steps (`int`, defaults to 1000): steps of the (respaced) chain; at most the number of
                training timesteps.
            timesteps (`list[int]`, *optional*): an explicit descending chain; overrides `num_inference_steps`.
            eta (`float`, defaults to 0.0): DDIM's noise scale; only for schedulers whose `step` takes `eta`.
            noise (`torch.Tensor` `[batch_size x C x H x W]`, *optional*): x_T to start from instead of fresh noise.
            output_type (`"pil"`, `"np"` or `"pt"`, defaults to `"pil"`): PIL images (mode "L" for one channel),
                a float numpy array `[N x H x W x C]` in [0, 1], or a torch tensor `[N x C x H x W]` in [0, 1].
            return_dict (`bool`, defaults to `True`): return an [`ImagePipelineOutput`] rather than a tuple.
        """
        shape = self._sample_shape(batch_size)
        step_kwargs = self._check_inputs(batch_size, generator, eta, noise, output_type, shape)

        # 1. x_T ~ N(0, I) (Algorithm 2, line 1), scaled for schedulers that parameterise noise by sigma.
        if noise is None:
            noise = randn_tensor(shape, generator=generator, device=self.device, dtype=self.unet.dtype)
        image = noise.to(device=self.device, dtype=self.unet.dtype) * self.scheduler.init_noise_sigma

        # 2. The chain to walk: all training timesteps, or a respaced subset.
        if timesteps is not None:
            self.scheduler.set_timesteps(timesteps=timesteps, device=self.device)
        else:
            self.scheduler.set_timesteps(num_inference_steps, device=self.device)

        # 3. x_t -> x_{t-1} for t = T..1 (Algorithm 2, lines 2-5).
        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = self.scheduler.scale_model_input(image, t)
            model_output = self._scheduler_view(self.unet(model_input, t).sample, image)
            image = self.scheduler.step(model_output, t, image, **step_kwargs).prev_sample

        # 4. [-1, 1] -> [0, 1] and the requested container.
        image = (image / 2 + 0.5).clamp(0, 1).float()
        if output_type == "pt":
            images = image
        else:
            images = image.cpu().permute(0, 2, 3, 1).numpy()
            if output_type == "pil":
                images = self.numpy_to_pil(images)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

    def _sample_shape(self, batch_size: int) -> tuple[int, int, int, int]:
        size = self.unet.config.sample_size
        height, width = (size, size) if isinstance(size, int) else size
        return (batch_size, self.unet.config.in_channels, height, width)

    def _check_inputs(self, batch_size, generator, eta, noise, output_type, shape) -> dict[str, Any]:
        """Validate the call before any model work; returns the keyword arguments for `scheduler.step`."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"Unknown output_type {output_type!r}; valid choices are: {', '.join(OUTPUT_TYPES)}.")
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"Got a list of {len(generator)} generators for batch_size={batch_size}; pass one each.")
        if noise is not None and tuple(noise.shape) != shape:
            raise ValueError(
                f"noise must have shape {shape} (batch, channels, height, width), got {tuple(noise.shape)}."
            )
        step_parameters = inspect.signature(self.scheduler.step).parameters
        step_kwargs = {"generator": generator} if "generator" in step_parameters else {}
        if "eta" in step_parameters:
            step_kwargs["eta"] = eta
        elif eta != 0.0:
            raise ValueError(
                f"eta={eta} has no meaning for {type(self.scheduler).__name__}; it applies to schedulers whose step "
                "takes eta (DDIMScheduler). Leave eta at 0 or switch scheduler."
            )
        return step_kwargs

    def _scheduler_view(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """A learned-variance UNet outputs 2C channels; schedulers that cannot use the variance get the first C."""
        channels = sample.shape[1]
        if model_output.shape[1] == channels:
            return model_output
        learns_variance = getattr(self.scheduler.config, "variance_type", None) in ("learned", "learned_range")
        if learns_variance and (
            hasattr(self.scheduler, "p_mean_variance") or isinstance(self.scheduler, DDPMScheduler)
        ):
            return model_output
        return model_output[:, :channels]
