# Copyright 2026 The ddpm_hub authors. Apache License 2.0.
"""What a DDPM is conditioned on, as sampling sees it: one carrier for every kind of condition.

A model's `Conditioning` is the list of its `ConditionKind`s (none for an unconditional model). Each kind knows

- which model it belongs to (`from_model`: read from the UNet config, the pipeline's settings and its components),
- which arguments of the pipeline call are its own (`call_arguments`, e.g. `class_labels`) and how they become what
  the network is called with (`prepare`: a `ConditionBatch`),
- its null branch for classifier-free guidance (`null`: the null class id; an empty prompt; none for a kind that
  guidance keeps, such as a low-resolution image).

Here: the kinds with a null branch (`ClassCondition`, `PromptCondition`) and `Conditioning`. The carrier
(`ConditionBatch`, `ConditionKind`, the guidance formula) and the kinds guidance keeps (`LowResCondition`,
`PositionCondition`) are in `condition_batch_ddpm_hub.py`, importable from here; a CLIP image embedding in
`image_embeds_ddpm_hub.py`. A new kind is one class in a shipped file (the sampling side, listed in `KINDS`) and one
in `ddpm_hub/pipelines/` (the data and training side). The files are shipped next to `pipeline_ddpm_hub.py` in every
published repo (plain diffusers loads them with `trust_remote_code=True`): torch and the standard library only.
"""

import numbers
import warnings
from typing import Any

import torch

from .condition_batch_ddpm_hub import (  # noqa: F401
    GUIDANCE_SCALE_RANGE,
    ConditionBatch,
    ConditionKind,
    EmbeddedGuidance,
    Guided,
    LowResCondition,
    PositionCondition,
    _config_value,
    check_guidance_scale,
    coordinate_channels,
    guidance_embedding,
    guided_output,
    pad_tokens,
)
from .image_embeds_ddpm_hub import ImageEmbedsCondition


class ClassCondition(ConditionKind):
    """
    A class label: `class_labels` (ids or names, one per image or one for all) reach the UNet's class embedding,
    `num_class_embeds` rows of which the last is the null label when the model was trained with label dropout.

    The rules of a class-conditional UNet live here: a model knows the classes it was trained on, `num_classes` of
    them (a pipeline setting saved by training: the dataset's class names, or its count of unnamed integer labels),
    and only their ids 0 .. num_classes - 1 are labels (rows of the embedding never trained are refused); names come
    from `id2label`; the null label is the last id (`num_class_embeds - 1`), reached through guidance (no labels, or
    guidance_scale=0), never as a label. A model saved without `num_classes` has the ids below the null label.
    """

    name = "class"
    call_arguments = ("class_labels",)
    setting_names = ("id2label", "null_class_label", "num_classes")
    guided = True

    def __init__(
        self,
        num_class_embeds: int,
        id2label: dict | None = None,
        null_class_label: int | None = None,
        num_classes: int | None = None,
    ):
        self.num_class_embeds = num_class_embeds
        self.id2label = {int(k): str(v) for k, v in (id2label or {}).items()}
        self.null_class_label = null_class_label
        self.labels = {name: i for i, name in self.id2label.items()}
        self.trained_classes = num_classes
        self.check_settings()

    def check_settings(self) -> None:
        """The settings fit the class embedding (a hand-edited model_index.json would reach rows that do not exist)."""
        embeds, null = self.num_class_embeds, self.null_class_label
        room = embeds - 1 if null is not None else embeds  # the null label takes the last row
        problems = []
        if null is not None and not (isinstance(null, int) and 0 <= null < embeds):
            problems.append(f"null_class_label={null!r} is not a row of the class embedding (0..{embeds - 1})")
        count = self.trained_classes
        if count is not None and not (isinstance(count, int) and not isinstance(count, bool) and 1 <= count <= room):
            problems.append(f"num_classes={count!r} is not in 1..{room}")
        if self.id2label and (max(self.id2label) >= room or min(self.id2label) < 0):
            problems.append(
                f"id2label names ids {min(self.id2label)}..{max(self.id2label)}, beyond the {room} classes"
            )
        if problems:
            raise ValueError(
                f"This model's class settings do not fit its UNet (num_class_embeds={embeds}): {'; '.join(problems)}. "
                "Fix model_index.json (num_classes, id2label, null_class_label) or save the pipeline again."
            )

    @classmethod
    def from_model(cls, unet_config, settings: dict, components: dict) -> "ClassCondition | None":
        num_class_embeds = _config_value(unet_config, "num_class_embeds")
        if num_class_embeds is None:
            return None
        return cls(
            num_class_embeds, settings.get("id2label"), settings.get("null_class_label"), settings.get("num_classes")
        )

    @property
    def has_null(self) -> bool:
        return self.null_class_label is not None

    @property
    def num_classes(self) -> int:
        """The classes the model was trained on: the saved count, else its names, else every id below the null."""
        return self.trained_classes or len(self.id2label) or self.num_class_embeds - 1

    @staticmethod
    def null_id(num_class_embeds: int) -> int:
        """The id label dropout trains as "no label": the last row of the class embedding."""
        return num_class_embeds - 1

    def describe_classes(self) -> str:
        """`the 6 classes this model was trained on (ids 0..5: cat, dog, ...)`, for messages."""
        count = self.num_classes
        names = [self.id2label[i] for i in sorted(self.id2label)]
        shown = f": {', '.join(names[:12])}{', ...' if len(names) > 12 else ''}" if names else ""
        return f"the {count} classes this model was trained on (ids 0..{count - 1}{shown})"

    def label_ids(self, labels) -> list[int]:
        """Ids of labels given as ids, names, a list of them or an integer tensor; unknown names are refused."""
        if isinstance(labels, torch.Tensor):
            if labels.is_floating_point() or labels.is_complex():
                raise ValueError(f"class_labels as a tensor must hold integer ids, got dtype {labels.dtype}.")
            return labels.reshape(-1).long().tolist()
        items = labels if isinstance(labels, (list, tuple)) else [labels]
        for item in items:
            if isinstance(item, str):
                if item not in self.labels:
                    named = f"its names are: {', '.join(self.labels)}" if self.labels else "it has no class names"
                    raise ValueError(
                        f"Unknown label {item!r}: this model takes ids or names of {self.describe_classes()}; {named}."
                    )
            elif not isinstance(item, numbers.Integral) or isinstance(item, bool):
                raise ValueError(f"class labels are integer ids or class names, got {item!r}.")
        return [self.labels[item] if isinstance(item, str) else int(item) for item in items]

    def batch_size(self, inputs: dict) -> int | None:
        labels = inputs.get("class_labels")
        if labels is None:
            return None
        ids = self.label_ids(labels)
        return None if len(ids) == 1 else len(ids)

    def check(self, inputs: dict, guidance_scale: float) -> None:
        if inputs.get("class_labels") is None and self.null_class_label is None:
            raise ValueError("This class-conditional model has no null label: pass class_labels.")
        if guidance_scale != 1 and self.null_class_label is None:
            raise ValueError(
                f"guidance_scale={guidance_scale} needs a null label, and this model has none (it was trained without "
                "label dropout). Use guidance_scale=1."
            )
        if inputs.get("class_labels") is not None:
            self.check_ids(self.label_ids(inputs["class_labels"]))

    def check_ids(self, ids: list[int]) -> None:
        """Every id is one of the classes the model was trained on (the null label is not a class)."""
        bad = [i for i in ids if not 0 <= i < self.num_classes]
        if not bad:
            return
        if self.null_class_label is not None and bad[0] == self.null_class_label:
            raise ValueError(
                f'class label {bad[0]} is the null label ("no label"), not a class: leave class_labels out to sample '
                f"it, or use guidance_scale=0. Labels are ids or names of {self.describe_classes()}."
            )
        raise ValueError(f"class labels must be ids or names of {self.describe_classes()}, got {bad[0]}.")

    def prepare(self, inputs: dict, batch_size: int, device) -> ConditionBatch:
        labels = inputs.get("class_labels")
        if labels is None:  # no label given: the "no label" class
            return self.null(inputs, batch_size, device)
        ids = self.label_ids(labels)
        if len(ids) == 1:
            ids = ids * batch_size
        if len(ids) != batch_size:
            raise ValueError(f"Got {len(ids)} class labels for batch_size={batch_size}; pass one per image, or one.")
        self.check_ids(ids)
        return ConditionBatch({"class_labels": torch.tensor(ids, device=device)})

    def null(self, inputs: dict, batch_size: int, device) -> ConditionBatch:
        return ConditionBatch({"class_labels": torch.full((batch_size,), self.null_class_label, device=device)})


class PromptCondition(ConditionKind):
    """
    A text prompt (GLIDE, Imagen, Stable Diffusion): the tokenizer's ids, encoded by the text encoder in float32 (T5
    overflows in float16), reach the UNet's cross-attention as `encoder_hidden_states` `[N x L x D]` with
    `encoder_attention_mask` `[N x L]` (1 for a token, 0 for padding, so that padding never changes the output).
    The null branch of guidance is the empty prompt (what caption dropout trains), or the negative prompt.

    Call arguments (diffusers' names): `prompt` (a string, or one per image), `negative_prompt`, or instead of text
    `prompt_embeds` `[N x L x D]` / `negative_prompt_embeds` with `prompt_attention_mask` /
    `negative_prompt_attention_mask` `[N x L]` (all ones when not given).
    """

    name = "prompt"
    call_arguments = ("prompt", "negative_prompt", "prompt_embeds", "negative_prompt_embeds", "prompt_attention_mask",
                      "negative_prompt_attention_mask")  # fmt: skip
    guided = True
    cross_attention_dim: int | None = None  # the width D of the states the UNet attends to (None: not known)
    optional = False  # beside a CLIP image embedding (DALL-E 2's decoder): no prompt is the empty one, unwarned

    def __init__(self, tokenizer=None, text_encoder=None):
        self.tokenizer, self.text_encoder = tokenizer, text_encoder

    @classmethod
    def from_model(cls, unet_config, settings: dict, components: dict) -> "PromptCondition | None":
        width, projection = (_config_value(unet_config, k) for k in ("cross_attention_dim", "encoder_hid_dim_type"))
        if width is None or projection == "image_proj":
            return None  # a UNet2DModel, or one whose cross-attention reads an image embedding (ImageEmbedsCondition)
        kind = cls(components.get("tokenizer"), components.get("text_encoder"))
        kind.optional = projection == "text_image_proj"
        if projection in ("text_proj", "text_image_proj"):  # states of encoder_hid_dim, projected to the UNet's width
            width = _config_value(unet_config, "encoder_hid_dim") or width
        widths = set(width) if isinstance(width, (list, tuple)) else {width}
        kind.cross_attention_dim = int(widths.pop()) if len(widths) == 1 else None  # per block: one if they agree
        return kind

    @property
    def max_length(self) -> int:
        """Tokens the encoder takes: the tokenizer's limit, else the encoder's positions."""
        limit = getattr(self.tokenizer, "model_max_length", None)
        if limit is None or limit > 100_000:  # transformers' "no limit" placeholder
            limit = getattr(getattr(self.text_encoder, "config", None), "max_position_embeddings", 512)
        return int(limit)

    def batch_size(self, inputs: dict) -> int | None:
        prompt, embeds = inputs.get("prompt"), inputs.get("prompt_embeds")
        if isinstance(embeds, torch.Tensor) and embeds.ndim == 3:  # other embeds are refused by `check`
            return len(embeds) if len(embeds) > 1 else None
        if isinstance(prompt, (list, tuple)) and len(prompt) > 1:
            return len(prompt)
        return None

    def check(self, inputs: dict, guidance_scale: float) -> None:
        if inputs.get("prompt") is not None and inputs.get("prompt_embeds") is not None:
            raise ValueError("Give prompt or prompt_embeds, not both.")
        if inputs.get("negative_prompt") is not None and inputs.get("negative_prompt_embeds") is not None:
            raise ValueError("Give negative_prompt or negative_prompt_embeds, not both.")
        text = inputs.get("prompt") is not None or inputs.get("negative_prompt") is not None
        if text and (self.tokenizer is None or self.text_encoder is None):
            raise ValueError(
                "This model has no text encoder and tokenizer loaded: pass prompt_embeds (and negative_prompt_embeds)."
            )
        for name in ("prompt", "negative_prompt"):
            value = inputs.get(name)
            items = value if isinstance(value, (list, tuple)) else [value]
            if value is not None and not all(isinstance(item, str) for item in items):
                raise ValueError(f"{name} must be a string or a list of strings, got {value!r}.")
        for prefix in ("", "negative_"):
            embeds, mask = inputs.get(f"{prefix}prompt_embeds"), inputs.get(f"{prefix}prompt_attention_mask")
            if embeds is not None:
                self.check_embeds(embeds, f"{prefix}prompt_embeds")
            if mask is not None:
                self.check_attention_mask(mask, embeds, prefix)
        if inputs.get("prompt") is None and inputs.get("prompt_embeds") is None and not self.optional:
            warnings.warn(
                "This is a text-to-image model and no prompt was given: it samples the null condition (the empty "
                "prompt, as caption dropout trained it).",
                stacklevel=4,
            )

    def check_embeds(self, embeds, name: str) -> None:
        """`prompt_embeds`: a float tensor `[N x L x D]` of finite values, D the UNet's `cross_attention_dim`."""
        width = self.cross_attention_dim
        expected = f"[N x L x {width if width is not None else 'D'}] (images, tokens, the UNet's cross_attention_dim)"
        if not isinstance(embeds, torch.Tensor):
            module = type(embeds).__module__
            given = type(embeds).__qualname__ if module == "builtins" else f"{module}.{type(embeds).__qualname__}"
            fix = " (pass torch.from_numpy(array))" if type(embeds).__module__ == "numpy" else ""
            raise ValueError(f"{name} must be a torch tensor {expected}, got a {given}{fix}.")
        if embeds.ndim != 3:
            hint = f"; one prompt's states [L x D] are {name}[None]" if embeds.ndim == 2 else ""
            raise ValueError(f"{name} must have shape {expected}, got shape {tuple(embeds.shape)}{hint}.")
        if not embeds.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor {expected}, got dtype {embeds.dtype}.")
        if width is not None and embeds.shape[2] != width:
            raise ValueError(
                f"{name} must have shape {expected}: this UNet attends to states of width {width}, got shape "
                f"{tuple(embeds.shape)}."
            )
        if 0 in embeds.shape:
            raise ValueError(f"{name} is empty (shape {tuple(embeds.shape)}); pass at least one image and token.")
        if not bool(torch.isfinite(embeds).all()):
            raise ValueError(f"{name} holds NaN or infinite values; pass the text encoder's (finite) states.")

    @staticmethod
    def check_attention_mask(mask, embeds, prefix: str) -> None:
        """`prompt_attention_mask`: `[N x L]` of 0 (padding) and 1 (a token), for the embeds it goes with."""
        name = f"{prefix}prompt_attention_mask"
        if embeds is None:
            raise ValueError(f"{name} is the mask of {prefix}prompt_embeds; pass it with them (or leave it out).")
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(embeds.shape[:2]):
            given = tuple(mask.shape) if isinstance(mask, torch.Tensor) else f"a {type(mask).__name__}"
            raise ValueError(
                f"{name} must be a torch tensor [N x L] {tuple(embeds.shape[:2])} (one per token of "
                f"{prefix}prompt_embeds), got {given}."
            )
        if mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"{name} must hold 0 (padding) and 1 (a token) only.")

    def prepare_pair(self, inputs: dict, batch_size: int, device, null: bool):
        """The prompts and (for guidance) the negative or empty prompts, tokenized and encoded together."""
        texts, embeds = [], []
        for kind, wanted in (("", True), ("negative_", null)):
            if not wanted:
                continue
            given = inputs.get(f"{kind}prompt_embeds")
            if given is not None:
                mask = inputs.get(f"{kind}prompt_attention_mask")
                mask = torch.ones(given.shape[:2], dtype=torch.long) if mask is None else mask
                embeds.append(
                    (
                        kind,
                        self._expand(given, batch_size, f"{kind}prompt_embeds"),
                        self._expand(mask, batch_size, f"{kind}prompt_attention_mask"),
                    )
                )
            else:
                prompt = inputs.get(f"{kind}prompt")
                prompt = "" if prompt is None else prompt
                texts.append((kind, self._expand_text(prompt, batch_size, f"{kind}prompt")))
        encoded = {}
        if texts:
            hidden, mask = self.encode([text for _, batch in texts for text in batch], device)
            for i, (kind, _) in enumerate(texts):
                encoded[kind] = (
                    hidden[i * batch_size : (i + 1) * batch_size],
                    mask[i * batch_size : (i + 1) * batch_size],
                )
        for kind, hidden, mask in embeds:
            encoded[kind] = (hidden.to(device), mask.to(device))
        if null and encoded[""][0].shape[1] != encoded["negative_"][0].shape[1]:
            length = max(encoded[""][0].shape[1], encoded["negative_"][0].shape[1])
            encoded = {kind: pad_tokens(hidden, mask, length) for kind, (hidden, mask) in encoded.items()}
        batches = {kind: self.batch(*encoded[kind]) for kind in encoded}
        return batches[""], batches.get("negative_")

    def batch(self, hidden: torch.Tensor, mask: torch.Tensor) -> ConditionBatch:
        return ConditionBatch({"encoder_hidden_states": hidden, "encoder_attention_mask": mask})

    def encode(self, prompts: list[str], device, warn: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Prompts as the encoder's last hidden states `[N x L x D]` (float32) and the attention mask `[N x L]`, padded
        to the longest. Words the tokenizer does not know and prompts longer than the encoder takes are warned of.
        """
        if warn:
            self.warn_about(prompts)
        tokens = self.tokenizer(
            list(prompts), padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        ids, mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)
        with torch.autocast(device_type=torch.device(device).type, enabled=False):
            hidden = self.text_encoder(ids, attention_mask=mask).last_hidden_state
        return hidden.float(), mask

    def warn_about(self, prompts: list[str]) -> None:
        """Warn of the words the tokenizer does not know (naming them) and of prompts cut at the encoder's limit."""
        unknown_id = getattr(self.tokenizer, "unk_token_id", None)
        unknown, too_long = set(), []
        for prompt in dict.fromkeys(prompts):
            tokens = self.tokenizer(prompt, return_offsets_mapping=unknown_id is not None)
            if len(tokens.input_ids) > self.max_length:
                too_long.append(prompt)
            if unknown_id is not None:
                for token, (start, end) in zip(tokens.input_ids, tokens.offset_mapping):
                    if token == unknown_id and end > start:
                        unknown.add(prompt[start:end])
        if unknown:
            warnings.warn(
                "Words this model's tokenizer does not know (each read as one unknown token): "
                f"{', '.join(sorted(unknown))}.",
                stacklevel=5,
            )
        if too_long:
            warnings.warn(
                f"{len(too_long)} prompt(s) longer than the {self.max_length} tokens the text encoder takes were cut "
                f"there, e.g. {too_long[0][:80]!r}.",
                stacklevel=5,
            )

    @staticmethod
    def _expand_text(prompt, batch_size: int, name: str) -> list[str]:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if len(prompts) == 1:
            prompts = prompts * batch_size
        if len(prompts) != batch_size:
            raise ValueError(f"Got {len(prompts)} {name}s for batch_size={batch_size}; pass one per image, or one.")
        return prompts

    @staticmethod
    def _expand(tensor: torch.Tensor, batch_size: int, name: str) -> torch.Tensor:
        if len(tensor) == 1:
            tensor = tensor.expand(batch_size, *tensor.shape[1:])
        if len(tensor) != batch_size:
            raise ValueError(f"Got {len(tensor)} rows of {name} for batch_size={batch_size}: one per image, or one.")
        return tensor


KINDS = (LowResCondition, ClassCondition, PromptCondition, ImageEmbedsCondition, PositionCondition)


class Conditioning:
    """What a model is conditioned on: its kinds, none for an unconditional model."""

    def __init__(self, kinds: list[ConditionKind], embedded_guidance: EmbeddedGuidance | None = None):
        self.kinds, self.embedded_guidance = list(kinds), embedded_guidance  # the latter: w a UNet input (distilled)

    @classmethod
    def of(cls, unet_config, settings: dict | None = None, components: dict | None = None, kinds=KINDS):
        """The conditioning of a model from its UNet config, pipeline settings (`id2label`, ...) and components."""
        found = (kind.from_model(unet_config, settings or {}, components or {}) for kind in kinds)
        return cls(
            [kind for kind in found if kind is not None], EmbeddedGuidance.from_model(unet_config, settings or {})
        )

    def __bool__(self) -> bool:
        return bool(self.kinds)

    def get(self, name: str) -> ConditionKind | None:
        return next((kind for kind in self.kinds if kind.name == name), None)

    def image_channels(self, in_channels: int) -> int:
        """
        The channels of the images (x_t) of a UNet of `in_channels`: less the coordinate channels, then half when a
        kind concatenates an image.
        """
        channels = in_channels - sum(getattr(kind, "channels", 0) for kind in self.kinds)
        return channels // 2 if any(getattr(kind, "concatenates_image", False) for kind in self.kinds) else channels

    def batch_size(self, inputs: dict[str, Any], default: int = 1) -> int:
        """How many images the condition arguments describe (`default` when they fit any number)."""
        sizes = {size for kind in self.kinds if (size := kind.batch_size(inputs)) is not None}
        if len(sizes) > 1:
            raise ValueError(f"The conditions describe different numbers of images: {sorted(sizes)}.")
        return sizes.pop() if sizes else default

    def describe(self) -> str:
        """`this model is unconditional`, or what it is conditioned on and the call arguments that say it."""
        if not self.kinds:
            return "this model is unconditional (its UNet takes no condition)"
        kinds = " and ".join(kind.name for kind in self.kinds)
        return f"this model is conditioned on a {kinds} ({', '.join(self.call_arguments)})"

    @property
    def call_arguments(self) -> tuple[str, ...]:
        return tuple(argument for kind in self.kinds for argument in kind.call_arguments)

    def check(self, inputs: dict[str, Any], guidance_scale) -> float:
        """
        Refuse condition arguments (by name) this model cannot honour, before any model work: arguments of a kind it
        does not take, a guidance scale out of `GUIDANCE_SCALE_RANGE` or with nothing to guide, and what each kind
        refuses (`ConditionKind.check`). Returns the guidance scale as a float.
        """
        guidance_scale = check_guidance_scale(guidance_scale)
        given = sorted(name for name, value in inputs.items() if value is not None and name not in self.call_arguments)
        if given:
            raise ValueError(f"{', '.join(given)} given, but {self.describe()}.")
        if guidance_scale != 1 and not any(kind.guided for kind in self.kinds):
            raise ValueError(
                f"guidance_scale={guidance_scale} needs a condition to guide (class_labels or a prompt), and "
                f"{self.describe()}."
            )
        if self.embedded_guidance is not None:
            self.embedded_guidance.check(guidance_scale, inputs)
        for kind in self.kinds:
            kind.check(inputs, guidance_scale)
        return guidance_scale

    def prepare(
        self, inputs: dict[str, Any], batch_size: int | None, guidance_scale: float, device
    ) -> tuple["Guided", int]:
        """
        The call's conditioning arguments (`inputs`, by name) as what the UNet is called with, and the batch size
        (given, or the one the inputs describe, else 1). The null branch is made only when guidance needs it
        (guidance_scale != 1), and never for a model with guidance distilled in: its UNet reads w
        (`EmbeddedGuidance`), one call on N images. Arguments of a kind the model does not take, and a guidance scale
        out of `GUIDANCE_SCALE_RANGE`, are refused.
        """
        guidance_scale = self.check(inputs, guidance_scale)
        batch_size = self.batch_size(inputs) if batch_size is None else batch_size
        embedded = self.embedded_guidance
        condition, null = ConditionBatch(), ConditionBatch() if guidance_scale != 1 and embedded is None else None
        for kind in self.kinds:
            part, null_part = kind.prepare_pair(inputs, batch_size, device, null is not None)
            condition = condition.merge(part)
            null = null.merge(null_part) if null is not None else None
        if embedded is not None:
            condition = condition.merge(embedded.batch(guidance_scale, batch_size, device))
            return Guided(condition, None, 1.0), batch_size
        return Guided(condition, null, guidance_scale), batch_size
