# Copyright 2026 The ddpm_hub authors. Apache License 2.0.
"""What the UNet is called with besides (x_t, t), how guidance combines it, and the kinds that only add input.

What the network is called with is one `ConditionBatch`: keyword arguments passed to the UNet untouched (improved
diffusion's `model_kwargs`, k-diffusion's `extra_args`) plus, for kinds that add input channels, a tensor
concatenated to x_t. `ConditionBatch.__call__` is the one place a UNet is called with a condition, in sampling,
training (`ddpm_hub.losses`) and the likelihood alike; `guided_output` is the one classifier-free guidance formula
and `check_guidance_scale` the one check of a scale. A `ConditionKind` makes the batch of one kind of condition from
a pipeline call's arguments; the two kinds that guidance keeps (no null branch) live here too: a low-resolution image
(`LowResCondition`) and pixel coordinates (`PositionCondition`).

The kinds with a null branch (a class label, a prompt) and a model's whole `Conditioning` are in
`conditioning_ddpm_hub.py`, which imports every name of this file too: other files import from there. This file is
shipped with it in every published repo (plain diffusers loads it with `trust_remote_code=True`), so it stays
self-contained: torch and the standard library only.
"""

import numbers
from dataclasses import dataclass, field

import torch

# The guidance scales w a pipeline accepts (classifier-free guidance, Ho & Salimans 2022): 0 is the null branch alone,
# 1 the conditional model, w > 1 guided. Far above ~30 every image saturates (Imagen's sweeps stop at 30, with dynamic
# thresholding), so 100 bounds the range well past any useful value; beyond it lie only overflow (1e308 is inf in
# float32) and NaN. One range for every place a scale enters: the pipeline call here, the command lines and training.
GUIDANCE_SCALE_RANGE = (0.0, 100.0)


def check_guidance_scale(guidance_scale) -> float:
    """`guidance_scale` as a float; a ValueError unless it is a finite real number in `GUIDANCE_SCALE_RANGE`."""
    low, high = GUIDANCE_SCALE_RANGE
    valid = isinstance(guidance_scale, numbers.Real) and not isinstance(guidance_scale, bool)
    if not (valid and low <= float(guidance_scale) <= high):  # NaN fails both comparisons
        raise ValueError(
            f"guidance_scale must be a number in [{low:g}, {high:g}] (1: no guidance, 0: the null label alone, "
            f"2-8: typical), got {guidance_scale!r}."
        )
    return float(guidance_scale)


def guidance_embedding(scales: torch.Tensor, dim: int) -> torch.Tensor:
    """
    The guidance scale w of each image as a student with guidance distilled in reads it (Meng et al. 2023; LCM's
    w-conditioning), float32 `[N x dim]`: the sines then the cosines of 1000 w at the frequencies
    10000^(-k / (dim / 2)), k = 0 .. dim / 2 - 1, a timestep embedding applied to 1000 w. The UNet adds its linear
    map of it (`time_cond_proj_dim`, diffusers' `timestep_cond`) to the timestep's embedding.
    """
    half = dim // 2
    frequencies = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(half, dtype=torch.float32) / half).to(
        scales.device
    )
    angles = 1000.0 * scales.float()[:, None] * frequencies[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class EmbeddedGuidance:
    """
    Guidance distilled in: the UNet takes w as an input (`time_cond_proj_dim` in its config; the pipeline setting
    `guidance_range`, {"low": ..., "high": ...}, the w it was trained on), so one call on N images gives the guided
    output. w keeps its meaning (eps_null + w (eps_c - eps_null) of the teacher); a w outside the range is refused.
    """

    setting_names = ("guidance_range",)

    def __init__(self, dim: int, scale_range):
        self.dim, self.range = int(dim), (float(scale_range[0]), float(scale_range[1]))

    @classmethod
    def from_model(cls, unet_config, settings: dict) -> "EmbeddedGuidance | None":
        dim = (
            unet_config.get("time_cond_proj_dim")
            if isinstance(unet_config, dict)
            else getattr(unet_config, "time_cond_proj_dim", None)
        )
        if not dim:
            return None
        scale_range = settings.get("guidance_range")
        if not isinstance(scale_range, dict) or set(scale_range) != {"low", "high"}:
            raise ValueError(
                f"The UNet takes a guidance scale (time_cond_proj_dim={dim}), but the pipeline has no guidance_range "
                f'{{"low": ..., "high": ...}} saying what it was trained on (got {scale_range!r}).'
            )
        return cls(dim, (scale_range["low"], scale_range["high"]))

    def settings(self) -> dict:
        """The pipeline setting (a dict: model_index.json reads a two-item list as a component)."""
        return {"guidance_range": {"low": self.range[0], "high": self.range[1]}}

    def check(self, guidance_scale: float, inputs: dict) -> None:
        negative = [name for name in ("negative_prompt", "negative_prompt_embeds") if inputs.get(name) is not None]
        if negative:
            raise ValueError(
                f"{', '.join(negative)}: this model has guidance distilled in against the empty prompt; it has no "
                "null branch to replace. Leave it out."
            )
        low, high = self.range
        if not low <= guidance_scale <= high:
            raise ValueError(
                f"guidance_scale={guidance_scale:g}: this model has guidance distilled in for w in "
                f"[{low:g}, {high:g}] (one UNet call per step); give a scale in that range."
            )

    def batch(self, guidance_scale: float, batch_size: int, device) -> "ConditionBatch":
        scales = torch.full((batch_size,), float(guidance_scale), device=device)
        return ConditionBatch({"timestep_cond": guidance_embedding(scales, self.dim)})


def image_tokens_before_text(model) -> int:
    """The context tokens a UNet with `encoder_hid_dim_type="text_image_proj"` (Kandinsky 2.1's `TextImageProjection`,
    DALL-E 2's decoder: the CLIP embedding's tokens, then the text's) puts before the text's states; 0 for another."""
    inner = getattr(model, "module", model)  # DDP
    inner = getattr(inner, "_orig_mod", inner)  # torch.compile
    projection = getattr(inner, "encoder_hid_proj", None)
    if _config_value(getattr(inner, "config", {}), "encoder_hid_dim_type") != "text_image_proj" or projection is None:
        return 0
    return int(projection.num_image_text_embeds)


@dataclass
class ConditionBatch:
    """
    What the UNet is called with besides (x_t, t), for a batch of N images.

    Attributes:
        kwargs: keyword arguments of the UNet call, each a tensor `[N x ...]` (`class_labels` `[N]`,
            `encoder_hidden_states` `[N x L x D]`, ...), passed through untouched.
        concat: `[N x C' x H x W]` channels concatenated to x_t on the channel axis, or None.
        base: for a model of the residual (`[N x C x H x W]`, the upsampled input of a super-resolution model that
            diffuses `residual_scale * (x - base)`, as SRDiff does), else None: the model diffuses x itself.
        residual_scale: the factor of the residual (with `base`).
        coordinates: two channels of pixel coordinates (y and x, each from -1 to 1 across the image) concatenated
            last, made at call time for x_t's size (`PositionCondition`).
    """

    kwargs: dict[str, torch.Tensor] = field(default_factory=dict)
    concat: torch.Tensor | None = None
    base: torch.Tensor | None = None
    residual_scale: float = 1.0
    coordinates: bool = False

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """An image in [-1, 1] as the model diffuses it: itself, or its scaled residual over `base`."""
        return x if self.base is None else (x - self.base.to(x)) * self.residual_scale

    def to_image(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse of `to_model`: what the model diffuses back to an image."""
        return x if self.base is None else self.base.to(x) + x / self.residual_scale

    def __call__(self, model, x_t: torch.Tensor, t) -> torch.Tensor:
        """`model(x_t (+ concat), t, **kwargs).sample`: the one place a UNet is called with a condition."""
        parts = [x_t] + ([self.concat.to(x_t.dtype)] if self.concat is not None else [])
        parts += [coordinate_channels(x_t)] if self.coordinates else []
        kwargs = dict(self.kwargs)
        if "image_embeds" in kwargs:  # a CLIP image embedding, in added_cond_kwargs as Kandinsky 2.2's decoder reads
            embeds = kwargs.pop("image_embeds")  # it (its image_proj replaces the states with the embedding's tokens)
            kwargs.setdefault("encoder_hidden_states", embeds[:, None])
            kwargs["added_cond_kwargs"] = {"image_embeds": embeds}
            mask = kwargs.get("encoder_attention_mask")
            tokens = image_tokens_before_text(model)
            if mask is not None and tokens:  # text_image_proj puts the embedding's tokens before the text's: unmasked
                kwargs["encoder_attention_mask"] = torch.cat([mask.new_ones(len(mask), tokens), mask], dim=1)
        return model(torch.cat(parts, dim=1) if len(parts) > 1 else x_t, t, **kwargs).sample

    def __len__(self) -> int:
        tensors = [*self.kwargs.values(), *(tensor for tensor in (self.concat, self.base) if tensor is not None)]
        return len(tensors[0]) if tensors else 0

    def _map(self, function) -> "ConditionBatch":
        concat = None if self.concat is None else function(self.concat)
        base = None if self.base is None else function(self.base)
        kwargs = {name: function(value) for name, value in self.kwargs.items()}
        return ConditionBatch(kwargs, concat, base, self.residual_scale, self.coordinates)

    def cat(self, other: "ConditionBatch") -> "ConditionBatch":
        """This batch followed by `other` (the same keys): the 2N batch of one guided UNet call."""
        concat = None if self.concat is None else torch.cat([self.concat, other.concat])
        base = None if self.base is None else torch.cat([self.base, other.base])
        kwargs = {name: torch.cat([value, other.kwargs[name]]) for name, value in self.kwargs.items()}
        return ConditionBatch(kwargs, concat, base, self.residual_scale, self.coordinates)

    def merge(self, other: "ConditionBatch") -> "ConditionBatch":
        """The conditions of two kinds for the same images: keyword arguments joined, channels stacked."""
        clash = set(self.kwargs) & set(other.kwargs)
        if clash:
            raise ValueError(f"Two kinds of condition both set the UNet argument(s) {sorted(clash)}.")
        parts = [c for c in (self.concat, other.concat) if c is not None]
        residual = self if self.base is not None else other
        return ConditionBatch(
            {**self.kwargs, **other.kwargs},
            torch.cat(parts, dim=1) if parts else None,
            residual.base,
            residual.residual_scale,
            self.coordinates or other.coordinates,
        )

    def repeat(self, times: int) -> "ConditionBatch":
        """The batch tiled `times` times along N (`[N x ...]` -> `[times N x ...]`, as `tensor.repeat`)."""
        return self._map(lambda value: value.repeat(times, *[1] * (value.ndim - 1)))

    def select(self, index) -> "ConditionBatch":
        """Images `index` (a slice, a list or a tensor of positions)."""
        return self._map(lambda value: value[index])

    def to(self, device=None, dtype=None) -> "ConditionBatch":
        """On `device`; floating tensors cast to `dtype` when given (ids stay integers)."""
        return self._map(lambda value: value.to(device=device, dtype=dtype if value.is_floating_point() else None))


class ConditionKind:
    """
    One kind of condition, the sampling side (see `conditioning_ddpm_hub`'s docstring). Subclasses set `name`,
    `call_arguments` and `guided`, and implement `from_model`, `prepare` and, when guided, `null`.
    """

    name: str = ""
    call_arguments: tuple[str, ...] = ()  # the pipeline __call__ arguments this kind reads
    setting_names: tuple[str, ...] = ()  # the pipeline settings (model_index.json entries) it is built from
    guided: bool = False  # classifier-free guidance has a null branch for it

    @classmethod
    def from_model(cls, unet_config, settings: dict, components: dict) -> "ConditionKind | None":
        """This kind, if the model (its UNet config, pipeline settings and components) takes it; else None."""
        raise NotImplementedError

    @property
    def has_null(self) -> bool:
        """Whether classifier-free guidance can use this kind: guided, and the model has its null branch."""
        return self.guided

    def batch_size(self, inputs: dict) -> int | None:
        """How many images the given inputs describe (None: they fit any batch size)."""
        return None

    def check(self, inputs: dict, guidance_scale: float) -> None:
        """Refuse inputs this kind cannot serve (before any model work)."""

    def prepare(self, inputs: dict, batch_size: int, device) -> ConditionBatch:
        """The call's arguments (`inputs`, by name) as what the UNet is called with, for `batch_size` images."""
        raise NotImplementedError

    def null(self, inputs: dict, batch_size: int, device) -> ConditionBatch:
        """The null branch of classifier-free guidance for the same images (guided kinds only)."""
        raise NotImplementedError(f"{type(self).__name__} has no null branch.")

    def prepare_pair(self, inputs: dict, batch_size: int, device, null: bool) -> tuple[ConditionBatch, ConditionBatch]:
        """The condition and, when `null`, its null branch (a kind guidance keeps gives the condition twice)."""
        condition = self.prepare(inputs, batch_size, device)
        if not null:
            return condition, None
        return condition, self.null(inputs, batch_size, device) if self.guided else condition


@dataclass
class Guided:
    """A batch's condition, its null branch (None without guidance) and the guidance scale w: what a step needs."""

    condition: ConditionBatch
    null: ConditionBatch | None = None
    scale: float | torch.Tensor = 1.0  # one w, or one per image `[N]`

    def __call__(self, model, x_t: torch.Tensor, t) -> torch.Tensor:
        return guided_output(model, x_t, t, self.condition, self.null, self.scale)


def guided_output(
    model, x_t: torch.Tensor, t, condition: ConditionBatch, null: ConditionBatch | None, guidance_scale
) -> torch.Tensor:
    """
    The UNet output at (x_t, t) under classifier-free guidance (Ho & Salimans 2022): eps_null + w (eps_c - eps_null)
    on the first C channels (the mean part), the conditional variance channels kept (GLIDE), from one UNet call on
    2N images. w = 1 is the conditional model and w = 0 the null branch, each one exact call on N images. w is a
    number, or a tensor `[N]` of one per image (a distillation's guided teacher; t then `[N]` too).
    """
    per_image = isinstance(guidance_scale, torch.Tensor)
    if null is None or not per_image and guidance_scale == 1:
        return condition(model, x_t, t)
    if not per_image and guidance_scale == 0:
        return null(model, x_t, t)
    both_t = torch.cat([t, t]) if isinstance(t, torch.Tensor) and t.ndim == 1 and len(t) == len(x_t) else t
    both = condition.cat(null)(model, torch.cat([x_t, x_t]), both_t)
    conditional, unconditional = both.chunk(2)
    channels = x_t.shape[1]
    w = guidance_scale.to(both.dtype).view(-1, *[1] * (x_t.ndim - 1)) if per_image else guidance_scale
    guided = unconditional[:, :channels] + w * (conditional[:, :channels] - unconditional[:, :channels])
    return torch.cat([guided, conditional[:, channels:]], dim=1)


class LowResCondition(ConditionKind):
    """
    A low-resolution image, for super-resolution (the stages of Imagen's and DALL-E 2's cascades; Ho et al. 2021,
    Cascaded Diffusion Models). The image z_0 `[N x C x h x w]` in [-1, 1], `low_res_scale` times smaller than the
    output, is corrupted by the forward process at an augmentation level s (noise conditioning augmentation:
    z_s ~ q(z_s | z_0), `augment`; s = 0 leaves it unchanged), upsampled bicubically to the output's size
    (`upsample`) and concatenated to x_t on the channel axis; s reaches the UNet as `class_labels`, through its
    timestep-like class embedding (`class_embed_type="timestep"`, as DeepFloyd IF stage II and the SD upscaler pass
    `noise_level`). Guidance keeps it (it has no null branch). In training, z_0 is the high-resolution image
    box-downsampled by the scale (`downsample`) and rounded to 8 bits, and s is 0 for a share of the examples (the
    trainer's `--clean_low_res_prob`), else drawn in 1 .. `max_noise_level`.

    With `residual_scale` set, the model diffuses `residual_scale * (x - upsample(z_0))`, the detail the clean input
    lacks, rather than x (SRDiff, Li et al. 2022): a model that has learnt little starts from the upsampled input,
    not from a blur of its training photographs. The scale brings the residual's spread near the images' (on crops of
    `builtin:photos` the bicubic residual has a standard deviation of 0.14 in [-1, 1]; `ddpm-sr-16-to-64` takes 4).

    Call arguments (the super-resolution pipeline makes them from its `image` and `noise_level`): `low_res` (z_s),
    `noise_level` (s per image, `[N]`) and `clean_low_res` (z_0, the residual's base; default `low_res`).
    """

    name = "low_res"
    concatenates_image = True  # the UNet takes x_t and the image, of the same channels: twice the image's
    call_arguments = ("low_res", "noise_level", "clean_low_res")
    setting_names = ("low_res_scale", "max_noise_level", "default_noise_level", "residual_scale")
    guided = False

    def __init__(
        self,
        low_res_scale: int = 4,
        max_noise_level: int = 250,
        default_noise_level: int = 0,
        residual_scale: float | None = None,
    ):
        self.scale, self.max_noise_level, self.default_noise_level = (
            low_res_scale,
            max_noise_level,
            default_noise_level,
        )
        self.residual_scale = residual_scale

    @classmethod
    def from_model(cls, unet_config, settings: dict, components: dict) -> "LowResCondition | None":
        scale = settings.get("low_res_scale")
        if scale is None:
            return None
        levels = settings.get("max_noise_level", 250), settings.get("default_noise_level") or 0
        return cls(scale, *levels, settings.get("residual_scale"))

    def check(self, inputs: dict, guidance_scale: float) -> None:
        if inputs.get("low_res") is None:
            raise ValueError(
                "This is a super-resolution model: it upsamples an image. Load it with "
                "DDPMHubSuperResolutionPipeline and pass image=..."
            )
        levels = inputs.get("noise_level")
        if levels is not None and not bool(((levels >= 0) & (levels <= self.max_noise_level)).all()):
            raise ValueError(
                f"noise_level must be in 0..{self.max_noise_level} (the levels this model was trained on), got "
                f"{levels.tolist()}."
            )

    def batch_size(self, inputs: dict) -> int | None:
        low_res = inputs.get("low_res")
        return None if low_res is None or len(low_res) == 1 else len(low_res)

    def prepare(self, inputs: dict, batch_size: int, device) -> ConditionBatch:
        low_res = inputs["low_res"].to(device)
        levels = inputs.get("noise_level")
        levels = torch.full((len(low_res),), self.default_noise_level) if levels is None else levels
        clean = inputs.get("clean_low_res")
        clean = low_res if clean is None else clean.to(device)
        if len(low_res) == 1:
            low_res, levels = low_res.expand(batch_size, *low_res.shape[1:]), levels.expand(batch_size)
        if len(clean) == 1:
            clean = clean.expand(batch_size, *clean.shape[1:])
        return self.condition(low_res, levels.to(device), clean)

    def condition(
        self, low_res: torch.Tensor, levels: torch.Tensor, clean: torch.Tensor | None = None
    ) -> ConditionBatch:
        """
        What the UNet is called with: z_s upsampled to the output size, concatenated; s as `class_labels`; for a
        model of the residual, the base `upsample(z_0)` (`clean`, default z_s).
        """
        size = (low_res.shape[-2] * self.scale, low_res.shape[-1] * self.scale)
        kwargs, concat = {"class_labels": levels.long()}, self.upsample(low_res, size)
        if not self.residual_scale:
            return ConditionBatch(kwargs, concat)
        base = concat if clean is None or clean is low_res else self.upsample(clean, size)
        return ConditionBatch(kwargs, concat, base, float(self.residual_scale))

    @staticmethod
    def upsample(low_res: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """
        Bicubic upsampling (a = -0.75, pixel centres aligned: `align_corners=False`), in training and sampling
        alike: 0.9 dB nearer the photographs than bilinear (`ddpm-hub eval --sr_quality` prints both).
        """
        return torch.nn.functional.interpolate(low_res.float(), size=size, mode="bicubic", align_corners=False)

    @staticmethod
    def downsample(image: torch.Tensor, scale: int) -> torch.Tensor:
        """The low-resolution image of a training example: a box (area) filter of `scale` x `scale` pixels."""
        return torch.nn.functional.avg_pool2d(image, kernel_size=scale)

    @staticmethod
    def augment(low_res: torch.Tensor, levels: torch.Tensor, noise: torch.Tensor, alphas_cumprod) -> torch.Tensor:
        """
        z_s = sqrt(ab_s) z_0 + sqrt(1 - ab_s) eps (DDPM eq. 4) at level s (the paper's timestep: s = 1 is the first
        step, diffusers' index s - 1); s = 0 is z_0 itself.
        """
        alpha_bar = torch.ones(len(levels), dtype=torch.float32)
        noisy = levels > 0
        alpha_bar[noisy] = torch.as_tensor(alphas_cumprod, dtype=torch.float32)[(levels[noisy] - 1).long().cpu()]
        alpha_bar = alpha_bar.to(low_res.device).view(-1, *[1] * (low_res.ndim - 1))
        return alpha_bar.sqrt() * low_res + (1 - alpha_bar).sqrt() * noise.to(low_res)


def coordinate_channels(x: torch.Tensor) -> torch.Tensor:
    """`[N x 2 x H x W]` of x's size, dtype and device: each pixel's y, then x, from -1 to 1 across the image."""
    n, _, height, width = x.shape
    y = torch.linspace(-1, 1, height, device=x.device, dtype=x.dtype).view(1, 1, height, 1).expand(n, 1, height, width)
    x = torch.linspace(-1, 1, width, device=x.device, dtype=x.dtype).view(1, 1, 1, width).expand(n, 1, height, width)
    return torch.cat([y, x], dim=1)


class PositionCondition(ConditionKind):
    """
    Where each pixel is: two channels of coordinates (y and x, -1 to 1 across the image) concatenated to x_t, last
    (CoordConv, Liu et al. 2018). A convolutional UNet is blind to position but at its borders, and its cross-attention
    queries carry no position of their own, so "3 left of 7" and "7 left of 3" differ to it only through the border;
    with the coordinates a query knows its side. Set by the pipeline setting `coordinate_channels` (2); no call
    arguments, and guidance keeps it.
    """

    name = "position"
    setting_names = ("coordinate_channels",)
    channels = 2  # the UNet input channels it takes
    guided = False

    @classmethod
    def from_model(cls, unet_config, settings: dict, components: dict) -> "PositionCondition | None":
        count = settings.get("coordinate_channels")
        if not count:
            return None
        if count != cls.channels:
            raise ValueError(f"coordinate_channels must be {cls.channels} (y and x), got {count!r}.")
        return cls()

    def prepare(self, inputs: dict, batch_size: int, device) -> ConditionBatch:
        return ConditionBatch(coordinates=True)


# The kinds a model may take, in the order their channels are concatenated.


def pad_tokens(hidden: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder states `[N x L x D]` and mask `[N x L]` padded with zeros (masked out) to `length` tokens."""
    extra = length - hidden.shape[1]
    if extra <= 0:
        return hidden, mask
    hidden = torch.cat([hidden, hidden.new_zeros(hidden.shape[0], extra, hidden.shape[2])], dim=1)
    return hidden, torch.cat([mask, mask.new_zeros(mask.shape[0], extra)], dim=1)


def _config_value(config, key: str):
    """A key of a diffusers config (a FrozenDict with attributes) or of a plain dict."""
    return config.get(key) if isinstance(config, dict) else getattr(config, key, None)
