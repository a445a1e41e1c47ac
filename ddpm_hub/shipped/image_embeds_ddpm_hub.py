# Copyright 2026 The ddpm_hub authors. Apache License 2.0.
"""A CLIP image embedding as a DDPM's condition: DALL-E 2's decoder (Ramesh et al. 2022), laid out as Kandinsky 2.2's.

The UNet is a diffusers `UNet2DConditionModel` with `encoder_hid_dim_type="image_proj"` (the embedding projected into
a few context tokens its cross-attention reads: `ImageProjection`), `addition_embed_type="image"` (the embedding
projected into the timestep embedding: `ImageTimeEmbedding`), or both; `encoder_hid_dim` is the embedding's width D.
With `encoder_hid_dim_type="text_image_proj"` (Kandinsky 2.1's `TextImageProjection`) the embedding's tokens (width D
= `cross_attention_dim`) come before a prompt's states, which a `PromptCondition` gives: DALL-E 2's decoder, which
keeps GLIDE's text pathway beside the embedding.
`ConditionBatch.__call__` passes the embedding in `added_cond_kwargs={"image_embeds": ...}`, as Kandinsky's decoder
pipeline does. Classifier-free guidance drops the embedding: the zero embedding is the null branch (what training
drops a share of embeddings to).

The embedding of an image is the pipeline's frozen `image_encoder` (a transformers `CLIPVisionModelWithProjection`):
its `image_embeds`, L2-normalised as CLIP compares them (`image_embeddings`), of pixels made by `encoder_pixels`, the
one preprocessing of training and of the image-variations pipeline alike. Shipped next to `pipeline_ddpm_hub.py` in
every published repo, so it stays self-contained: torch and the standard library only.
"""

import warnings

import torch
import torch.nn.functional as F

from .condition_batch_ddpm_hub import ConditionBatch, ConditionKind, _config_value


def encoder_pixels(images: torch.Tensor, image_encoder, feature_extractor=None) -> torch.Tensor:
    """
    Images `[N x C x H x W]` in [-1, 1] as the image encoder's `pixel_values` `[N x c x s x s]`: the canvas padded to
    a square with black (centred), resized bilinearly (antialiased) to the encoder's `config.image_size` s, its
    channels repeated (gray to RGB) or averaged (RGB to gray) to the encoder's `num_channels` c, then normalised with
    the `feature_extractor`'s `image_mean` / `image_std` (a transformers `CLIPImageProcessor`; values in [0, 1]) when
    one is given, else left in [-1, 1].
    """
    config = image_encoder.config
    size, channels = int(config.image_size), int(getattr(config, "num_channels", 3))
    x = images.float()
    height, width = x.shape[-2:]
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    x = F.pad(x, (left, side - width - left, top, side - height - top), value=-1.0)  # black in [-1, 1]
    if side != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    if x.shape[1] != channels:
        if channels == 1:
            x = x.mean(dim=1, keepdim=True)
        elif x.shape[1] == 1:
            x = x.repeat(1, channels, 1, 1)
        else:
            raise ValueError(f"The image encoder takes {channels} channels; images of {x.shape[1]} cannot be given.")
    mean = getattr(feature_extractor, "image_mean", None) if feature_extractor is not None else None
    std = getattr(feature_extractor, "image_std", None) if feature_extractor is not None else None
    if mean is None or std is None:
        return x
    mean, std = (_per_channel(values, channels).to(x) for values in (mean, std))
    return ((x + 1) / 2 - mean) / std


def _per_channel(values, channels: int) -> torch.Tensor:
    """A feature extractor's mean or std `[1 x channels x 1 x 1]`: one value, one per channel, or RGB averaged."""
    values = torch.as_tensor(values, dtype=torch.float32).reshape(-1)
    if len(values) != channels:
        values = values.mean().repeat(channels)
    return values.view(1, channels, 1, 1)


@torch.no_grad()
def image_embeddings(image_encoder, images: torch.Tensor, feature_extractor=None) -> torch.Tensor:
    """
    The CLIP image embedding of each image `[N x C x H x W]` in [-1, 1]: the encoder's `image_embeds` of
    `encoder_pixels`, L2-normalised (the unit vectors CLIP's cosine similarity compares), float32 `[N x D]`.
    """
    parameter = next(image_encoder.parameters())
    pixels = encoder_pixels(images, image_encoder, feature_extractor).to(parameter.device, parameter.dtype)
    with torch.autocast(device_type=parameter.device.type, enabled=False):
        embeds = image_encoder(pixel_values=pixels).image_embeds.float()
    return F.normalize(embeds, dim=-1)


class ImageEmbedsCondition(ConditionKind):
    """
    A CLIP image embedding (DALL-E 2's decoder): `image_embeds` `[N x D]` (one per image, or one for all) reach the
    UNet's `ImageTimeEmbedding` and `ImageProjection` (see the module docstring). The null branch of guidance is the
    zero embedding, or `negative_image_embeds` (as Kandinsky's decoder takes them).
    """

    name = "image_embeds"
    call_arguments = ("image_embeds", "negative_image_embeds")
    guided = True

    def __init__(self, embed_dim: int, image_encoder=None, feature_extractor=None):
        self.embed_dim, self.image_encoder, self.feature_extractor = int(embed_dim), image_encoder, feature_extractor

    @classmethod
    def from_model(cls, unet_config, settings: dict, components: dict) -> "ImageEmbedsCondition | None":
        projection = _config_value(unet_config, "encoder_hid_dim_type")
        if (
            projection not in ("image_proj", "text_image_proj")
            and _config_value(unet_config, "addition_embed_type") != "image"
        ):
            return None
        # text_image_proj (DALL-E 2's decoder with its text kept): the embedding has the cross-attention's width and
        # encoder_hid_dim is the text states'
        width = _config_value(
            unet_config, "cross_attention_dim" if projection == "text_image_proj" else "encoder_hid_dim"
        )
        if width is None:
            raise ValueError("This UNet reads an image embedding but has no encoder_hid_dim (its width).")
        return cls(width, components.get("image_encoder"), components.get("feature_extractor"))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Images `[N x C x H x W]` in [-1, 1] as their L2-normalised embeddings `[N x D]` (`image_embeddings`)."""
        if self.image_encoder is None:
            raise ValueError("This model has no image_encoder loaded: pass image_embeds, or load one with it.")
        return image_embeddings(self.image_encoder, images, self.feature_extractor)

    def as_embeds(self, value, name: str = "image_embeds") -> torch.Tensor:
        """`[N x D]` from a tensor `[N x D]` or `[D]`, or a list of `[D]` rows; checked (float, finite, width D)."""
        if isinstance(value, (list, tuple)) and value and all(isinstance(row, torch.Tensor) for row in value):
            value = torch.stack([row.reshape(-1) for row in value])
        expected = f"a torch tensor [N x {self.embed_dim}] (one CLIP image embedding per image, or one for all)"
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            given = f"dtype {value.dtype}" if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"
            raise ValueError(f"{name} must be {expected}, got {given}.")
        value = value[None] if value.ndim == 1 else value
        if value.ndim != 2 or value.shape[1] != self.embed_dim or len(value) == 0:
            raise ValueError(f"{name} must be {expected}, got shape {tuple(value.shape)}.")
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} holds NaN or infinite values; pass the image encoder's (finite) embeddings.")
        return value

    def batch_size(self, inputs: dict) -> int | None:
        embeds = inputs.get("image_embeds")
        if embeds is None:
            return None
        rows = len(embeds) if isinstance(embeds, (list, tuple)) else (len(embeds) if embeds.ndim == 2 else 1)
        return rows if rows > 1 else None

    def check(self, inputs: dict, guidance_scale: float) -> None:
        for name in self.call_arguments:
            if inputs.get(name) is not None:
                self.as_embeds(inputs[name], name)
        if inputs.get("image_embeds") is None:
            warnings.warn(
                "This model is conditioned on a CLIP image embedding and no image_embeds were given: it samples the "
                "null condition (the zero embedding, as embedding dropout trained it).",
                stacklevel=4,
            )

    def expand(self, value, batch_size: int, name: str, device) -> torch.Tensor:
        embeds = self.as_embeds(value, name)
        embeds = embeds.expand(batch_size, -1) if len(embeds) == 1 else embeds
        if len(embeds) != batch_size:
            raise ValueError(f"Got {len(embeds)} rows of {name} for batch_size={batch_size}: one per image, or one.")
        return embeds.to(device=device, dtype=torch.float32)

    def prepare(self, inputs: dict, batch_size: int, device) -> ConditionBatch:
        if inputs.get("image_embeds") is None:
            return self.null({}, batch_size, device)
        embeds = self.expand(inputs["image_embeds"], batch_size, "image_embeds", device)
        return ConditionBatch({"image_embeds": embeds})

    def null(self, inputs: dict, batch_size: int, device) -> ConditionBatch:
        negative = inputs.get("negative_image_embeds")
        if negative is not None:
            return ConditionBatch({"image_embeds": self.expand(negative, batch_size, "negative_image_embeds", device)})
        return ConditionBatch({"image_embeds": torch.zeros(batch_size, self.embed_dim, device=device)})
