"""
Train an autoencoder (a diffusers `AutoencoderKL`) with the same script, on the same data layer, for latent diffusion.

    # The README's job: ddpm-vae-digits-64 (f = 4, 4 latent channels) on the built-in digits at 64x64, minutes on a CPU
    accelerate launch --num_processes 1 training/train.py --config training/configs/ddpm-vae-digits-64.yaml
    # then a DDPM on its latents: --vae runs/ddpm-vae-digits-64 (training/configs/ddpm-latent-digits-64.yaml)

`--pipeline` names an autoencoder configuration when its folder (or `pipelines/<name>`) holds a `config.json` whose
`_class_name` is `AutoencoderKL` and no `model_index.json`; with weights beside it, the run fine-tunes them. What is
shared with a DDPM run: the data (`load_training_data`: the decoded cache, the held-out split), the order of the
micro-batches and their flips (`MicroBatches`), every draw a function of (seed, stream, m, rank), AdamW and its
schedule, EMA, Accelerate (DDP, mixed precision), atomic checkpoints and an exact resume, the locked output folder.
This module holds what the run is (its source, its checks, the model and the `AutoencoderRun`); the objective is in
`autoencoder_loss`, the loop and the entry in `autoencoder_loop`, the checkpoints and the end in `autoencoder_output`
(the scaling factor measured on the training images and written into config.json, reconstructions.png,
training_summary.json).
"""

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from diffusers import AutoencoderKL
from diffusers.optimization import get_scheduler

from ..data import ImageDatasetReport
from ..errors import UsageError
from ..loading.configs import PIPELINES_DIR, count_parameters
from ..options import check_ranges
from ..pipelines.conditioning import TrainingConditioning
from ..run_folder import (
    PICKLE_WEIGHT_SUFFIXES,
    SAFE_WEIGHT_SUFFIXES,
    check_apart_from_sources,
    is_pipeline_folder,
    read_json,
)
from .autoencoder_loss import PatchDiscriminator
from .batches import MicroBatches
from .data import load_training_data, make_micro_batches
from .ema import EMA
from .model import apply_speed_settings, make_optimizer, sample_size_config
from .options import TrainingOptions, options_given

logger = get_logger(__name__, log_level="INFO")

AUTOENCODER_CLASS = "AutoencoderKL"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class AutoencoderSource:
    """An autoencoder configuration (or a trained autoencoder folder, to fine-tune) named by --pipeline."""

    name: str
    folder: Path
    config: dict

    @property
    def trained(self) -> bool:
        """Weights beside the config (of any format: pickles are refused when loaded, never re-initialised)."""
        return any(path.suffix in (*SAFE_WEIGHT_SUFFIXES, *PICKLE_WEIGHT_SUFFIXES) for path in self.folder.iterdir())

    @property
    def factor(self) -> int:
        """Pixels per latent along a side: 2 ** (down blocks - 1)."""
        return 2 ** (len(self.config["block_out_channels"]) - 1)

    kind = "autoencoder"  # what --dry-run reports as the pipeline's source


def autoencoder_source(name: str) -> AutoencoderSource | None:
    """
    --pipeline as an autoencoder: a folder, or `pipelines/<name>`, with an AutoencoderKL `config.json` and no
    `model_index.json`. None when the name is not such a folder (a pipeline, a configuration name, a Hub repo); a
    folder with another model's `config.json` and no `model_index.json` is refused here, naming its class.
    """
    for candidate in (Path(name), PIPELINES_DIR / name):
        if is_pipeline_folder(candidate) or not (candidate / CONFIG_FILE).is_file():
            continue
        config = read_json(candidate / CONFIG_FILE, "a model configuration") or {}
        found = config.get("_class_name")
        if found != AUTOENCODER_CLASS:
            raise UsageError(
                f"--pipeline {name!r}: {candidate / CONFIG_FILE} is the configuration of "
                f"{found or 'a model without _class_name'}, and the folder has no model_index.json. --pipeline takes "
                f"a pipeline (a folder with model_index.json, a pipelines/ name or a Hub repo) or an "
                f"{AUTOENCODER_CLASS} configuration (a config.json with _class_name {AUTOENCODER_CLASS}), e.g. "
                "ddpm-vae-digits-64."
            )
        return AutoencoderSource(name, candidate, config)
    return None


# ----------------------------------------------------------------------------------------------------------------
# Checks: before any work


def check_autoencoder_options(o: TrainingOptions, source: AutoencoderSource) -> TrainingOptions:
    """Everything a user can get wrong about an autoencoder run; returns the options with the defaults filled in."""
    from .checks import check_environment, check_output_dir, check_random_crop

    check_ranges(o)
    o.data.check()
    refuse_diffusion_options(o)
    if o.data.streaming:
        raise UsageError(
            "--streaming: an autoencoder run measures its scaling factor on the training images at the end, which a "
            "stream does not keep; decode the dataset (the default), or give --max_images."
        )
    if o.hub.push_to_hub:
        raise UsageError("--push_to_hub publishes pipelines; an autoencoder folder is uploaded with huggingface_hub.")
    if o.autoencoder.disc_start and not o.autoencoder.disc_weight:
        start = o.autoencoder.disc_start
        raise UsageError(f"--disc_start {start} needs a discriminator: give --disc_weight too, e.g. 0.1.")
    check_environment(o)
    sources = {"--pipeline": (str(source.folder), "the trained autoencoder would overwrite its configuration")}
    check_apart_from_sources(Path(o.output_dir), "--output_dir", sources)
    check_output_dir(o)
    o = replace(o, data=o.data.resolved(resolution=source.config["sample_size"]))
    check_random_crop(o)
    config = source.config
    if config.get("in_channels") != config.get("out_channels") or config.get("in_channels") not in (1, 3):
        raise UsageError(
            f"--pipeline {o.model.pipeline}: an autoencoder gives back what it takes; in_channels "
            f"{config.get('in_channels')} and out_channels {config.get('out_channels')} must be equal, 1 (gray) or 3."
        )
    from ..data.decode import image_size, size_text

    if any(side % source.factor for side in image_size(o.data.training_size)):
        raise UsageError(
            f"--resolution {size_text(o.data.training_size)} does not fit {o.model.pipeline}: it halves the image "
            f"{len(config['block_out_channels']) - 1} times, so each side must be a multiple of {source.factor}."
        )
    return o


def refuse_diffusion_options(o: TrainingOptions) -> None:
    """The options of a DDPM's model, conditioning, distillation and prior mean nothing to an autoencoder."""
    given = options_given(o, ("model", "conditioning", "prior"))
    if given:
        raise UsageError(
            f"{', '.join(given)}: diffusion options; --pipeline {o.model.pipeline} is an autoencoder configuration, "
            "trained by its reconstruction (--reconstruction_loss, --kl_weight, --ssim_weight)."
        )


# ----------------------------------------------------------------------------------------------------------------
# The run


class PosteriorAutoencoder(torch.nn.Module):
    """
    The autoencoder as one forward, what DDP wraps (its gradients are all-reduced in `forward`'s backward): images
    `[N x C x H x W]` in [-1, 1] -> (x_hat, mean, logvar), the latent drawn from q(z | x) with `generator`.
    """

    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, generator: torch.Generator):
        posterior = self.vae.encode(x).latent_dist
        x_hat = self.vae.decode(posterior.sample(generator)).sample
        return x_hat, posterior.mean, posterior.logvar


@dataclass
class AutoencoderRun:
    """Everything the autoencoder's loop touches (the attributes `loop.sync_losses` and `output.start_output` read)."""

    options: TrainingOptions
    accelerator: Accelerator
    source: AutoencoderSource
    model: torch.nn.Module  # the prepared PosteriorAutoencoder (DDP, autocast)
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: EMA | None
    data: MicroBatches
    dataset: object  # training.data.TrainingData: the images, the training rows, the held-out images
    report: ImageDatasetReport
    output_dir: Path
    discriminator: torch.nn.Module | None = None  # --disc_weight: the prepared PatchDiscriminator
    disc_optimizer: torch.optim.Optimizer | None = None

    @property
    def vae(self) -> AutoencoderKL:
        """The bare autoencoder: what is saved, checksummed and averaged."""
        return self.accelerator.unwrap_model(self.model, keep_torch_compile=False).vae

    def final_vae(self) -> AutoencoderKL:
        return self.ema.model if self.ema is not None else self.vae

    @property
    def images_per_step(self) -> int:
        return self.data.global_batch_size * self.options.batches.gradient_accumulation_steps


def build_autoencoder(source: AutoencoderSource, seed: int, resolution) -> AutoencoderKL:
    """The configuration with fresh weights from `seed` (or the folder's weights, to fine-tune)."""
    if source.trained:
        if not any(source.folder.glob("*.safetensors")):
            raise UsageError(f"--pipeline {source.name}: its weights are pickles; only safetensors are loaded.")
        return AutoencoderKL.from_pretrained(source.folder, use_safetensors=True)
    config = {**source.config, "sample_size": sample_size_config(resolution)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKL.from_config(config)


def build_autoencoder_run(o: TrainingOptions, source: AutoencoderSource, accelerator: Accelerator) -> AutoencoderRun:
    from .run import resolve_training_length

    channels = source.config["in_channels"]
    dataset = load_training_data(
        o.data, o.validation.validation_holdout, o.seed, TrainingConditioning([]), channels, o.model.pipeline,
        accelerator,
    )  # fmt: skip
    data = make_micro_batches(o.batches, o.seed, accelerator, dataset, o.data.random_crop)
    o = resolve_training_length(o, data)
    o = o.changed("speed", mixed_precision=accelerator.mixed_precision)
    vae = build_autoencoder(source, o.seed, o.data.training_size).train()
    logger.info(
        "AutoencoderKL: %s parameters, f = %d, %d latent channels",
        f"{count_parameters(vae):,}",
        source.factor,
        vae.config.latent_channels,
    )
    wrapper = PosteriorAutoencoder(vae)
    apply_speed_settings(wrapper, o.speed, accelerator.device)
    optimizer = make_optimizer(list(vae.parameters()), o.optimizer, accelerator.device)
    lr_scheduler = get_scheduler(
        o.optimizer.lr_scheduler,
        optimizer,
        num_warmup_steps=o.optimizer.lr_warmup_steps,
        num_training_steps=o.length.max_train_steps,
    )
    ema = EMA(vae, o.ema.ema_max_decay, o.ema.ema_inv_gamma, o.ema.ema_power) if o.ema.use_ema else None
    model, optimizer, lr_scheduler = accelerator.prepare(wrapper, optimizer, lr_scheduler)
    discriminator, disc_optimizer = None, None
    if o.autoencoder.disc_weight > 0:  # prepared after the rest: a run without one saves the same state
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(o.seed)
            critic = PatchDiscriminator(source.config["in_channels"])
        disc_optimizer = make_optimizer(list(critic.parameters()), o.optimizer, accelerator.device)
        discriminator, disc_optimizer = accelerator.prepare(critic, disc_optimizer)
    if ema is not None:
        ema.model.to(accelerator.device)
    return AutoencoderRun(
        o, accelerator, source, model, optimizer, lr_scheduler, ema, data, dataset, dataset.report,
        Path(o.output_dir), discriminator, disc_optimizer,
    )  # fmt: skip
