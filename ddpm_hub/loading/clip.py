"""
CLIP (Radford et al. 2021) as a component: a transformers `CLIPModel`, its tokenizer and the facts of its image
preprocessing, loaded by name and frozen, for the stages of unCLIP (DALL-E 2, Ramesh et al. 2022) that read its
embeddings. A CLIP trained here (`ddpm_hub.training.clip`) is a folder that plain transformers loads:

    model = transformers.CLIPModel.from_pretrained(folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    # ddpm_hub adds the image side transformers has no class for: image_preprocessing.json
    model, tokenizer, preprocessing = load_clip(folder)  # or a Hub CLIP: "openai/clip-vit-base-patch32"

- `ImagePreprocessing`: from images (uint8, or floats in [0, 1]) to the vision tower's `pixel_values`: a CLIP trained
  here on `data_size` images pads them to its square `image_size` with the background; a Hub CLIP resizes the
  shorter side and crops the centre, as its `CLIPImageProcessor` does; then `(x - image_mean) / image_std`.
- `clip_word_tokenizer(captions)`: a word-level tokenizer whose end token is the *largest* id, as OpenAI's
  `<|endoftext|>` (49407) is. transformers' `CLIPTextTransformer` pools at `input_ids.argmax(-1)` when the config's
  `eos_token_id` is 2 (its behaviour before PR #24773, kept for old checkpoints), else at the first
  `eos_token_id`: with the end token last, both read the end token. `word_tokenizer` (`ddpm_hub.loading.text`),
  whose end token is id 2, would pool at the largest word id instead. `check_text_pooling` refuses that pairing.
- `encode_text`, `encode_images`: unit-norm embeddings, what the contrastive loss and the later stages compare.
"""

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..errors import UsageError
from ..run_folder import read_json, write_json

PREPROCESSING_FILE = "image_preprocessing.json"
CLIP_MODEL_TYPE = "clip"
LEGACY_EOS_ID = 2  # CLIPTextTransformer pools at argmax(input_ids) when the config's eos_token_id is this
PAD, UNKNOWN, END = "[PAD]", "[UNK]", "[EOS]"
EXAMPLE_CLIPS = (
    "runs/ddpm-unclip-digit-pairs-clip (training/configs/ddpm-unclip-digit-pairs-clip.yaml) or a Hub CLIP such as "
    "openai/clip-vit-base-patch32"
)


@dataclass(frozen=True)
class ImagePreprocessing:
    """
    How images become a CLIP's `pixel_values` `[N x num_channels x image_size x image_size]`, saved as
    `image_preprocessing.json` beside the model.

    Args:
        image_size: the square side the vision tower takes (its `vision_config.image_size`).
        num_channels: 1 (gray) or 3; gray images are repeated to 3 channels for an RGB tower.
        image_mean, image_std: per channel, on pixels in [0, 1].
        data_size: `[H, W]` of the images the CLIP was trained on: such images are padded to the square, centred,
            with `pad_value` (the background); None, or an image of another size: the shorter side resized to
            `image_size` (bicubic) and the centre cropped, as `CLIPImageProcessor` does.
        pad_value: the padding, a pixel value in [0, 1] (0: black, the digits' background).
    """

    image_size: int
    num_channels: int
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    data_size: tuple[int, int] | None = None
    pad_value: float = 0.0

    def __post_init__(self):
        for name in ("image_mean", "image_std"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if self.data_size is not None:
            object.__setattr__(self, "data_size", tuple(int(v) for v in self.data_size))
            if max(self.data_size) > self.image_size:
                raise UsageError(f"{PREPROCESSING_FILE}: data_size {list(self.data_size)} does not fit in the "
                                 f"{self.image_size}x{self.image_size} square the vision tower takes.")  # fmt: skip
        if self.num_channels not in (1, 3) or len(self.image_mean) != self.num_channels != len(self.image_std):
            raise UsageError(
                f"{PREPROCESSING_FILE}: num_channels must be 1 or 3 with one image_mean and image_std each, got "
                f"{self.num_channels}, {list(self.image_mean)}, {list(self.image_std)}."
            )

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """Images `[N x C x H x W]`, uint8 or floats in [0, 1] -> normalised `pixel_values` (float32)."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if x.shape[1] == 1 and self.num_channels == 3:
            x = x.repeat(1, 3, 1, 1)
        if x.shape[1] != self.num_channels:
            raise ValueError(f"This CLIP takes images of {self.num_channels} channel(s), got {x.shape[1]}.")
        height, width = x.shape[-2:]
        side = self.image_size
        if self.data_size is not None and (height, width) == self.data_size:
            top, left = (side - height) // 2, (side - width) // 2
            x = F.pad(x, (left, side - width - left, top, side - height - top), value=self.pad_value)
        elif (height, width) != (side, side):
            scale = side / min(height, width)
            size = (max(side, round(height * scale)), max(side, round(width * scale)))
            x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
            top, left = (size[0] - side) // 2, (size[1] - side) // 2
            x = x[..., top : top + side, left : left + side]
        mean = torch.tensor(self.image_mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.image_std, device=x.device).view(1, -1, 1, 1)
        return ((x - mean) / std).contiguous()

    def save(self, folder: str | os.PathLike) -> Path:
        path = Path(folder, PREPROCESSING_FILE)
        write_json(path, {key: list(v) if isinstance(v, tuple) else v for key, v in asdict(self).items()})
        return path

    @classmethod
    def read(cls, folder: str | os.PathLike) -> "ImagePreprocessing | None":
        """The folder's `image_preprocessing.json`; None without one."""
        data = read_json(Path(folder, PREPROCESSING_FILE), "a CLIP's image preprocessing")
        if data is None:
            return None
        try:
            return cls(**data)
        except TypeError as error:
            raise UsageError(
                f"{Path(folder, PREPROCESSING_FILE)} is not a CLIP's image preprocessing: {error}"
            ) from None

    @classmethod
    def from_processor_config(cls, config: dict, num_channels: int = 3) -> "ImagePreprocessing":
        """From a Hub CLIP's `preprocessor_config.json` (`CLIPImageProcessor`: crop_size, image_mean, image_std)."""
        crop = config.get("crop_size", config.get("size", 224))
        side = crop.get("height", crop.get("shortest_edge")) if isinstance(crop, dict) else crop
        mean, std = config.get("image_mean", (0.5,) * num_channels), config.get("image_std", (0.5,) * num_channels)
        return cls(int(side), num_channels, mean, std)


class LoadedCLIP(NamedTuple):
    """What `load_clip` gives: the frozen `CLIPModel`, its tokenizer, its `ImagePreprocessing`."""

    model: object
    tokenizer: object
    preprocessing: ImagePreprocessing


def clip_word_tokenizer(captions, max_length: int = 16):
    """
    A word-level `PreTrainedTokenizerFast` over the captions' words (lower-cased, split on white space and
    punctuation) for a CLIP text tower: ids [PAD] 0, [UNK] 1, the words, then [EOS] last, the largest id, ending
    every sequence (module docstring: where CLIP pools). `model_max_length` = `max_length` tokens.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from .text import words_of

    tokens = [PAD, UNKNOWN, *words_of(captions), END]
    vocabulary = {token: i for i, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocabulary, unk_token=UNKNOWN))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {END}", special_tokens=[(END, len(tokens) - 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=PAD, unk_token=UNKNOWN, eos_token=END, model_max_length=max_length
    )


def check_text_pooling(text_config, tokenizer, where: str) -> None:
    """
    The text tower pools at the tokenizer's end token: with the legacy `eos_token_id` 2 (pooling at the argmax of
    the ids) the end token must be the largest id; otherwise the config's `eos_token_id` must be the end token's id.
    """
    end = tokenizer.eos_token_id
    if end is None:
        raise UsageError(f"{where}: the tokenizer has no end token ([EOS]); CLIP's text tower pools at it.")
    largest = len(tokenizer) - 1
    if text_config.eos_token_id == LEGACY_EOS_ID and end != largest:
        raise UsageError(
            f"{where}: text_config.eos_token_id is 2, so transformers' CLIP text tower pools at the largest id of "
            f"each caption, but the tokenizer's end token is id {end}, not its largest id ({largest}): the pooled "
            "state would be a word's. Give the end token the largest id (clip_word_tokenizer does) or set "
            f"text_config.eos_token_id to {end}."
        )
    if text_config.eos_token_id != LEGACY_EOS_ID and text_config.eos_token_id != end:
        raise UsageError(
            f"{where}: text_config.eos_token_id is {text_config.eos_token_id} but the tokenizer ends captions with id "
            f"{end}: CLIP's text tower pools at the first eos_token_id, which these captions do not have."
        )


def clip_config(name_or_path: str | os.PathLike, revision: str | None = None):
    """The config of `name_or_path`, checked to be a CLIP's (`model_type` clip); a clear refusal otherwise."""
    import transformers

    if os.path.isfile(os.path.join(str(name_or_path), "model_index.json")):
        raise UsageError(
            f"{str(name_or_path)!r} is a pipeline folder (model_index.json), not a CLIP: give the CLIP's own folder "
            f"(config.json of model_type clip beside its weights and tokenizer), e.g. {EXAMPLE_CLIPS}."
        )
    version = {} if revision is None else {"revision": revision}
    try:
        config = transformers.AutoConfig.from_pretrained(str(name_or_path), **version)
    except (OSError, ValueError) as error:
        raise UsageError(
            f"{str(name_or_path)!r} cannot be read as a transformers CLIP: {error} Give a CLIP folder or Hub repo, "
            f"e.g. {EXAMPLE_CLIPS}."
        ) from None
    if config.model_type != CLIP_MODEL_TYPE:
        architectures = ", ".join(getattr(config, "architectures", None) or []) or "no architectures named"
        raise UsageError(
            f"{str(name_or_path)!r} is a {config.model_type} model ({architectures}), not a CLIP: give a CLIPModel "
            f"(config.json with model_type clip, a text and a vision tower with projections), e.g. {EXAMPLE_CLIPS}."
        )
    return config


def load_clip(
    name_or_path: str | os.PathLike, revision: str | None = None, dtype: torch.dtype | None = None
) -> LoadedCLIP:
    """
    A CLIP by Hub name or folder at `revision`, frozen (eval mode, no gradients) in `dtype` (float32 by default):
    `(model, tokenizer, preprocessing)`. A folder without weights (a configuration such as
    `pipelines/ddpm-unclip-digit-pairs-clip`) or without a tokenizer, and any model that is not a CLIP, are refused.
    """
    import transformers

    from .components import check_vocabulary, tokenizer_vocabularies

    name, where = str(name_or_path), f"CLIP {str(name_or_path)!r}"
    clip_config(name, revision)
    local = os.path.isdir(name)
    if local and not any(Path(name).glob("*.safetensors")) and not any(Path(name).glob("*.bin")):
        raise UsageError(
            f"{where} is a configuration without weights: train it first (accelerate launch training/train.py "
            f"--pipeline {name}) and load the run's folder."
        )
    if local and not any(Path(name, file).is_file() for file in tokenizer_vocabularies()):
        raise UsageError(f"{where}: the folder has no tokenizer (tokenizer.json); save it with the model.")
    version = {} if revision is None else {"revision": revision}
    model = transformers.CLIPModel.from_pretrained(name, dtype=dtype or torch.float32, **version)
    tokenizer = transformers.AutoTokenizer.from_pretrained(name, **version)
    check_vocabulary(tokenizer, model.text_model, where)
    check_text_pooling(model.config.text_config, tokenizer, where)
    preprocessing = ImagePreprocessing.read(name) if local else None
    if preprocessing is None:
        preprocessing = hub_preprocessing(name, revision, model.config.vision_config)
    vision = model.config.vision_config
    if (preprocessing.image_size, preprocessing.num_channels) != (vision.image_size, vision.num_channels):
        raise UsageError(
            f"{where}: its image preprocessing makes {preprocessing.num_channels}-channel images of "
            f"{preprocessing.image_size}x{preprocessing.image_size}, and its vision tower takes {vision.num_channels} "
            f"channel(s) at {vision.image_size}x{vision.image_size}."
        )
    return LoadedCLIP(model.eval().requires_grad_(False), tokenizer, preprocessing)


def hub_preprocessing(name: str, revision: str | None, vision_config) -> ImagePreprocessing:
    """A CLIP without `image_preprocessing.json`: its `preprocessor_config.json`, else the tower's size in [-1, 1]."""
    from transformers.utils import cached_file

    for file in (PREPROCESSING_FILE, "preprocessor_config.json"):
        path = cached_file(name, file, revision=revision, _raise_exceptions_for_missing_entries=False)
        if path is not None:
            data = json.loads(Path(path).read_text())
            if file == PREPROCESSING_FILE:
                return ImagePreprocessing(**data)
            return ImagePreprocessing.from_processor_config(data, vision_config.num_channels)
    channels = vision_config.num_channels
    return ImagePreprocessing(vision_config.image_size, channels, (0.5,) * channels, (0.5,) * channels)


@torch.no_grad()
def encode_text(model, tokenizer, captions: list[str], batch_size: int = 256) -> torch.Tensor:
    """Unit-norm text embeddings `[N x projection_dim]` of the captions (CLIP's `text_embeds`), each cut to the
    tokenizer's `model_max_length` with its end token kept."""
    device, rows = model.device, []
    for start in range(0, len(captions), batch_size):
        batch = captions[start : start + batch_size]
        tokens = tokenizer(batch, padding=True, truncation=True, return_tensors="pt").to(device)
        features = model.get_text_features(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)
        rows.append(F.normalize(features.pooler_output.float(), dim=-1))
    return torch.cat(rows)


@torch.no_grad()
def encode_images(
    model, preprocessing: ImagePreprocessing, images: torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    """Unit-norm image embeddings `[N x projection_dim]` of images `[N x C x H x W]` (uint8, or floats in [0, 1])."""
    device, rows = model.device, []
    for batch in images.split(batch_size):
        pixels = preprocessing.pixel_values(batch.to(device)).to(model.dtype)
        rows.append(F.normalize(model.get_image_features(pixel_values=pixels).pooler_output.float(), dim=-1))
    return torch.cat(rows)
