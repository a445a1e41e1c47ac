"""The CLIP image embedding as a condition, the data and training side (DALL-E 2's decoder; the sampling side is the
shipped `image_embeds_ddpm_hub.ImageEmbedsCondition`).

Nothing is stored with the data: each example's embedding is computed from its own image, as it is trained on, by the
pipeline's frozen `image_encoder` (`image_embeds_ddpm_hub.image_embeddings`: the shipped preprocessing, L2-normalised),
per micro-batch under no_grad. Not cached: a flipped or cropped image has its own embedding, and a tiny CLIP embeds a
micro-batch in a fraction of the UNet's step. Then a share of the embeddings (`--image_embed_dropout_prob`) becomes the
zero embedding, the null branch of classifier-free guidance, drawn from the seeded generator of each micro-batch (a
resumed run drops exactly what an uninterrupted one does). Grids decode the held-out images' embeddings: variations.
"""

import torch

from ..shipped.conditioning_ddpm_hub import ConditionBatch
from ..shipped.image_embeds_ddpm_hub import ImageEmbedsCondition
from .condition_kinds import ImageConditions

GUIDANCE_STRIP_ROWS = 4  # held-out images in the guidance strip, one row each


class TrainingImageEmbedsCondition(ImageEmbedsCondition):
    """A CLIP image embedding (see the shipped kind and the module docstring), with its dropout, grids and card."""

    data_column = "images"  # what it reads is the training image x_0 itself (`values["images"]`, in [-1, 1])

    def __init__(self, embed_dim: int, image_encoder=None, feature_extractor=None):
        super().__init__(embed_dim, image_encoder, feature_extractor)
        self.dropout_prob = 0.0  # training: the share of embeddings replaced by the zero embedding
        self.grid_images: torch.Tensor | None = None  # uint8 images whose embeddings the grids decode

    def trained(self, data, options) -> "TrainingImageEmbedsCondition":
        kind = type(self)(self.embed_dim, self.image_encoder, self.feature_extractor)
        kind.dropout_prob = options.image_embed_dropout_prob or 0.0
        images = data.holdout if getattr(data, "holdout", None) is not None else getattr(data, "images", None)
        kind.grid_images = images[:64].clone() if images is not None else None
        return kind

    # ----------------------------------------------------------------------------------------------------------------
    # Data

    def column(self, decoded, source: str, pipeline: str):
        return None  # nothing stored: the embedding is made from each image as it is trained on

    def check_stream(self, stream, source: str, pipeline: str) -> None:
        """A stream's images are embedded as they come."""

    # ----------------------------------------------------------------------------------------------------------------
    # Training

    def drop(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """
        The embeddings `[N x D]` of a micro-batch's images `[N x C x H x W]` in [-1, 1], each replaced by the zero
        embedding with probability `dropout_prob`, drawn from `generator` (one draw per micro-batch).
        """
        embeds = self.embed(images)
        dropped = torch.rand(len(images), generator=generator) < self.dropout_prob
        return embeds.masked_fill(dropped.to(embeds.device)[:, None], 0.0)

    def null_values(self, count: int) -> torch.Tensor:
        """The zero embedding for `count` images (the null branch of guidance)."""
        return torch.zeros(count, self.embed_dim)

    def kept(self, images: torch.Tensor) -> torch.Tensor:
        """Held-out metrics: each image's embedding, none dropped."""
        return self.embed(images)

    def training_batch(self, embeds: torch.Tensor, device) -> ConditionBatch:
        return ConditionBatch({"image_embeds": embeds.to(device)})

    def inputs_of(self, images: torch.Tensor | None) -> dict:
        """The call argument conditioning each image on its own embedding (images uint8, or in [-1, 1])."""
        if images is None:
            return {}
        x = images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images
        return {"image_embeds": self.embed(x)}

    # ----------------------------------------------------------------------------------------------------------------
    # What is saved and shown

    def settings(self) -> dict:
        return {}  # the UNet's config and the image_encoder component say everything

    def grid(self, num_images: int) -> ImageConditions:
        """Variations: the held-out (else training) images' embeddings, one image each."""
        if self.grid_images is None or self.image_encoder is None:
            return ImageConditions(num_images, {})
        count = min(num_images, len(self.grid_images))
        embeds = self.inputs_of(self.grid_images[:count])["image_embeds"].cpu()
        return ImageConditions(count, {"image_embeds": list(embeds)})

    def strip(self) -> ImageConditions | None:
        """The rows of the guidance strip: the embeddings of the first held-out images."""
        if self.grid_images is None or self.image_encoder is None:
            return None
        embeds = self.inputs_of(self.grid_images[:GUIDANCE_STRIP_ROWS])["image_embeds"].cpu()
        return ImageConditions(len(embeds), {"image_embeds": list(embeds)})

    def cycle(self, indices: list[int]) -> dict:
        return {}  # no embedding given: the null condition (the shipped kind warns)

    def card_facts(self) -> dict:
        encoder = self.image_encoder
        return {
            "encoder": type(encoder).__name__ if encoder is not None else None,
            "encoder_parameters": sum(p.numel() for p in encoder.parameters()) if encoder is not None else None,
            "embed_dim": self.embed_dim,
            "dropout_prob": self.dropout_prob,
        }
