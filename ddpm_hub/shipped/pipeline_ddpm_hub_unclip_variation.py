# Copyright 2026 The ddpm_hub authors. Apache License 2.0.
"""DDPMHubUnCLIPImageVariationPipeline: variations of an image (DALL-E 2, Ramesh et al. 2022, section 3.1): the
image's own CLIP embedding, decoded again by a decoder DDPM conditioned on it.

The image is read as the other task pipelines read images (`image_processing_ddpm_hub.py`), embedded by the
pipeline's frozen `image_encoder` (`image_embeds_ddpm_hub.image_embeddings`: the same preprocessing and L2
normalisation training used), and each embedding is decoded `num_images_per_prompt` times with classifier-free
guidance at `decoder_guidance_scale` (its null branch the zero embedding). A decoder that reads the caption too
(DALL-E 2's, `encoder_hid_dim_type="text_image_proj"`) decodes variations with the empty caption. What the embedding
keeps (for digit pairs: which digits, on which side) the variations share; what it drops (the handwriting, the exact
position) they vary.
Shipped next to `pipeline_ddpm_hub.py` in every published repo; plain diffusers loads it with
`DiffusionPipeline.from_pretrained(repo_id, custom_pipeline="pipeline_ddpm_hub_unclip_variation",
trust_remote_code=True)`.
"""

from collections.abc import Callable
from typing import Any, Literal

import torch
from diffusers import ImagePipelineOutput, UNet2DConditionModel, UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin

# Imported here too, not only through pipeline_ddpm_hub: diffusers copies a local folder's code files one import deep.
from .call_arguments_ddpm_hub import DEFAULT_CALLBACK_TENSOR_INPUTS, check_num_images_per_prompt
from .condition_batch_ddpm_hub import Guided  # noqa: F401
from .conditioning_ddpm_hub import Conditioning  # noqa: F401
from .image_embeds_ddpm_hub import image_embeddings as clip_image_embeddings
from .image_processing_ddpm_hub import convert_mode  # noqa: F401
from .latents_ddpm_hub import AutoencoderKL, decode  # noqa: F401
from .pipeline_ddpm_hub import DDPMHubPipeline
from .samplers_ddpm_hub import ddpm_chain  # noqa: F401

DEFAULT_DECODER_GUIDANCE_SCALE = 4.0  # Kandinsky 2.2's decoder default; diffusers' UnCLIP variations take 8


class DDPMHubUnCLIPImageVariationPipeline(DDPMHubPipeline):
    """
    Image variations with a DALL-E 2 decoder: a `DDPMHubPipeline` whose UNet reads a CLIP image embedding and which
    holds the `image_encoder` (and, optionally, the `feature_extractor`) that embeds images. Loaded from a decoder's
    folder or repo, or built from a loaded decoder with `DDPMHubUnCLIPImageVariationPipeline.from_pipe(decoder)`.

    Examples:
        ```py
        >>> from ddpm_hub import DDPMHubUnCLIPImageVariationPipeline

        >>> pipeline = DDPMHubUnCLIPImageVariationPipeline.from_pretrained("runs/ddpm-unclip-digit-pairs-decoder")
        >>> variations = pipeline(image=canvas, num_images_per_prompt=4, decoder_guidance_scale=4.0).images
        ```
    """

    def __init__(
        self,
        unet: UNet2DModel | UNet2DConditionModel,  # any: a call refuses a UNet that reads no embedding
        scheduler: SchedulerMixin,
        text_encoder=None,
        tokenizer=None,
        id2label: dict[int, str] | dict[str, str] | None = None,
        null_class_label: int | None = None,
        num_classes: int | None = None,
        default_num_inference_steps: int | None = None,
        coordinate_channels: int | None = None,
        vae: AutoencoderKL | None = None,
        guidance_range: dict[str, float] | None = None,
        image_encoder=None,
        feature_extractor=None,
        decoder_guidance_scale: float | None = None,
    ):
        """`DDPMHubPipeline`'s, and `decoder_guidance_scale`: the w a call takes when it names none (a decoder run
        saves its grids' `--validation_guidance_scale`), else DEFAULT_DECODER_GUIDANCE_SCALE."""
        super().__init__(
            unet=unet,
            scheduler=scheduler,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            id2label=id2label,
            null_class_label=null_class_label,
            num_classes=num_classes,
            default_num_inference_steps=default_num_inference_steps,
            coordinate_channels=coordinate_channels,
            vae=vae,
            guidance_range=guidance_range,
            image_encoder=image_encoder,
            feature_extractor=feature_extractor,
        )
        if decoder_guidance_scale is not None:
            self.register_to_config(decoder_guidance_scale=float(decoder_guidance_scale))

    @torch.no_grad()
    def __call__(
        self,
        image=None,
        num_images_per_prompt: int = 1,
        decoder_num_inference_steps: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        decoder_latents: torch.Tensor | None = None,
        image_embeddings: torch.Tensor | None = None,
        decoder_guidance_scale: float | None = None,
        output_type: Literal["pil", "np", "pt"] = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = DEFAULT_CALLBACK_TENSOR_INPUTS,
    ) -> ImagePipelineOutput | tuple:
        """
        Args (diffusers' `UnCLIPImageVariationPipeline` names):
            image: the image(s) to vary: PIL of any mode, numpy `[H x W (x C)]` / `[N x H x W x C]` (uint8, uint16,
                bool, floats in [0, 1]) or torch `[(N x) C x H x W]` (uint8, or floats in [0, 1]), of any size (the
                encoder's preprocessing pads it to a square and resizes it); a list of several of one size.
            num_images_per_prompt (`int`, defaults to 1): variations of each image (i0, i0, i1, i1).
            decoder_num_inference_steps (`int`, *optional*): steps of the decoder's chain (default: the model's
                `default_num_inference_steps`, else 1000).
            generator (`torch.Generator` or a list, one per output image): makes the variations deterministic.
            decoder_latents (`torch.Tensor` `[N x C x H x W]`, *optional*): x_T of each output image.
            image_embeddings (`torch.Tensor` `[n x D]`, *optional*): embeddings to decode instead of the image's.
            decoder_guidance_scale (`float`, *optional*): classifier-free guidance w of the decoder: w = 1 the
                conditional model, w = 0 the null (zero) embedding alone (default: the pipeline's
                `decoder_guidance_scale`, the w of its run's grids, else 4.0).
            output_type, return_dict, callback_on_step_end, callback_on_step_end_tensor_inputs: as
                `DDPMHubPipeline.__call__`.
        """
        if image is None and image_embeddings is None:
            raise ValueError("Give image (the image(s) to vary) or image_embeddings, one of the two.")
        embeds = self.variation_embeddings(image, image_embeddings, num_images_per_prompt)
        return self.decode_embeddings(
            embeds, None, num_images_per_prompt, decoder_num_inference_steps, generator, decoder_latents,
            decoder_guidance_scale, output_type, return_dict, callback_on_step_end, callback_on_step_end_tensor_inputs,
        )  # fmt: skip

    def setting(self, name: str, default):
        """A call default saved with the pipeline (`model_index.json`), else `default`."""
        value = self.config.get(name)
        return default if value is None else value

    def variation_embeddings(self, image, image_embeddings, num_images_per_prompt: int) -> torch.Tensor:
        """The embeddings variations decode: the image's own, or those given (not both)."""
        if image is not None and image_embeddings is not None:
            raise ValueError("Give image (the image(s) to vary) or image_embeddings, one of the two.")
        check_num_images_per_prompt(num_images_per_prompt)
        return self.embed_images(image) if image is not None else image_embeddings

    def decode_embeddings(
        self, embeds, prompt, num_images_per_prompt, decoder_num_inference_steps, generator, decoder_latents,
        decoder_guidance_scale, output_type, return_dict, callback_on_step_end, callback_on_step_end_tensor_inputs,
    ):  # fmt: skip
        """
        The decoder's chains for CLIP image embeddings `[n x D]`. A decoder that also reads the caption (DALL-E 2's
        keeps GLIDE's text pathway: `encoder_hid_dim_type="text_image_proj"`) gets `prompt` (one per embedding, from
        the unCLIP pipeline), or none for variations (the empty caption); its null branch is then the empty caption
        and the zero embedding together.
        """
        if decoder_guidance_scale is None:
            decoder_guidance_scale = self.setting("decoder_guidance_scale", DEFAULT_DECODER_GUIDANCE_SCALE)
        text = {"prompt": prompt} if prompt is not None and self.conditioning.get("prompt") is not None else {}
        return super().__call__(
            **text,
            image_embeds=embeds,
            num_images_per_prompt=num_images_per_prompt,
            num_inference_steps=decoder_num_inference_steps,
            generator=generator,
            latents=decoder_latents,
            guidance_scale=decoder_guidance_scale,
            output_type=output_type,
            return_dict=return_dict,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )

    def embed_images(self, image) -> torch.Tensor:
        """The L2-normalised CLIP image embedding `[N x D]` of each image given (see `__call__` for the inputs)."""
        if self.conditioning.get("image_embeds") is None:
            raise ValueError(
                f"{type(self).__name__} needs a decoder (a UNet conditioned on a CLIP image embedding: "
                f"encoder_hid_dim_type='image_proj'), and {self.conditioning.describe()}."
            )
        if getattr(self, "image_encoder", None) is None:
            raise ValueError(
                f"{type(self).__name__} embeds the image with the pipeline's image_encoder, and this one has none: "
                "load it with its image_encoder (image_encoder=CLIPVisionModelWithProjection...), or pass "
                "image_embeddings."
            )
        pixels = self.preprocess(image, self.image_channels, resize=False) * 2 - 1  # [N x C x H x W] in [-1, 1]
        return clip_image_embeddings(self.image_encoder, pixels, self.feature_extractor)


# diffusers' custom_pipeline loader takes the one DiffusionPipeline subclass among this module's names.
del DDPMHubPipeline
