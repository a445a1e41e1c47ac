"""The conditioning kinds, the data and training side: each extends its shipped kind with what only the installed
package does.

The sampling side of every kind lives in the shipped `conditioning_ddpm_hub.py` (what a pipeline call prepares, the
null branch of guidance, the one UNet call); `TrainingClassCondition` extends `ClassCondition`, and so on, with

- what an example carries from the data (`values`: a column of the decoded dataset, or a field of a streamed row),
  checked against the model before it is built (`column`, `check_stream`);
- how it is dropped for classifier-free guidance in training (`drop`), from a seeded draw per micro-batch
  (`ddpm_hub.training.randomness`), so that a resumed run drops exactly what an uninterrupted one does;
- what the network is called with for a training batch (`training_batch` -> `ConditionBatch`);
- the pipeline settings it is saved with (`settings`), how sample grids are laid out (`grid`, an `ImageConditions`)
  and what the model card says of it (`card_facts`).

A model's kinds together are a `TrainingConditioning` (`ddpm_hub.pipelines.conditioning`).
"""

from dataclasses import dataclass

import torch

from ..errors import UsageError
from ..shipped import conditioning_ddpm_hub as shipped
from ..shipped.conditioning_ddpm_hub import ConditionBatch, pad_tokens


@dataclass(frozen=True)
class ImageConditions:
    """
    The condition of each of `num_images` images, as pipeline call arguments (`inputs["class_labels"][i]` is image
    i's), and how a grid of them is laid out (`columns`; None: as square as possible).
    """

    num_images: int
    inputs: dict[str, list]
    columns: int | None = None

    def of(self, indices: list[int]) -> dict[str, list]:
        """The condition arguments of images `indices`."""
        return {name: [values[i] for i in indices] for name, values in self.inputs.items()}


class TrainingClassCondition(shipped.ClassCondition):
    """A class label (see the shipped kind), with its data, dropout, grid and card."""

    data_column = "labels"  # the decoded dataset's column (`DecodedImages.labels`) this kind reads

    dropout_prob: float | None = None  # training: the share of labels replaced by the null label

    def trained(self, data, options) -> "TrainingClassCondition":
        """
        The kind a run trains (`data`: the run's dataset, `options`: its `ConditioningOptions`): the dataset's classes
        (their names, or `data.num_labels` unnamed integer labels: the largest id + 1; neither for a stream without
        names, which may hold every id below the null label), and the null label when labels are dropped
        (`class_dropout_prob`).
        """
        label_names = data.label_names
        id2label = dict(enumerate(label_names)) if label_names else None
        num_classes = len(label_names) if label_names else getattr(data, "num_labels", None)
        dropout = options.class_dropout_prob
        null = self.null_id(self.num_class_embeds) if dropout else None
        kind = type(self)(self.num_class_embeds, id2label, null, num_classes)
        kind.dropout_prob = dropout
        return kind

    # ----------------------------------------------------------------------------------------------------------------
    # Data

    def column(self, decoded, source: str, pipeline: str) -> torch.Tensor:
        """The class id of every decoded image, checked (`check_labels`)."""
        self.check_labels(decoded.labels, source, pipeline)
        return decoded.labels

    def check_stream(self, stream, source: str, pipeline: str) -> None:
        """
        A streamed dataset: a label column, with no more class names than the model has room for. Its rows are
        checked as they come (`ImageStream.check_label`): a label outside the classes (the names', else the model's
        room below the null label) is skipped and counted like a bad image, never reaching the class embedding.
        """
        names = stream.label_names
        if stream.label_column is None:
            self.check_labels(None, source, pipeline)
        elif names is not None:
            self.check_labels(torch.arange(len(names)), source, pipeline)
        room = self.null_id(self.num_class_embeds)
        stream.num_labels = min(stream.num_labels, room) if stream.num_labels is not None else room

    def check_labels(self, labels: torch.Tensor | None, source: str, pipeline: str) -> None:
        """A class-conditional UNet needs a label per image, every one below its null label."""
        num_class_embeds = self.num_class_embeds
        room = self.null_id(num_class_embeds)
        if labels is None:
            raise UsageError(
                f"{pipeline} is class-conditional (num_class_embeds={num_class_embeds}: {room} classes and the null "
                f"label), but {source} has no labels. Give a dataset with labels (builtin:digits, a folder of class "
                "subfolders, a Hub dataset with a ClassLabel column or --class_column), or train an unconditional "
                "configuration."
            )
        largest = int(labels.max())
        if largest >= room:
            raise UsageError(
                f"{source} has labels up to {largest} ({largest + 1} classes), but {pipeline} has "
                f"num_class_embeds={num_class_embeds}: room for {room} classes and the null label. Set "
                f"num_class_embeds to {largest + 2} in its unet/config.json."
            )

    # ----------------------------------------------------------------------------------------------------------------
    # Training

    def drop(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """
        Classifier-free guidance training (Ho & Salimans 2022): each label becomes the null label with probability
        `dropout_prob`, drawn from `generator` (one draw per micro-batch: a resumed run drops the same labels).
        """
        if not self.dropout_prob or self.null_class_label is None:
            return labels
        dropped = torch.rand(labels.shape, generator=generator) < self.dropout_prob
        return torch.where(dropped, torch.full_like(labels, self.null_class_label), labels)

    def null_values(self, count: int) -> torch.Tensor:
        """The null label for `count` images (the null branch of guidance)."""
        return torch.full((count,), self.null_class_label, dtype=torch.long)

    def kept(self, labels: torch.Tensor) -> torch.Tensor:
        """The values of a batch that is not dropped (held-out metrics): the labels."""
        return labels

    def training_batch(self, labels: torch.Tensor, device) -> ConditionBatch:
        return ConditionBatch({"class_labels": labels.to(device, non_blocking=True)})

    # ----------------------------------------------------------------------------------------------------------------
    # What is saved and shown

    def settings(self) -> dict:
        """The pipeline settings saved in model_index.json (diffusers' DiTPipeline keeps id2label there too)."""
        return {
            "id2label": self.id2label or None,
            "null_class_label": self.null_class_label,
            "num_classes": self.num_classes,
        }

    def grid(self, num_images: int) -> ImageConditions:
        """One row per class, `num_images` shared out (at least one per class)."""
        per_class = max(1, -(-num_images // self.num_classes))
        labels = [label for label in range(self.num_classes) for _ in range(per_class)]
        return ImageConditions(len(labels), {"class_labels": labels}, columns=per_class)

    def strip(self) -> ImageConditions:
        """The rows of the guidance strip: one per class."""
        return ImageConditions(self.num_classes, {"class_labels": list(range(self.num_classes))})

    def inputs_of(self, labels: torch.Tensor | None) -> dict:
        """The call argument that conditions on these labels, one per image (None: the null label)."""
        return {"class_labels": labels}

    def cycle(self, indices: list[int]) -> dict:
        """The labels of images `indices` when none are given: class i mod classes (every class in turn)."""
        return {"class_labels": [i % self.num_classes for i in indices]}

    def card_facts(self) -> dict:
        names = [self.id2label[i] for i in sorted(self.id2label)]
        return {
            "num_classes": self.num_classes,
            "names": names,
            "example": names[min(3, len(names) - 1)] if names else None,
            "null_class_label": self.null_class_label,
        }


class TrainingPromptCondition(shipped.PromptCondition):
    """
    A text prompt (see the shipped kind), with its data (each image's captions), caption dropout, encoding for
    training, grids of prompts and card. A frozen text encoder encodes each distinct caption once, on its own, and
    keeps the result (`embed`): a batch is then the stack of its captions' states, the same whatever batch or rank
    a caption came in first (so a resumed run encodes exactly what an uninterrupted one does). A trained encoder
    encodes every batch, with gradients.
    """

    data_column = "captions"  # each image's captions (`DecodedImages.captions`), one drawn per epoch

    def __init__(self, tokenizer=None, text_encoder=None):
        super().__init__(tokenizer, text_encoder)
        self.dropout_prob: float | None = None  # training: the share of captions replaced by the empty prompt
        self.frozen = True
        self.prompts: list[str] = []  # the grid's prompts: --validation_prompts, else captions of the data
        self.memo: dict[str, torch.Tensor] = {}  # a frozen encoder's states of each caption

    def trained(self, data, options) -> "TrainingPromptCondition":
        """The kind a run trains: caption dropout (`caption_dropout_prob`), frozen or trained encoder, grid prompts."""
        kind = type(self)(self.tokenizer, self.text_encoder)
        kind.cross_attention_dim = self.cross_attention_dim
        kind.dropout_prob, kind.frozen = options.caption_dropout_prob, not options.train_text_encoder
        kind.prompts = list(options.validation_prompts or default_prompts((data.columns or {}).get(self.data_column)))
        return kind

    # ----------------------------------------------------------------------------------------------------------------
    # Data

    def column(self, decoded, source: str, pipeline: str) -> list[list[str]]:
        if decoded.captions is None:
            raise UsageError(
                f"{pipeline} is a text-to-image model, but {source} gave no captions: use builtin:digit-pairs, a "
                "Hub dataset with a text column (--caption_column), or an image folder with metadata.jsonl."
            )
        return decoded.captions

    def check_stream(self, stream, source: str, pipeline: str) -> None:
        if stream.caption_column is None:
            raise UsageError(f"{pipeline} is a text-to-image model, but the stream of {source} has no captions.")

    # ----------------------------------------------------------------------------------------------------------------
    # Training

    def drop(self, captions: list[list[str]], generator: torch.Generator) -> list[str]:
        """
        One caption per image, drawn uniformly among its captions, then replaced by the empty prompt (the null
        condition) with probability `dropout_prob`; both from `generator`, one draw per micro-batch.
        """
        choices = torch.rand(len(captions), generator=generator)
        chosen = [texts[min(int(u * len(texts)), len(texts) - 1)] for u, texts in zip(choices.tolist(), captions)]
        if not self.dropout_prob:
            return chosen
        dropped = (torch.rand(len(captions), generator=generator) < self.dropout_prob).tolist()
        return ["" if drop else text for drop, text in zip(dropped, chosen)]

    def null_values(self, count: int) -> list[str]:
        """The empty prompt for `count` images (the null branch of guidance: what caption dropout trains)."""
        return [""] * count

    def kept(self, captions: list[list[str]]) -> list[str]:
        """A batch that is not dropped (held-out metrics): each image's first caption."""
        return [texts[0] for texts in captions]

    def training_batch(self, captions: list[str], device) -> ConditionBatch:
        if not self.frozen:
            return self.batch(*self.encode(captions, device, warn=False))
        states = [self.embed(caption, device) for caption in captions]
        length = max(len(state) for state in states)
        hidden = torch.stack([pad_tokens(state[None], torch.ones(1, len(state)), length)[0][0] for state in states])
        mask = torch.tensor([[1] * len(state) + [0] * (length - len(state)) for state in states], device=device)
        return self.batch(hidden, mask)

    @torch.no_grad()
    def embed(self, caption: str, device) -> torch.Tensor:
        """A caption's hidden states `[L x D]` from the frozen encoder, encoded alone (no padding) and kept."""
        if caption not in self.memo:
            self.memo[caption] = self.encode([caption], device, warn=False)[0][0]
        return self.memo[caption]

    # ----------------------------------------------------------------------------------------------------------------
    # What is saved and shown

    def settings(self) -> dict:
        return {}

    def grid(self, num_images: int) -> ImageConditions:
        """One row per prompt, `num_images` shared out (the null prompt when there is none)."""
        prompts = self.prompts or [""]
        per_prompt = max(1, -(-num_images // len(prompts)))
        inputs = {"prompt": [prompt for prompt in prompts for _ in range(per_prompt)]}
        return ImageConditions(len(inputs["prompt"]), inputs, columns=per_prompt)

    def strip(self) -> ImageConditions:
        prompts = self.prompts or [""]
        return ImageConditions(len(prompts), {"prompt": list(prompts)})

    def inputs_of(self, captions: list[list[str]] | None) -> dict:
        """The prompts that condition on these captions (each image's first); None: the empty prompt."""
        return {"prompt": [texts[0] for texts in captions] if captions is not None else None}

    def cycle(self, indices: list[int]) -> dict:
        """The prompts of images `indices` when none are given: the grid prompts in turn (none: the null prompt)."""
        if not self.prompts:
            return {}
        return {"prompt": [self.prompts[i % len(self.prompts)] for i in indices]}

    def card_facts(self) -> dict:
        encoder = self.text_encoder
        return {
            "encoder": type(encoder).__name__ if encoder is not None else None,
            "encoder_parameters": sum(p.numel() for p in encoder.parameters()) if encoder is not None else None,
            "prompts": list(self.prompts),
        }


def default_prompts(captions: list[list[str]] | None, count: int = 8) -> list[str]:
    """The grid's prompts when none are given: the first `count` distinct first captions of the data."""
    return list(dict.fromkeys(texts[0] for texts in captions or []))[:count]


class TrainingLowResCondition(shipped.LowResCondition):
    """
    A low-resolution image (see the shipped kind), made from each training image itself: box-downsampled by the
    scale and rounded to 8 bits (what an image file holds, so what the pipeline is given), then, per example, left
    clean with probability `clean_prob` (`--clean_low_res_prob`) or corrupted at a level s drawn uniformly in
    1 .. max_noise_level (noise conditioning augmentation, Ho et al. 2021), from the seeded draw of each micro-batch.
    Grids upsample held-out images.

    Why a share of clean inputs: with s uniform in 0 .. 250, a clean input (level 0, the pipeline's default) is 1
    example in 251, and level 1 already adds noise of 1.8 grey levels (cosine schedule); the model did best at the
    level it is used at when it trained there. Measured (README, four scales of builtin:photos): the mean of 4 samples
    against bicubic, -0.26 dB with no clean share, +0.30 with 0.5, +0.37 with 0.8 (the default).
    """

    data_column = "images"  # what it reads is the training image x_0 itself (`values["images"]`)

    def __init__(
        self,
        low_res_scale: int = 4,
        max_noise_level: int = 250,
        default_noise_level: int = 0,
        residual_scale: float | None = None,
    ):
        super().__init__(low_res_scale, max_noise_level, default_noise_level, residual_scale)
        self.alphas_cumprod = None  # the training scheduler's, for the augmentation
        self.clean_prob = 0.0  # training: the share of examples whose input is left clean (level 0)
        self.grid_images: torch.Tensor | None = None  # uint8 high-resolution images whose low-res the grids upsample

    def trained(self, data, options) -> "TrainingLowResCondition":
        kind = type(self)(**self.settings())
        kind.clean_prob = options.clean_low_res_prob or 0.0
        images = data.holdout if getattr(data, "holdout", None) is not None else getattr(data, "images", None)
        kind.grid_images = images[:64].clone() if images is not None else None
        return kind

    def column(self, decoded, source: str, pipeline: str):
        height, width = decoded.images.shape[-2:]
        if height % self.scale or width % self.scale:
            raise UsageError(
                f"{pipeline} upsamples {self.scale}x: its training images ({height}x{width}) must be multiples of "
                f"{self.scale} on each side."
            )
        return None  # nothing stored: the low-resolution image is made from each image as it is trained on

    def check_stream(self, stream, source: str, pipeline: str) -> None:
        """A stream's images are made low-resolution as they come."""

    def drop(self, images: torch.Tensor, generator: torch.Generator):
        """The augmented low-resolution images of a micro-batch, their levels and the clean ones: (z_s, s, z_0)."""
        low_res = self.low_res_of(images, self.scale)
        levels = torch.randint(
            min(1, self.max_noise_level), self.max_noise_level + 1, (len(images),), generator=generator
        )
        clean = torch.rand(len(images), generator=generator) < self.clean_prob
        levels = levels.masked_fill(clean, 0)
        noise = torch.randn(low_res.shape, generator=generator, dtype=torch.float32)
        return self.augment(low_res, levels, noise, self.alphas_cumprod), levels, low_res

    def kept(self, images: torch.Tensor):
        """Held-out metrics: the clean low-resolution images (level 0)."""
        low_res = self.low_res_of(images, self.scale)
        return low_res, torch.zeros(len(images), dtype=torch.long), low_res

    @classmethod
    def low_res_of(cls, images: torch.Tensor, scale: int) -> torch.Tensor:
        """A training image's input, in [-1, 1]: box-downsampled by `scale`, rounded to 8 bits as a file holds it."""
        return (cls.downsample(images, scale) * 127.5 + 127.5).round() / 127.5 - 1

    def training_batch(self, values, device) -> ConditionBatch:
        low_res, levels, clean = values
        return self.condition(low_res.to(device), levels.to(device), clean.to(device))

    def inputs_of(self, images: torch.Tensor | None) -> dict:
        """The call arguments conditioning on the clean low-resolution version of each image (uint8 or [-1, 1])."""
        if images is None:
            return {}
        x = images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images
        low_res = self.low_res_of(x, self.scale)
        return {"low_res": low_res, "noise_level": torch.zeros(len(low_res), dtype=torch.long)}

    def settings(self) -> dict:
        return {
            "low_res_scale": self.scale,
            "max_noise_level": self.max_noise_level,
            "default_noise_level": self.default_noise_level,
            "residual_scale": self.residual_scale,
        }

    def grid(self, num_images: int) -> ImageConditions:
        """Held-out (else training) images, box-downsampled: the grid shows what the model makes of them."""
        if self.grid_images is None:
            return ImageConditions(0, {"image": []})
        count = min(num_images, len(self.grid_images))
        low_res = self.downsample(self.grid_images[:count].float() / 255, self.scale)
        return ImageConditions(count, {"image": list(low_res)})

    def strip(self) -> ImageConditions | None:
        return None

    def cycle(self, indices: list[int]) -> dict:
        return {}

    def card_facts(self) -> dict:
        return {"scale": self.scale, **self.settings()}


class TrainingPositionCondition(shipped.PositionCondition):
    """Pixel coordinates (see the shipped kind): nothing read from the data or dropped, the same for every image."""

    data_column = "images"  # only for the micro-batch's shape; the channels are made at call time

    def trained(self, data, options) -> "TrainingPositionCondition":
        return self

    def column(self, decoded, source: str, pipeline: str):
        return None

    def check_stream(self, stream, source: str, pipeline: str) -> None:
        """Any stream: coordinates need no data."""

    def drop(self, images: torch.Tensor, generator: torch.Generator):
        return None

    def kept(self, images: torch.Tensor):
        return None

    def training_batch(self, values, device) -> ConditionBatch:
        return ConditionBatch(coordinates=True)

    def inputs_of(self, images) -> dict:
        return {}

    def settings(self) -> dict:
        return {"coordinate_channels": self.channels}

    def grid(self, num_images: int) -> ImageConditions:
        return ImageConditions(num_images, {})

    def strip(self) -> ImageConditions | None:
        return None

    def cycle(self, indices: list[int]) -> dict:
        return {}

    def card_facts(self) -> dict:
        return self.settings()
