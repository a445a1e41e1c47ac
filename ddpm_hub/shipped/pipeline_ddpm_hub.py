# Copyright 2026 The ddpm_hub authors. Apache License 2.0.
"""DDPMHubPipeline: sampling with a UNet and a DDPM-family scheduler, in pixels or in an autoencoder's latent space;
unconditional, or conditioned on a class, a text or a CLIP image embedding, with classifier-free guidance.

Plain diffusers runs this file for `DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True)`: shipped at
the root of every published repo, it stays self-contained (torch, numpy, PIL, diffusers) and holds sampling only; the
installed package's `DDPMHubPipeline` (`ddpm_hub.pipelines.library`) adds loading, saving, publishing and the
likelihood. The task pipelines (`pipeline_ddpm_hub_inpaint.py`, `_img2img.py`, `_superres.py`, `_unclip_variation.py`)
build on this class.
"""

import inspect
import logging
import warnings
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline, ImagePipelineOutput, UNet2DConditionModel, UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

# Imported here, not only through conditioning_ddpm_hub: diffusers copies a local folder's code files one import deep.
from .call_arguments_ddpm_hub import (
    CALLBACK_TENSOR_INPUTS,
    DEFAULT_CALLBACK_TENSOR_INPUTS,
    CallState,
    StepCallback,
    check_generator,
    check_noise,
    number_of_images,
    repeat_per_prompt,
    start_latents,
)
from .condition_batch_ddpm_hub import Guided
from .conditioning_ddpm_hub import Conditioning, PromptCondition
from .image_embeds_ddpm_hub import ImageEmbedsCondition  # noqa: F401
from .image_processing_ddpm_hub import convert_mask, convert_mode, unit_array
from .latents_ddpm_hub import AutoencoderKL, decode, image_size
from .samplers_ddpm_hub import ddpm_chain, is_ddpm_family, warn_if_noise  # noqa: F401

OUTPUT_TYPES = ("pil", "np", "pt", "latent")
ClassLabels = int | str | list[int | str] | torch.Tensor | None
# The largest side of an image a pipeline takes or makes, in pixels: a guard against a mistaken input (an SR input of
# 4000x4000 asks for 16000x16000 and fails deep inside torch's allocator); a subclass or instance may raise it.
MAX_IMAGE_SIDE = 4096


class EmptyFloat32ListFilter(logging.Filter):
    """Drops diffusers' "... should be kept in float32: []", said on every cast (`pipeline.to(torch.bfloat16)`,
    `from_pipe`) even when the list is empty; a model that does keep modules in float32 still warns."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "should be kept in float32: []" not in record.getMessage()


def _install_float32_filter() -> None:
    """Once per process, whichever copy of this file is imported (ddpm_hub's, or the one diffusers loaded)."""
    model_logger = logging.getLogger("diffusers.models.modeling_utils")
    if not any(type(f).__name__ == EmptyFloat32ListFilter.__name__ for f in model_logger.filters):
        model_logger.addFilter(EmptyFloat32ListFilter())


_install_float32_filter()


PROMPT_ARGUMENTS = PromptCondition.call_arguments  # the text arguments every pipeline's __call__ takes


def prompt_arguments(call_locals: dict) -> dict:
    """The prompt arguments of a pipeline call, by name (from its `locals()`)."""
    return {name: call_locals[name] for name in PROMPT_ARGUMENTS}


def check_pixels(batch: torch.Tensor, what: str, mask: bool = False) -> None:
    """
    An image or mask `[n x c x h x w]` as decoded, before any resizing: no empty side, finite values and, for an
    image, values in [0, 1] (never clamped: a [-1, 1] or 0..255 float image would be silently another image).
    """
    if batch.numel() == 0:
        raise ValueError(f"{what} is empty (shape {tuple(batch.shape)}); pass an image of at least 1x1 pixels.")
    if not bool(torch.isfinite(batch).all()):
        raise ValueError(f"{what} holds NaN or infinite values; pass finite values (floats in [0, 1], or uint8).")
    low, high = float(batch.min()), float(batch.max())
    if not mask and (low < 0 or high > 1):
        raise ValueError(
            f"{what} holds values in [{low:g}, {high:g}]; float images are taken in [0, 1] (uint8 in 0..255): "
            "rescale it, e.g. (x + 1) / 2 for an image in [-1, 1] or x / 255 for floats in 0..255."
        )


def _is_component(entry) -> bool:
    """A model_index.json entry that names a component ([library, class]), not a setting."""
    return isinstance(entry, (list, tuple)) and len(entry) == 2


class DDPMHubPipeline(DiffusionPipeline, CallState):
    """
    Pipeline for image generation with a DDPM (Ho et al. 2020): unconditional, class-conditional, or text-to-image.

    Args:
        unet ([`UNet2DModel`] or [`UNet2DConditionModel`]): the noise (or x_0, or v) prediction network;
            `out_channels` is twice `in_channels` when the scheduler learns the variance
            (`variance_type="learned_range"`). A class-conditional UNet has a class embedding; a text-to-image one is
            a `UNet2DConditionModel` whose cross-attention reads the text encoder's hidden states (what a model is
            conditioned on: `conditioning_ddpm_hub.py`).
        scheduler ([`SchedulerMixin`]): `DDPMHubScheduler`, or any diffusers scheduler built from its config
            (`DDIMScheduler`, `DPMSolverMultistepScheduler`, `UniPCMultistepScheduler`, `DDPMScheduler`, ...).
        text_encoder ([`~transformers.PreTrainedModel`], *optional*): a transformers text encoder (`T5EncoderModel`,
            `CLIPTextModel`, ...) whose `last_hidden_state` the UNet attends to; run in float32.
        tokenizer ([`~transformers.PreTrainedTokenizerBase`], *optional*): its tokenizer.
        id2label (`dict[int, str]`, *optional*): class names, as diffusers' `DiTPipeline` keeps them (read back
            from `model_index.json` with string keys).
        null_class_label (`int`, *optional*): the class id the model was trained to read as "no label" (label
            dropout); classifier-free guidance needs it.
        num_classes (`int`, *optional*): how many classes the model was trained on (ids 0 .. num_classes - 1, the
            only labels it takes); saved by training. Default: the names, else every id below the null label.
        default_num_inference_steps (`int`, *optional*): the steps a call takes when it names none (a distilled
            student's calls).
        coordinate_channels (`int`, *optional*): 2 when the UNet also takes each pixel's coordinates, concatenated
            after x_t (`conditioning_ddpm_hub.PositionCondition`); its `in_channels` count them.
        vae ([`AutoencoderKL`], *optional*): a latent diffusion model's autoencoder: the chain runs on its scaled
            latents (`latents_ddpm_hub.py`) and the decoder turns x_0 into pixels at the end.
        image_encoder ([`~transformers.CLIPVisionModelWithProjection`], *optional*), feature_extractor
            ([`~transformers.CLIPImageProcessor`], *optional*): a decoder's (DALL-E 2's) frozen CLIP image encoder
            and its normalisation, which embed an image (`image_embeds_ddpm_hub.py`, the variations pipeline).

    Examples:
        ```py
        >>> import torch
        >>> from ddpm_hub import DDPMHubPipeline

        >>> pipeline = DDPMHubPipeline.from_pretrained("runs/ddpm-digits-16-cond")  # a folder or a Hub repo id
        >>> images = pipeline(class_labels=[3, 7], guidance_scale=2.0, num_inference_steps=50).images
        >>> text = DDPMHubPipeline.from_pretrained("runs/ddpm-digit-pairs-text")
        >>> images = text(prompt="3 left of seven", guidance_scale=3.0, num_inference_steps=50).images
        ```
    """

    model_cpu_offload_seq = "text_encoder->image_encoder->unet->vae"
    _optional_components = ["text_encoder", "tokenizer", "vae", "image_encoder", "feature_extractor"]
    _callback_tensor_inputs = list(CALLBACK_TENSOR_INPUTS)
    conditioning_class = Conditioning  # the installed package uses its library kinds (ddpm_hub.pipelines.conditioning)

    def __init__(
        self,
        unet: UNet2DModel | UNet2DConditionModel,
        scheduler: SchedulerMixin,
        text_encoder=None,
        tokenizer=None,
        id2label: dict[int, str] | dict[str, str] | None = None,  # diffusers checks the types: JSON keys are strings
        null_class_label: int | None = None,
        num_classes: int | None = None,
        default_num_inference_steps: int | None = None,
        coordinate_channels: int | None = None,
        vae: AutoencoderKL | None = None,  # annotated: from_pipe carries a diffusers model only to its type
        guidance_range: dict[str, float] | None = None,
        image_encoder=None,
        feature_extractor=None,
    ):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer, vae=vae)
        if "image_encoder" in inspect.signature(type(self).__init__).parameters:  # not a super-resolution pipeline's
            self.register_modules(image_encoder=image_encoder, feature_extractor=feature_extractor)
        id2label = {int(k): str(v) for k, v in id2label.items()} if id2label else None
        self.register_to_config(id2label=id2label, null_class_label=null_class_label, num_classes=num_classes)
        if default_num_inference_steps is not None:  # a distilled student's own number of calls
            self.register_to_config(default_num_inference_steps=int(default_num_inference_steps))
        if coordinate_channels:  # the UNet also takes pixel coordinates (conditioning_ddpm_hub.PositionCondition)
            self.register_to_config(coordinate_channels=int(coordinate_channels))
        if guidance_range is not None:  # guidance distilled in: the w the UNet was trained to read
            self.register_to_config(guidance_range={key: float(w) for key, w in guidance_range.items()})

    @property
    def labels(self) -> dict[str, int]:
        """Class names to ids (as diffusers' `DiTPipeline.labels`); empty without names."""
        classes = self.conditioning.get("class")
        return dict(classes.labels) if classes is not None else {}

    def get_label_ids(self, label: str | list[str]) -> list[int]:
        """Class ids of label names (as diffusers' `DiTPipeline.get_label_ids`)."""
        classes = self.conditioning.get("class")
        if classes is None:
            raise ValueError("This model has no class labels (its UNet has no class embedding).")
        return classes.label_ids([label] if isinstance(label, str) else list(label))

    # ----------------------------------------------------------------------------------------------------------------
    # Sampling

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int | None = None,
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
        num_images_per_prompt: int = 1,
        latents: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        negative_image_embeds: torch.Tensor | None = None,
    ) -> ImagePipelineOutput | tuple:
        """
        Generate images with the reverse process (Algorithm 2).

        Args:
            batch_size (`int`, *optional*): number of images (default: one per generator of a list, else one per class
                label given, else 1), times `num_images_per_prompt`.
            num_images_per_prompt (`int`, defaults to 1): images for each prompt or class label, as diffusers'
                pipelines take it: p0, p0, p1, p1 for two prompts; without either, `batch_size` times it.
            generator (`torch.Generator` or a list of them, one per image): makes sampling deterministic; a list
                gives each image its own stream, so image i is the same whatever the batch size.
            num_inference_steps (`int`, *optional*): steps of the (respaced) chain; at most the number of training
                timesteps. Defaults to the model's `default_num_inference_steps` (a distilled student's calls), else
                1000.
            timesteps (`list[int]`, *optional*): an explicit descending chain; overrides `num_inference_steps`.
            eta (`float`, defaults to 0.0): DDIM's noise scale; only for schedulers whose `step` takes `eta`.
            latents (`torch.Tensor` `[N x C x H x W]`, *optional*): x_T to start from instead of fresh noise (a
                latent model's: `latent_shape`); `noise` is its older name.
            class_labels (int, label name, list of them, or an integer tensor `[batch_size]`; *optional*): the class
                of each image, or one for all: ids or names of the classes the model was trained on. A
                class-conditional model without labels samples its "no label" class.
            guidance_scale (`float` in [0, 100], defaults to 1.0): classifier-free guidance w (Ho & Salimans 2022):
                the model output is eps_null + w (eps_c - eps_null), from one UNet call on 2B images per step. w = 1
                is the conditional model (one call on B images), w = 0 the "no label" model. With `learned_range` the
                mean part is guided and the conditional variance kept, as GLIDE does. A student with guidance
                distilled in (its setting `guidance_range`) reads w as an input: one call on B images per step.
            output_type (`"pil"`, `"np"`, `"pt"` or `"latent"`, defaults to `"pil"`): PIL images (mode "L" for one
                channel), a float numpy array `[N x H x W x C]` in [0, 1], a torch tensor `[N x C x H x W]` in
                [0, 1], or x_0 as the chain left it (a latent model's scaled latents, not decoded).
            return_dict (`bool`, defaults to `True`): return an [`ImagePipelineOutput`] rather than a tuple.
            prompt (`str` or a list of them, *optional*): a text-to-image model's prompt, one per image or one for all;
                without one it samples the null condition (the empty prompt). `negative_prompt` replaces the empty
                prompt as the null branch of guidance. `prompt_embeds` `[N x L x D]` / `negative_prompt_embeds`
                (with `prompt_attention_mask` / `negative_prompt_attention_mask` `[N x L]`) instead of text, as
                diffusers' pipelines take them. With guidance, one UNet call on 2N images per step.
            image_embeds (`torch.Tensor` `[N x D]`, *optional*): a decoder's CLIP image embeddings (DALL-E 2), one per
                image or one for all (`image_embeds_ddpm_hub.py`); guidance's null branch is the zero embedding, or
                `negative_image_embeds`.
            callback_on_step_end (a function or diffusers' `PipelineCallback` / `MultiPipelineCallbacks`, *optional*):
                called after every step as `callback_on_step_end(pipeline, i, t, callback_kwargs)` with the tensors
                named in `callback_on_step_end_tensor_inputs` (default "latents" and "image", both x_{t-1}; a
                `PipelineCallback` gets its `tensor_inputs`; the names: `_callback_tensor_inputs`). The dict it returns
                may replace "latents" and "prompt_embeds"; it may set `pipeline._guidance_scale` and
                `pipeline._interrupt` (`call_arguments_ddpm_hub.StepCallback`, `CallState`).
        """
        callback = self.step_callback(callback_on_step_end, callback_on_step_end_tensor_inputs)
        noise, noise_name = start_latents(latents, noise)
        conditions = {"class_labels": class_labels, **prompt_arguments(locals()), "image_embeds": image_embeds}
        conditions["negative_image_embeds"] = negative_image_embeds
        conditions = repeat_per_prompt(conditions, num_images_per_prompt)
        described = self.conditioning.batch_size(conditions, default=0)
        batch_size = number_of_images(batch_size, num_images_per_prompt, described, generator)
        guided, batch_size = self.prepare_condition(batch_size, guidance_scale, **conditions)
        shape = self.latent_shape(batch_size)
        steps = self.default_num_inference_steps if num_inference_steps is None else num_inference_steps
        step_kwargs = self.check_inputs(batch_size, generator, eta, output_type, steps if timesteps is None else None)
        check_noise(noise, shape, noise_name)

        # 1. x_T ~ N(0, I) (Algorithm 2, line 1), scaled for schedulers that parameterise noise by sigma.
        if noise is None:
            noise = randn_tensor(shape, generator=generator, device=self.device, dtype=self.unet.dtype)
        image = noise.to(device=self.device, dtype=self.unet.dtype) * self.scheduler.init_noise_sigma

        # 2. The chain to walk: all training timesteps, or a respaced subset.
        if timesteps is not None:
            self.scheduler.set_timesteps(timesteps=timesteps, device=self.device)
        else:
            self.scheduler.set_timesteps(steps, device=self.device)
        warn_if_noise(self.scheduler)

        # 3. x_t -> x_{t-1} for t = T..1 (Algorithm 2, lines 2-5), the model output guided when asked.
        image = self.denoise(image, self.scheduler.timesteps, guided, step_kwargs, callback)
        return self.output(image, output_type, return_dict)

    @property
    def default_num_inference_steps(self) -> int:
        """The steps a call takes when not told: a distilled student's calls (its setting), else the paper's 1000."""
        return self.config.get("default_num_inference_steps") or 1000

    @property
    def conditioning(self) -> Conditioning:
        """What this model is conditioned on (`conditioning_ddpm_hub`): read from the UNet config and settings."""
        components = {name: getattr(self, name, None) for name, entry in self.config.items() if _is_component(entry)}
        return self.conditioning_class.of(self.unet.config, dict(self.config), components)

    def prepare_condition(self, batch_size: int | None, guidance_scale: float, **inputs) -> tuple[Guided, int]:
        """
        The condition arguments of a call (`class_labels=...`, `prompt=...`) as what the UNet is called with, in its
        dtype, with the null branch guidance needs; and the batch size.
        """
        guided, batch_size = self.conditioning.prepare(inputs, batch_size, guidance_scale, self.device)
        self._guidance_scale = float(guidance_scale)  # the call's w, as a callback reads it (`CallState`)
        dtype = self.unet.dtype
        guided.condition = guided.condition.to(dtype=dtype)
        guided.null = guided.null.to(dtype=dtype) if guided.null is not None else None
        return guided, batch_size

    def denoise(self, image, timesteps, guided: Guided, step_kwargs, callback: StepCallback | None = None):
        """Reverse steps over `timesteps` from x_t = `image`, `callback` after each; `interrupt` skips the rest."""
        self.start_chain(guided, len(timesteps))
        for i, t in enumerate(self.progress_bar(timesteps)):
            if self.interrupt:
                continue
            model_output = self.model_output(self.scheduler.scale_model_input(image, t), t, self._guided)
            step = self.scheduler.step(model_output, t, image, **step_kwargs)
            image = step.prev_sample if callback is None else callback(self, i, t, step.prev_sample, step)
        return image

    def model_output(self, x_t: torch.Tensor, t, guided: Guided) -> torch.Tensor:
        """The UNet output at (x_t, t), classifier-free guided as `guided` says, in the scheduler's view."""
        return self._scheduler_view(guided(self.unet, x_t, t), x_t)

    def latent_shape(self, batch_size: int) -> tuple[int, int, int, int]:
        """The shape of x_t: the UNet's sample, in pixels or in a `vae`'s latent space."""
        size = self.unet.config.sample_size
        height, width = (size, size) if isinstance(size, int) else size
        return (batch_size, self.conditioning.image_channels(self.unet.config.in_channels), height, width)

    def sample_shape(self, batch_size: int) -> tuple[int, int, int, int]:
        """The shape of the images a call returns (a latent model's decoded; else x_t's)."""
        shape = self.latent_shape(batch_size)
        if self.vae is None:
            return shape
        return (batch_size, self.vae.config.in_channels, *image_size(self.vae, shape[2:]))

    @property
    def image_channels(self) -> int:
        """The channels of the images (the UNet's input, less a low-resolution image it concatenates; a `vae`'s)."""
        return self.sample_shape(1)[1]

    def check_inputs(self, batch_size, generator, eta, output_type, num_inference_steps=None) -> dict[str, Any]:
        """
        Validate the call before any model work (every pipeline's one check of the arguments they share); returns
        the keyword arguments for `scheduler.step`.
        """
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"Unknown output_type {output_type!r}; valid choices are: {', '.join(OUTPUT_TYPES)}.")
        check_generator(generator)
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"Got a list of {len(generator)} generators for batch_size={batch_size}; pass one each.")
        if num_inference_steps is not None:
            self.check_num_inference_steps(num_inference_steps)
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

    def check_num_inference_steps(self, num_inference_steps) -> int:
        """The steps of a chain: an integer in 1 .. the model's training timesteps (whatever the scheduler)."""
        num_train = self.scheduler.config.num_train_timesteps
        valid = isinstance(num_inference_steps, (int, np.integer)) and not isinstance(num_inference_steps, bool)
        if not (valid and 1 <= num_inference_steps <= num_train):
            raise ValueError(
                f"num_inference_steps must be an integer between 1 and num_train_timesteps={num_train} (the steps of "
                f"the chain this model was trained on), got {num_inference_steps!r}."
            )
        return int(num_inference_steps)

    def step_callback(self, callback_on_step_end, tensor_inputs) -> StepCallback:
        """A call's `callback_on_step_end` and the tensors it sees, checked before any model work."""
        callback = StepCallback(callback_on_step_end, tensor_inputs, self._callback_tensor_inputs)
        if "prompt_embeds" in callback.names and self.conditioning.get("prompt") is None:
            raise ValueError(f"callback_on_step_end_tensor_inputs: prompt_embeds, but {self.conditioning.describe()}.")
        return callback

    def _scheduler_view(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """A learned-variance UNet outputs 2C channels; schedulers that cannot use the variance get the first C."""
        channels = sample.shape[1]
        if model_output.shape[1] == channels:
            return model_output
        learns_variance = getattr(self.scheduler.config, "variance_type", None) in ("learned", "learned_range")
        if learns_variance and is_ddpm_family(self.scheduler):
            return model_output
        return model_output[:, :channels]

    # ----------------------------------------------------------------------------------------------------------------
    # Images in and out

    def output(self, image: torch.Tensor, output_type: str, return_dict: bool):
        """
        x_0 (a latent model's decoded) in [-1, 1] -> [0, 1] in the requested container (PIL, numpy
        `[N x H x W x C]`, torch), or x_0 as it is for `"latent"`.
        """
        if output_type == "latent":
            self.maybe_free_model_hooks()
            return ImagePipelineOutput(images=image) if return_dict else (image,)
        if self.vae is not None:
            image = decode(self.vae, image)
        image = (image / 2 + 0.5).clamp(0, 1).float()
        if output_type == "pt":
            images = image
        else:
            images = image.cpu().permute(0, 2, 3, 1).numpy()
            if output_type == "pil":
                images = self.numpy_to_pil(images)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def preprocess(self, image, channels: int, what: str = "image", resize: bool = True) -> torch.Tensor:
        """
        An image or a list of images as float `[N x channels x H x W]` in [0, 1] at the model's size (with
        `resize=False` at its own size), decoded as training decodes (`image_processing_ddpm_hub`): PIL of any mode
        (16-bit and float modes scaled, alpha on white), numpy `[H x W (x C)]` / `[N x H x W x C]` (uint8 0..255,
        uint16 0..65535, bool, floats in [0, 1]), torch `[(N x) C x H x W]` (uint8, or floats in [0, 1]). Each item
        of another size is resized bilinearly to the model's, with a warning; RGB becomes L by ITU-R 601 luma, L
        becomes RGB by repetition.
        """
        items = image if isinstance(image, list) else [image]
        if not items:
            raise ValueError(f"{what} is an empty list; pass an image or a list of images.")
        batch = [self._fit(self._pixels(item, channels, what, mask=False), channels, what, resize) for item in items]
        if len({tuple(item.shape[2:]) for item in batch}) > 1:
            sizes = sorted({tuple(item.shape[2:]) for item in batch})
            raise ValueError(f"{what}: a list of images of several sizes {sizes}; pass images of one size.")
        return torch.cat(batch).clamp(0, 1).to(device=self.device, dtype=self.unet.dtype)

    def preprocess_mask(self, mask_image, what: str = "mask_image") -> torch.Tensor:
        """
        A mask or a list of masks as `[N x 1 x H x W]` of 0 (keep) and 1 (generate) at the model's size, by
        diffusers' conventions (`image_processing_ddpm_hub`): a PIL mask in "L" / 255, a numpy or torch mask as its
        values (0/1 and 0/255 alike), binarised at 0.5; a transparent PIL pixel is kept.
        """
        items = mask_image if isinstance(mask_image, list) else [mask_image]
        if not items:
            raise ValueError(f"{what} is an empty list; pass a mask or a list of masks.")
        batch = torch.cat([self._fit(self._pixels(item, 1, what, mask=True), 1, what) for item in items])
        return (batch >= 0.5).to(device=self.device, dtype=self.unet.dtype)

    def _pixels(self, item, channels: int, what: str, mask: bool) -> torch.Tensor:
        """One item (PIL, numpy or torch) as a float tensor `[n x c x h x w]`: images in [0, 1], masks as values."""
        if isinstance(item, PIL.Image.Image):
            item = np.asarray(convert_mask(item) if mask else convert_mode(item, channels))
            item = item.astype(np.float32) / 255.0
        elif isinstance(item, np.ndarray):
            item = item.astype(np.float32) if mask and item.dtype != np.bool_ else unit_array(item, what)
        if isinstance(item, np.ndarray):
            item = torch.from_numpy(np.array(item))  # a copy: PIL arrays are read-only
            item = item[None, None] if item.ndim == 2 else item.permute(*range(item.ndim - 3), -1, -3, -2)
        if not isinstance(item, torch.Tensor):
            raise ValueError(
                f"{what} must be a PIL image, a numpy array or a torch tensor, got {type(item).__name__}."
            )
        if item.dtype == torch.uint8 and not mask:
            item = item.float() / 255.0
        elif not (item.is_floating_point() or item.dtype in (torch.uint8, torch.bool)):
            raise ValueError(
                f"{what}: a tensor of dtype {item.dtype} has no known range; pass uint8 or floats in [0, 1]."
            )
        if not 2 <= item.ndim <= 4:
            raise ValueError(f"{what} must have 2 to 4 dimensions ([(N x) C x H x W]), got shape {tuple(item.shape)}.")
        item = item.float().reshape(*[1] * (4 - item.ndim), *item.shape)  # [H x W], [C x H x W] -> 4-D
        check_pixels(item, what, mask)
        return item

    def _fit(self, batch: torch.Tensor, channels: int, what: str, resize: bool = True) -> torch.Tensor:
        """`[n x c x h x w]` with `channels` channels at the model's size (resized with a warning)."""
        if batch.shape[1] != channels:  # RGB -> L by ITU-R 601 luma, L -> RGB by repetition
            if batch.shape[1] == 3 and channels == 1:
                batch = (batch * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
            elif batch.shape[1] == 1:
                batch = batch.repeat(1, channels, 1, 1)
            else:
                raise ValueError(f"{what} has {batch.shape[1]} channels; the model has {channels}.")
        size = tuple(self.sample_shape(1)[2:])
        if resize and tuple(batch.shape[2:]) != size:
            warnings.warn(f"{what} of size {tuple(batch.shape[2:])} resized to the model's {size}.", stacklevel=4)
            batch = F.interpolate(batch, size=size, mode="bilinear", antialias=True, align_corners=False)
        return batch
