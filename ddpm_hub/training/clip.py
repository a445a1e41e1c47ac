"""
Train a CLIP (a transformers `CLIPModel`: a text and a vision transformer with projections, Radford et al. 2021) with
the same script, on any captioned data the data layer reads: the first stage of unCLIP (DALL-E 2).

    # The README's job: ddpm-unclip-digit-pairs-clip on builtin:digit-pairs, minutes on a CPU
    accelerate launch --num_processes 1 training/train.py --config training/configs/ddpm-unclip-digit-pairs-clip.yaml
    ddpm-hub eval runs/ddpm-unclip-digit-pairs-clip --clip_accuracy

`--pipeline` names a CLIP configuration when its folder (or `pipelines/<name>`) holds a transformers `config.json`
with `model_type` clip and no `model_index.json`; with weights beside it, the run fine-tunes them. The folder's
tokenizer (`clip_word_tokenizer`: its end token the largest id, where CLIP pools) is used, else one is built from the
data's captions. Its `image_preprocessing.json` says how the images become the vision tower's square input
(`ddpm_hub.loading.clip.ImagePreprocessing`: builtin:digit-pairs' 16 x 32 canvases padded to 32 x 32 with black).

What is shared with a DDPM run: the data (`load_training_data`, the held-out split), the order of the micro-batches
(`MicroBatches`: a function of (seed, m, rank)), AdamW and its schedule, EMA, Accelerate (DDP, mixed precision),
atomic checkpoints and an exact resume, the locked output folder. Each image's caption is drawn among its captions
from (seed, CAPTION, m, rank). The objective (`clip_loss`) masks captions of the same meaning out of each other's
negatives and, with several processes, compares every rank's rows with the global batch. This module holds what the
run is; the loop and the entry are in `clip_loop`, the checkpoints and the end in `clip_output`.
"""

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from diffusers.optimization import get_scheduler

from ..data import ImageDatasetReport
from ..errors import UsageError
from ..loading.clip import CLIP_MODEL_TYPE, ImagePreprocessing, check_text_pooling, clip_word_tokenizer
from ..loading.configs import PIPELINES_DIR, count_parameters
from ..options import check_ranges
from ..run_folder import check_apart_from_sources, is_pipeline_folder, read_json
from .batches import MicroBatches
from .data import load_training_data, make_micro_batches
from .ema import EMA
from .model import make_optimizer
from .options import TrainingOptions, options_given

logger = get_logger(__name__, log_level="INFO")

CONFIG_FILE = "config.json"
CAPTION = 100  # the randomness stream of the caption drawn for each image (apart from `randomness`' streams)


@dataclass(frozen=True)
class ClipSource:
    """A CLIP configuration (or a trained CLIP folder, to fine-tune) named by --pipeline."""

    name: str
    folder: Path
    config: dict

    kind = "CLIP configuration"  # what --dry-run reports as the pipeline's source

    @property
    def trained(self) -> bool:
        return any(self.folder.glob("*.safetensors"))

    @property
    def has_tokenizer(self) -> bool:
        return (self.folder / "tokenizer.json").is_file()

    def preprocessing(self) -> ImagePreprocessing:
        """The folder's `image_preprocessing.json`, else the vision tower's square in [-1, 1] (images resized)."""
        found = ImagePreprocessing.read(self.folder)
        if found is not None:
            return found
        vision = self.config.get("vision_config") or {}
        channels = vision.get("num_channels", 3)
        return ImagePreprocessing(vision.get("image_size", 224), channels, (0.5,) * channels, (0.5,) * channels)


def clip_source(name: str) -> ClipSource | None:
    """--pipeline as a CLIP: a folder, or `pipelines/<name>`, whose `config.json` has `model_type` clip and which has
    no `model_index.json`. None for anything else (left to the autoencoder's and the pipelines' checks)."""
    for candidate in (Path(name), PIPELINES_DIR / name):
        if is_pipeline_folder(candidate) or not (candidate / CONFIG_FILE).is_file():
            continue
        config = read_json(candidate / CONFIG_FILE, "a model configuration") or {}
        if config.get("model_type") == CLIP_MODEL_TYPE:
            return ClipSource(name, candidate, config)
    return None


# ----------------------------------------------------------------------------------------------------------------
# Checks: before any work


def check_clip_options(o: TrainingOptions, source: ClipSource) -> TrainingOptions:
    """Everything a user can get wrong about a CLIP run; returns the options with the defaults filled in."""
    from .checks import check_environment, check_output_dir

    check_ranges(o)
    o.data.check()
    refuse_other_options(o)
    if o.data.streaming:
        raise UsageError("--streaming: a CLIP run reads a decoded dataset (its captions are read upfront); drop it.")
    if o.batches.random_flip:
        raise UsageError(
            "--random_flip: a flipped image no longer matches a caption that says what is left and right; CLIP runs "
            "take none."
        )
    if o.data.random_crop is not None:
        raise UsageError("--random_crop: a CLIP run reads whole images (its image_preprocessing.json pads them).")
    if o.hub.push_to_hub:
        raise UsageError("--push_to_hub publishes pipelines; a CLIP folder is uploaded with huggingface_hub.")
    if o.batches.train_batch_size < 2:
        raise UsageError("--train_batch_size 1: a contrastive loss needs other images in the batch as negatives.")
    check_environment(o)
    sources = {"--pipeline": (str(source.folder), "the trained CLIP would overwrite its configuration")}
    check_apart_from_sources(Path(o.output_dir), "--output_dir", sources)
    check_output_dir(o)
    preprocessing = source.preprocessing()
    size = preprocessing.data_size or (preprocessing.image_size,) * 2
    return replace(o, data=o.data.resolved(resolution=list(size)))


def refuse_other_options(o: TrainingOptions) -> None:
    """The options of a DDPM's model, conditioning, distillation, autoencoder and prior mean nothing to a CLIP."""
    given = options_given(o, ("model", "conditioning", "autoencoder", "prior"), kept=("pipeline", "revision"))
    if given:
        raise UsageError(
            f"{', '.join(given)}: options of diffusion or autoencoder runs; --pipeline {o.model.pipeline} is a CLIP "
            "configuration, trained by its contrastive loss (the optimizer, batch, EMA and data options apply)."
        )


# ----------------------------------------------------------------------------------------------------------------
# The data: each image's captions and what they mean


def meaning_ids(captions: list[list[str]]) -> torch.Tensor:
    """
    int64 `[N]`: one id per distinct set of captions (lower-cased), a stable hash of the set, so that images whose
    captions are the same set (on builtin:digit-pairs: the same ordered pair) share it on every rank and run.
    """
    ids = []
    for texts in captions:
        key = "\n".join(sorted({text.strip().lower() for text in texts}))
        ids.append(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1)
    return torch.tensor(ids, dtype=torch.int64)


class CaptionColumns:
    """What `load_training_data` asks of a model's conditioning, for a CLIP: the captions and their meaning ids."""

    prompts: list[str] = []  # captions are read
    classes = None

    def columns(self, decoded, source: str, pipeline: str) -> dict:
        if decoded.captions is None or any(not texts for texts in decoded.captions):
            raise UsageError(
                f"{pipeline} is a CLIP, trained on images with captions, and {source} gave none (or images without "
                "one): use builtin:digit-pairs, an image folder with metadata.jsonl, or a Hub dataset with "
                "--caption_column."
            )
        return {"captions": decoded.captions, "meaning": meaning_ids(decoded.captions)}


# ----------------------------------------------------------------------------------------------------------------
# The run


class ContrastiveCLIP(torch.nn.Module):
    """
    The CLIP as one forward, what DDP wraps: (input_ids, attention_mask `[N x L]`, pixel_values `[N x C x S x S]`) ->
    (text_embeds, image_embeds) of unit norm `[N x D]`, and logit_scale (through the forward, so that DDP sees it).
    """

    def __init__(self, clip):
        super().__init__()
        self.clip = clip

    def forward(self, input_ids, attention_mask, pixel_values):
        out = self.clip(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
        return out.text_embeds, out.image_embeds, self.clip.logit_scale


@dataclass
class ClipRun:
    """Everything the CLIP's loop touches (the attributes `loop.sync_losses` and `output.start_output` read)."""

    options: TrainingOptions
    accelerator: Accelerator
    source: ClipSource
    model: torch.nn.Module  # the prepared ContrastiveCLIP (DDP, autocast)
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: EMA | None
    data: MicroBatches
    dataset: object  # training.data.TrainingData: the images, the captions, the held-out images
    report: ImageDatasetReport
    output_dir: Path
    tokenizer: object
    preprocessing: ImagePreprocessing

    @property
    def clip(self):
        """The bare CLIPModel: what is saved, checksummed and averaged."""
        return self.accelerator.unwrap_model(self.model, keep_torch_compile=False).clip

    def final_clip(self):
        return self.ema.model if self.ema is not None else self.clip

    @property
    def images_per_step(self) -> int:
        return self.data.global_batch_size * self.options.batches.gradient_accumulation_steps


def clip_tokenizer(source: ClipSource, captions: list[list[str]]):
    """The folder's tokenizer, else a word tokenizer of the data's captions (`clip_word_tokenizer`)."""
    from transformers import AutoTokenizer

    if source.has_tokenizer:
        return AutoTokenizer.from_pretrained(source.folder)
    text = source.config.get("text_config") or {}
    return clip_word_tokenizer([t for texts in captions for t in texts], text.get("max_position_embeddings", 77))


def build_clip(source: ClipSource, seed: int, tokenizer):
    """The configuration with fresh weights from `seed` (or the folder's weights, to fine-tune), checked against the
    tokenizer: every id embedded, the text pooled at its end token."""
    from transformers import CLIPConfig, CLIPModel

    from ..loading.components import check_vocabulary

    where = f"--pipeline {source.name}"
    if source.trained:
        clip = CLIPModel.from_pretrained(source.folder, dtype=torch.float32)
    else:
        config = CLIPConfig.from_dict(
            {key: value for key, value in source.config.items() if key not in ("transformers_version",)}
        )
        if not source.has_tokenizer:  # the tokenizer built from the data: the text tower takes its ids
            config.text_config.vocab_size = len(tokenizer)
            config.text_config.eos_token_id = config.text_config.bos_token_id = tokenizer.eos_token_id
            config.text_config.pad_token_id = tokenizer.pad_token_id
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            clip = CLIPModel(config)
    check_vocabulary(tokenizer, clip.text_model, where)
    check_text_pooling(clip.config.text_config, tokenizer, where)
    length = clip.config.text_config.max_position_embeddings
    if tokenizer.model_max_length > length:
        tokenizer.model_max_length = length
    return clip


def build_clip_run(o: TrainingOptions, source: ClipSource, accelerator: Accelerator) -> ClipRun:
    from .run import resolve_training_length

    preprocessing = source.preprocessing()
    dataset = load_training_data(
        o.data, o.validation.validation_holdout, o.seed, CaptionColumns(), preprocessing.num_channels,
        o.model.pipeline, accelerator,
    )  # fmt: skip
    data = make_micro_batches(o.batches, o.seed, accelerator, dataset)
    o = resolve_training_length(o, data)
    o = o.changed("speed", mixed_precision=accelerator.mixed_precision)
    tokenizer = clip_tokenizer(source, dataset.columns["captions"])
    clip = build_clip(source, o.seed, tokenizer).train()
    logger.info("CLIPModel: %s parameters", f"{count_parameters(clip):,}")
    if o.speed.gradient_checkpointing:
        clip.gradient_checkpointing_enable()
    wrapper = ContrastiveCLIP(clip)
    optimizer = make_optimizer(list(clip.parameters()), o.optimizer, accelerator.device)
    lr_scheduler = get_scheduler(
        o.optimizer.lr_scheduler,
        optimizer,
        num_warmup_steps=o.optimizer.lr_warmup_steps,
        num_training_steps=o.length.max_train_steps,
    )
    ema = EMA(clip, o.ema.ema_max_decay, o.ema.ema_inv_gamma, o.ema.ema_power) if o.ema.use_ema else None
    model, optimizer, lr_scheduler = accelerator.prepare(wrapper, optimizer, lr_scheduler)
    if ema is not None:
        ema.model.to(accelerator.device)
    return ClipRun(
        o, accelerator, source, model, optimizer, lr_scheduler, ema, data, dataset, dataset.report, Path(o.output_dir),
        tokenizer, preprocessing,
    )  # fmt: skip
