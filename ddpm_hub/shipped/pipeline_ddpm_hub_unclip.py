# Copyright 2026 The ddpm_hub authors. Apache License 2.0.
"""DDPMHubUnCLIPPipeline: text to image through CLIP's embedding (DALL-E 2, Ramesh et al. 2022): the prompt's CLIP
text embedding and token states, a diffusion prior that samples a CLIP image embedding from them
(`prior_ddpm_hub.py`), and the decoder that draws an image of that embedding, the same decoding as the image
variations pipeline (`pipeline_ddpm_hub_unclip_variation.py`), of which this pipeline is a subclass: a folder of it
holds every component of both, and `DDPMHubUnCLIPImageVariationPipeline` loads it too.

Components: the decoder (`unet`, a `UNet2DConditionModel` reading `image_embeds`, and the prompt's token states
too when its `encoder_hid_dim_type` is "text_image_proj", as DALL-E 2's decoder; and its `scheduler`), its
`image_encoder` and `feature_extractor` (for variations), the `prior` (a `PriorTransformer`) and its
`prior_scheduler` (`DDPMHubScheduler`, x_0 prediction), and the CLIP text side: `text_encoder`
(`CLIPTextModelWithProjection`) and `tokenizer`. Shipped in every unCLIP repo; plain diffusers loads it with
`DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True)`.
"""

from collections.abc import Callable
from typing import Any, Literal

import torch
from diffusers import ImagePipelineOutput, PriorTransformer
from diffusers.schedulers.scheduling_utils import SchedulerMixin

# Imported here too, not only through the variations pipeline: diffusers copies a local folder's code files one import
# deep.
from .call_arguments_ddpm_hub import DEFAULT_CALLBACK_TENSOR_INPUTS, check_generator, check_num_images_per_prompt
from .condition_batch_ddpm_hub import Guided  # noqa: F401
from .conditioning_ddpm_hub import Conditioning  # noqa: F401
from .image_embeds_ddpm_hub import encoder_pixels  # noqa: F401
from .image_processing_ddpm_hub import convert_mode  # noqa: F401
from .latents_ddpm_hub import decode  # noqa: F401
from .pipeline_ddpm_hub import DDPMHubPipeline  # noqa: F401
from .pipeline_ddpm_hub_unclip_variation import DDPMHubUnCLIPImageVariationPipeline
from .prior_ddpm_hub import (
    DEFAULT_PRIOR_GUIDANCE_SCALE,
    DEFAULT_PRIOR_NUM_CANDIDATES,
    DEFAULT_PRIOR_NUM_INFERENCE_STEPS,
    encode_prompts,
    sample_prior,
    text_positions,
)
from .samplers_ddpm_hub import ddpm_chain  # noqa: F401
from .scheduling_ddpm_hub import DDPMHubScheduler  # noqa: F401


class DDPMHubUnCLIPPipeline(DDPMHubUnCLIPImageVariationPipeline):
    """
    Text to image with a DALL-E 2 prior and decoder (see the module docstring for the components).

    Args (besides the decoder's, `DDPMHubPipeline`):
        prior ([`PriorTransformer`]): predicts the normalised x_0 of a CLIP image embedding; keeps the data's
            `clip_mean` and `clip_std`.
        prior_scheduler ([`SchedulerMixin`]): its chain, `DDPMHubScheduler` with `prediction_type="sample"`.
        prior_guidance_scale, decoder_guidance_scale, prior_num_inference_steps, prior_num_candidates (*optional*):
            the defaults of a call (in `model_index.json`); the decoder's steps are `default_num_inference_steps`.

    Examples:
        ```py
        >>> from ddpm_hub import DDPMHubUnCLIPPipeline

        >>> pipeline = DDPMHubUnCLIPPipeline.from_pretrained("runs/ddpm-unclip-digit-pairs")
        >>> images = pipeline("3 left of 7", num_images_per_prompt=4, prior_guidance_scale=4.0).images
        ```
    """

    _optional_components = [*DDPMHubPipeline._optional_components]

    def __init__(
        self,
        unet,
        scheduler: SchedulerMixin,
        prior: PriorTransformer,
        prior_scheduler: SchedulerMixin,
        text_encoder=None,
        tokenizer=None,
        image_encoder=None,
        feature_extractor=None,
        vae=None,
        coordinate_channels: int | None = None,
        default_num_inference_steps: int | None = None,
        prior_guidance_scale: float | None = None,
        decoder_guidance_scale: float | None = None,
        prior_num_inference_steps: int | None = None,
        prior_num_candidates: int | None = None,
        id2label: dict[int, str] | dict[str, str] | None = None,  # the decoder's settings, unused: it reads embeddings
        null_class_label: int | None = None,
        num_classes: int | None = None,
        guidance_range: dict[str, float] | None = None,
    ):
        super().__init__(
            unet=unet,
            scheduler=scheduler,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            default_num_inference_steps=default_num_inference_steps,
            coordinate_channels=coordinate_channels,
            vae=vae,
            image_encoder=image_encoder,
            feature_extractor=feature_extractor,
            id2label=id2label,
            null_class_label=null_class_label,
            num_classes=num_classes,
            guidance_range=guidance_range,
        )
        self.register_modules(prior=prior, prior_scheduler=prior_scheduler)
        settings = {
            "prior_guidance_scale": None if prior_guidance_scale is None else float(prior_guidance_scale),
            "decoder_guidance_scale": None if decoder_guidance_scale is None else float(decoder_guidance_scale),
            "prior_num_inference_steps": None if prior_num_inference_steps is None else int(prior_num_inference_steps),
            "prior_num_candidates": None if prior_num_candidates is None else int(prior_num_candidates),
        }
        self.register_to_config(**{key: value for key, value in settings.items() if value is not None})

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        prior_num_inference_steps: int | None = None,
        decoder_num_inference_steps: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        prior_latents: torch.Tensor | None = None,
        decoder_latents: torch.Tensor | None = None,
        prior_guidance_scale: float | None = None,
        decoder_guidance_scale: float | None = None,
        prior_num_candidates: int | None = None,
        image=None,
        image_embeddings: torch.Tensor | None = None,
        output_type: Literal["pil", "np", "pt"] = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = DEFAULT_CALLBACK_TENSOR_INPUTS,
    ) -> ImagePipelineOutput | tuple:
        """
        Args (diffusers' `UnCLIPPipeline` names):
            prompt (`str` or a list of them): what to draw; each gives `num_images_per_prompt` images (p0, p0, p1, p1).
            prior_num_inference_steps (`int`, *optional*): steps of the prior's chain (default: the pipeline's
                setting, else 25).
            decoder_num_inference_steps (`int`, *optional*): steps of the decoder's chain (default: the model's
                `default_num_inference_steps`, else 1000).
            generator (`torch.Generator` or a list, one per output image): the prior's draws, then the decoder's.
            prior_latents (`torch.Tensor` `[N k x D]`, *optional*): x_T of the prior's chains (k candidates each).
            decoder_latents (`torch.Tensor` `[N x C x H x W]`, *optional*): x_T of the decoder's chains.
            prior_guidance_scale (`float`, *optional*): classifier-free guidance w of the prior (its null branch the
                empty caption); default: the pipeline's setting, else 4.0.
            decoder_guidance_scale (`float`, *optional*): w of the decoder (its null branch the zero embedding);
                default: the pipeline's setting, else 4.0.
            prior_num_candidates (`int`, *optional*): image embeddings drawn per image, the one most similar to the
                text embedding kept (DALL-E 2: 2); default: the pipeline's setting, else 2.
            image, image_embeddings: instead of a prompt, the variations pipeline's inputs (an image's own
                embedding, or embeddings `[N x D]`), decoded without the prior.
            output_type, return_dict, callback_on_step_end, callback_on_step_end_tensor_inputs: as
                `DDPMHubPipeline.__call__`; the callback runs after each of the decoder's steps.
        """
        if (prompt is None) == (image is None and image_embeddings is None):
            raise ValueError("Give prompt (text to image), or image or image_embeddings (variations): one of them.")
        if prompt is None:  # variations: the image's own embedding, or the embeddings given
            embeds, prompts = self.variation_embeddings(image, image_embeddings, num_images_per_prompt), None
        else:
            embeds = self.prompt_image_embeddings(
                prompt, num_images_per_prompt, generator, prior_latents, prior_guidance_scale,
                prior_num_inference_steps, prior_num_candidates,
            )  # fmt: skip
            prompts = [text for text in ([prompt] if isinstance(prompt, str) else prompt) for _ in
                       range(num_images_per_prompt)]  # fmt: skip
            num_images_per_prompt = 1  # one embedding per output image, drawn by the prior
        return self.decode_embeddings(
            embeds, prompts, num_images_per_prompt, decoder_num_inference_steps, generator, decoder_latents,
            decoder_guidance_scale, output_type, return_dict, callback_on_step_end, callback_on_step_end_tensor_inputs,
        )  # fmt: skip

    def prompt_image_embeddings(
        self,
        prompt: str | list[str],
        num_images_per_prompt: int = 1,
        generator=None,
        prior_latents=None,
        prior_guidance_scale: float | None = None,
        prior_num_inference_steps: int | None = None,
        prior_num_candidates: int | None = None,
    ) -> torch.Tensor:
        """The prior's CLIP image embeddings `[N x D]` (unit norm) for the prompts, `num_images_per_prompt` each."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or not all(isinstance(text, str) for text in prompts):
            raise ValueError(f"prompt must be a string or a non-empty list of strings, got {prompt!r}.")
        if self.text_encoder is None or self.tokenizer is None:
            raise ValueError(f"{type(self).__name__} needs its text_encoder and tokenizer (the CLIP's text side).")
        check_generator(generator)
        times = check_num_images_per_prompt(num_images_per_prompt)
        prompts = [text for text in prompts for _ in range(times)]
        length = text_positions(self.prior)
        text = encode_prompts(self.text_encoder, self.tokenizer, prompts, length)
        null_text = encode_prompts(self.text_encoder, self.tokenizer, [""], length)
        return sample_prior(
            self.prior,
            self.prior_scheduler,
            text,
            null_text,
            guidance_scale=self.setting("prior_guidance_scale", DEFAULT_PRIOR_GUIDANCE_SCALE)
            if prior_guidance_scale is None
            else prior_guidance_scale,
            num_inference_steps=self.setting("prior_num_inference_steps", DEFAULT_PRIOR_NUM_INFERENCE_STEPS)
            if prior_num_inference_steps is None
            else prior_num_inference_steps,
            generator=generator,
            num_candidates=self.setting("prior_num_candidates", DEFAULT_PRIOR_NUM_CANDIDATES)
            if prior_num_candidates is None
            else prior_num_candidates,
            latents=prior_latents,
        )


# diffusers' custom_pipeline loader takes the one DiffusionPipeline subclass among this module's names.
del DDPMHubPipeline, DDPMHubUnCLIPImageVariationPipeline
