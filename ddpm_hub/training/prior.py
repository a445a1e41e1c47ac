"""
Train unCLIP's diffusion prior (DALL-E 2, Ramesh et al. 2022, section 2.2) with the same script: a DDPM over the frozen
CLIP's image embeddings of captioned data, conditioned on the CLIP text embedding and token states of a caption.

    # The README's job, after the CLIP (training/configs/ddpm-unclip-digit-pairs-clip.yaml)
    accelerate launch --num_processes 1 training/train.py --config training/configs/ddpm-unclip-digit-pairs-prior.yaml

`--pipeline` names a prior configuration when its folder (or `pipelines/<name>`) holds `prior/config.json` (a
diffusers `PriorTransformer`) and `prior_scheduler/scheduler_config.json`, and no `model_index.json`; `--clip` names
the frozen CLIP. Before the first step every image's CLIP embedding and every distinct caption's text embedding and
token states are computed once, in memory (`PriorTable`): the CLIP is frozen, so they are the same at every step and
on every resume. The data's mean and std per dimension (training rows only) become the prior's `clip_mean` and
`clip_std`, not trained. Each micro-batch m draws, from (seed, stream, m, rank): one caption per image, the captions
dropped to the empty caption (`--text_dropout_prob`), t and the noise; the loss is `prior_loss` (x_0, MSE).

What is shared with the other runs: the data (`load_training_data`, the held-out split), `MicroBatches`, AdamW
(`make_optimizer`), EMA, Accelerate, atomic checkpoints and an exact resume, the locked output folder. This module
holds what the run is; the loop and the entry are in `prior_loop`, the checkpoints and the end in `prior_output`.
"""

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from diffusers.optimization import get_scheduler

from ..data import ImageDatasetReport
from ..errors import UsageError
from ..loading.configs import PIPELINES_DIR, count_parameters
from ..options import check_ranges
from ..run_folder import check_apart_from_sources, is_pipeline_folder, read_json
from ..shipped.prior_ddpm_hub import PriorText, encode_prompts, text_positions
from .batches import MicroBatches
from .data import load_training_data, make_micro_batches
from .ema import EMA
from .model import make_optimizer
from .options import TrainingOptions, options_given

logger = get_logger(__name__, log_level="INFO")

PRIOR_CONFIG = Path("prior", "config.json")
PRIOR_SCHEDULER_CONFIG = Path("prior_scheduler", "scheduler_config.json")
PRIOR_CLASS = "PriorTransformer"


@dataclass(frozen=True)
class PriorSource:
    """A prior configuration (or a trained prior's folder, to fine-tune) named by --pipeline."""

    name: str
    folder: Path
    config: dict

    kind = "prior configuration"  # what --dry-run reports as the pipeline's source

    @property
    def trained(self) -> bool:
        return any((self.folder / "prior").glob("*.safetensors"))


def prior_source(name: str) -> PriorSource | None:
    """--pipeline as a prior: a folder, or `pipelines/<name>`, with `prior/config.json` naming a `PriorTransformer`
    and no `model_index.json`; None for anything else."""
    for candidate in (Path(name), PIPELINES_DIR / name):
        if is_pipeline_folder(candidate) or not (candidate / PRIOR_CONFIG).is_file():
            continue
        config = read_json(candidate / PRIOR_CONFIG, "a prior configuration") or {}
        if config.get("_class_name") == PRIOR_CLASS:
            if not (candidate / PRIOR_SCHEDULER_CONFIG).is_file():
                raise UsageError(f"--pipeline {name}: a prior configuration needs {PRIOR_SCHEDULER_CONFIG} too.")
            return PriorSource(name, candidate, config)
    return None


# ----------------------------------------------------------------------------------------------------------------
# Checks: before any work


def check_prior_options(o: TrainingOptions, source: PriorSource) -> TrainingOptions:
    """Everything a user can get wrong about a prior run; returns the options with the data's size resolved."""
    from ..loading.clip import ImagePreprocessing, clip_config
    from .checks import check_environment, check_output_dir

    check_ranges(o)
    o.data.check()
    refuse_other_options(o)
    if o.prior.clip is None:
        raise UsageError(
            f"--pipeline {o.model.pipeline} is a prior configuration: give --clip, the frozen CLIP whose embeddings "
            "it learns (e.g. runs/ddpm-unclip-digit-pairs-clip, trained by training/configs/ddpm-unclip-digit-pairs-"
            "clip.yaml, or openai/clip-vit-base-patch32)."
        )
    for flag, given in (("--streaming", o.data.streaming), ("--random_flip", o.batches.random_flip)):
        if given:
            raise UsageError(f"{flag}: a prior run embeds every image once, unflipped (a flip changes the caption).")
    if o.data.random_crop is not None:
        raise UsageError("--random_crop: a prior run embeds whole images, as the CLIP saw them.")
    if o.hub.push_to_hub:
        raise UsageError("--push_to_hub publishes pipelines: build one with DDPMHubUnCLIPPipeline.from_stages first.")
    config = clip_config(o.prior.clip)
    check_widths(source, config)
    check_environment(o)
    sources = {"--pipeline": (str(source.folder), "the trained prior would overwrite its configuration")}
    check_apart_from_sources(Path(o.output_dir), "--output_dir", sources)
    check_output_dir(o)
    preprocessing = ImagePreprocessing.read(o.prior.clip) if Path(o.prior.clip).is_dir() else None
    if preprocessing is not None and preprocessing.data_size is not None:
        o = replace(o, data=o.data.resolved(resolution=list(preprocessing.data_size)))
    return o


def check_widths(source: PriorSource, clip_config) -> None:
    """The prior reads the CLIP's widths: its embedding (projection) and token states, and at most its positions."""
    c = source.config
    embedding, projection = c.get("embedding_dim", 768), clip_config.projection_dim
    expected = {
        "embedding_dim (the token states' width)": (embedding, clip_config.text_config.hidden_size),
        "embedding_proj_dim (the text embedding's)": (c.get("embedding_proj_dim") or embedding, projection),
        "clip_embed_dim (the image embedding's)": (c.get("clip_embed_dim") or embedding, projection),
    }
    wrong = [f"{name} {mine} != {theirs}" for name, (mine, theirs) in expected.items() if mine != theirs]
    positions = clip_config.text_config.max_position_embeddings
    if c.get("num_embeddings", 77) > positions:
        wrong.append(f"num_embeddings {c.get('num_embeddings', 77)} > the text tower's {positions} positions")
    if wrong:
        raise UsageError(f"--pipeline {source.name} does not fit the CLIP: {'; '.join(wrong)}.")


def refuse_other_options(o: TrainingOptions) -> None:
    """The options of a DDPM's UNet, conditioning, distillation and autoencoder mean nothing to a prior."""
    given = options_given(o, ("model", "conditioning", "autoencoder"), kept=("pipeline", "revision"))
    if given:
        raise UsageError(
            f"{', '.join(given)}: options of diffusion or autoencoder runs; --pipeline {o.model.pipeline} is a prior "
            "configuration (the optimizer, batch, EMA, data and prior options apply)."
        )


# ----------------------------------------------------------------------------------------------------------------
# The data: every image's CLIP embedding and every caption's text, once


@dataclass
class PriorTable:
    """
    The frozen CLIP's view of the data, computed once: `texts` (`PriorText` of each distinct caption, on the run's
    device) and `null` (the empty caption's), `captions` (the distinct captions, lower-cased and stripped).
    """

    captions: list[str]
    texts: PriorText
    null: PriorText


class EmbeddingColumns:
    """What `load_training_data` asks of a model's conditioning, for a prior: each image's CLIP image embedding
    (`image_embeds` `[N x D]`), its captions as rows of the caption table (`caption_ids`) and their meaning id."""

    prompts: list[str] = []  # captions are read
    classes = None

    def __init__(self, clip):
        self.clip, self.captions = clip, []

    def columns(self, decoded, source: str, pipeline: str) -> dict:
        from ..loading.clip import encode_images
        from .clip import meaning_ids

        if decoded.captions is None or any(not texts for texts in decoded.captions):
            raise UsageError(
                f"{pipeline} is a prior, trained on images with captions, and {source} gave none (or images without "
                "one): use builtin:digit-pairs, an image folder with metadata.jsonl, or a Hub dataset with "
                "--caption_column."
            )
        started = time.monotonic()
        rows = []
        for start in range(0, len(decoded.images), 1024):
            chunk = torch.as_tensor(decoded.images[start : start + 1024])
            rows.append(encode_images(self.clip.model, self.clip.preprocessing, chunk).cpu())
        self.captions = sorted({text.strip().lower() for texts in decoded.captions for text in texts})
        index = {text: i for i, text in enumerate(self.captions)}
        caption_ids = [[index[text.strip().lower()] for text in texts] for texts in decoded.captions]
        logger.info("CLIP image embeddings of %d images in %.1f s", len(decoded.images), time.monotonic() - started)
        return {"image_embeds": torch.cat(rows), "caption_ids": caption_ids, "meaning": meaning_ids(decoded.captions)}


def caption_table(clip, text_encoder, captions: list[str], length: int, device) -> PriorTable:
    """Every distinct caption's `PriorText`, and the empty caption's, on `device`."""
    texts = encode_prompts(text_encoder, clip.tokenizer, captions, length).to(device)
    return PriorTable(captions, texts, encode_prompts(text_encoder, clip.tokenizer, [""], length).to(device))


# ----------------------------------------------------------------------------------------------------------------
# The run


@dataclass
class PriorRun:
    """Everything the prior's loop touches (the attributes `loop.sync_losses` and `output.start_output` read)."""

    options: TrainingOptions
    accelerator: Accelerator
    source: PriorSource
    model: torch.nn.Module  # the prepared PriorTransformer (DDP, autocast)
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: EMA | None
    data: MicroBatches
    dataset: object  # training.data.TrainingData: images, image embeddings, caption ids, held-out rows
    report: ImageDatasetReport
    output_dir: Path
    scheduler: object  # the prior's DDPMHubScheduler
    clip: object  # loading.clip.LoadedCLIP, frozen
    text_encoder: object  # its CLIPTextModelWithProjection, saved with the prior
    table: PriorTable

    @property
    def prior(self):
        """The bare PriorTransformer: what is saved, checksummed and averaged."""
        return self.accelerator.unwrap_model(self.model, keep_torch_compile=False)

    def final_prior(self):
        return self.ema.model if self.ema is not None else self.prior

    @property
    def images_per_step(self) -> int:
        return self.data.global_batch_size * self.options.batches.gradient_accumulation_steps


def build_prior(source: PriorSource, seed: int, image_embeds: torch.Tensor):
    """The configuration with fresh weights from `seed` (or the folder's, to fine-tune); a fresh prior's `clip_mean`
    and `clip_std` are the data's mean and std per dimension. Neither is trained."""
    from diffusers import PriorTransformer

    if source.trained:
        prior = PriorTransformer.from_pretrained(source.folder / "prior", torch_dtype=torch.float32)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            prior = PriorTransformer.from_config(PriorTransformer.load_config(source.folder / "prior"))
        with torch.no_grad():
            prior.clip_mean.copy_(image_embeds.mean(dim=0, keepdim=True))
            prior.clip_std.copy_(image_embeds.std(dim=0, keepdim=True).clamp_min(1e-6))
    prior.clip_mean.requires_grad_(False)
    prior.clip_std.requires_grad_(False)
    return prior


def build_prior_run(o: TrainingOptions, source: PriorSource, accelerator: Accelerator) -> PriorRun:
    from ..loading.clip import load_clip
    from ..loading.prior import clip_text_encoder
    from ..shipped.scheduling_ddpm_hub import DDPMHubScheduler
    from .run import resolve_training_length

    clip = load_clip(o.prior.clip)
    clip.model.to(accelerator.device)
    columns = EmbeddingColumns(clip)
    dataset = load_training_data(
        o.data, o.validation.validation_holdout, o.seed, columns, clip.preprocessing.num_channels, o.model.pipeline,
        accelerator,
    )  # fmt: skip
    data = make_micro_batches(o.batches, o.seed, accelerator, dataset)
    o = resolve_training_length(o, data)
    o = o.changed("speed", mixed_precision=accelerator.mixed_precision)
    prior = build_prior(source, o.seed, dataset.columns["image_embeds"]).train()
    logger.info("PriorTransformer: %s parameters", f"{count_parameters(prior):,}")
    text_encoder = clip_text_encoder(clip.model).to(accelerator.device)
    table = caption_table(clip, text_encoder, columns.captions, text_positions(prior), accelerator.device)
    scheduler = DDPMHubScheduler.from_pretrained(source.folder / "prior_scheduler")
    trained = [p for p in prior.parameters() if p.requires_grad]
    optimizer = make_optimizer(trained, o.optimizer, accelerator.device)
    lr_scheduler = get_scheduler(
        o.optimizer.lr_scheduler,
        optimizer,
        num_warmup_steps=o.optimizer.lr_warmup_steps,
        num_training_steps=o.length.max_train_steps,
    )
    ema = EMA(prior, o.ema.ema_max_decay, o.ema.ema_inv_gamma, o.ema.ema_power) if o.ema.use_ema else None
    model, optimizer, lr_scheduler = accelerator.prepare(prior, optimizer, lr_scheduler)
    if ema is not None:
        ema.model.to(accelerator.device)
    return PriorRun(
        o, accelerator, source, model, optimizer, lr_scheduler, ema, data, dataset, dataset.report, Path(o.output_dir),
        scheduler, clip, text_encoder, table,
    )  # fmt: skip
