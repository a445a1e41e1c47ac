"""
Train a DDPM (Ho et al. 2020) with Accelerate, on one CPU, one GPU, many GPUs or many machines.

    # The README's main command: ddpm-digits-16 on scikit-learn's digits for a bounded few minutes on a CPU
    python training/train.py --pipeline ddpm-digits-16 --output_dir ddpm-digits-16-trained \\
        --train_batch_size 64 --learning_rate 1e-3 --lr_scheduler constant_with_warmup --lr_warmup_steps 100 \\
        --use_ema --ema_power 0.6667 --max_train_minutes 5

    # Two processes on this CPU (gloo), eight GPUs, two machines of eight GPUs (run the last on each machine)
    accelerate launch --multi_gpu --num_processes 2 training/train.py --pipeline ddpm-tiny-8 --max_train_steps 20
    accelerate launch --config_file training/accelerate_configs/multi_gpu_8.yaml training/train.py \\
        --pipeline ddpm-cifar10-32 --dataset_name cifar10 --random_flip --train_batch_size 16 \\
        --learning_rate 2e-4 --lr_warmup_steps 5000 --use_ema --max_train_steps 800000 --mixed_precision bf16
    accelerate launch --config_file training/accelerate_configs/multi_node_2x8.yaml --machine_rank 0 ...

    # Continue after a crash or a preemption (bit-identical to an uninterrupted run on CPU), options from a file
    python training/train.py ... --resume_from_checkpoint latest
    python training/train.py --config my_run.yaml --learning_rate 1e-4   # YAML or JSON; flags given here win

`python training/train.py --help` documents every option and its default. What a run leaves in `--output_dir`:

    model_index.json unet/ scheduler/ *.py   the trained pipeline (EMA weights with --use_ema): load it with
                                             DDPMHubPipeline.from_pretrained(output_dir)
    samples.png                              a grid sampled from it
    training_options.json                    the resolved options (usable as --config to repeat the run)
    training_summary.json                    steps, images seen, wall time, final loss, device, processes, precision
    checkpoints/checkpoint-<step>/           Accelerate state + EMA + data position (publishing leaves it out)
    logs/                                    tracker logs and the validation grids (publishing leaves it out)

Randomness is a function of (seed, position, rank): the epoch order of (seed, epoch), the flips, timesteps, noise and
dropout of micro-batch m of (seed, m, rank). A resumed run therefore draws exactly what an uninterrupted one draws,
and jumps to its data position instead of iterating through the batches it already trained on.
"""

import argparse
import contextlib
import importlib
import importlib.util
import json
import logging
import math
import os
import shutil
import signal
import sys
import time
import types
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, gather_object
from diffusers import UNet2DModel
from diffusers.optimization import get_scheduler
from PIL import Image
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

if importlib.util.find_spec("ddpm_hub") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ddpm_hub.configs import build_pipeline, count_parameters, resolve_pipeline_config
from ddpm_hub.data import BUILTIN_DATASETS, ImageDatasetReport, UInt8ImageDataset, load_image_tensor, to_model_range
from ddpm_hub.images import make_grid, to_uint8, upscale
from ddpm_hub.likelihood import bits_per_dim
from ddpm_hub.losses import diffusion_loss
from ddpm_hub.pipeline_ddpm_hub import MODEL_INDEX, DDPMHubPipeline
from ddpm_hub.scheduling_ddpm_hub import BETA_SCHEDULES, PREDICTION_TYPES, VARIANCE_TYPES, DDPMHubScheduler
from ddpm_hub.training import (
    DROPOUT,
    EMA,
    EMA_FOLDER,
    HOLDOUT,
    NOISE,
    SAMPLING,
    MicroBatches,
    TrainingState,
    commit_checkpoint,
    derive_seed,
    latest_checkpoint,
    list_checkpoints,
    make_generator,
    prune_checkpoints,
    temporary_checkpoint_dir,
    training_loss,
    weights_checksum,
)

logger = get_logger(__name__, log_level="INFO")

LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
LOGGERS = ("tensorboard", "wandb", "none")
MIXED_PRECISIONS = ("no", "fp16", "bf16")
CHECKPOINTS_DIR = "checkpoints"
OPTIONS_FILE = "training_options.json"
SUMMARY_FILE = "training_summary.json"
SAMPLES_FILE = "samples.png"


# ----------------------------------------------------------------------------------------------------------------
# Options: one typed object; the command line and the config file are generated from these fields.


def option(default, help: str, group: str, choices=None, aliases: tuple[str, ...] = (), hidden: bool = False):
    return field(
        default=default,
        metadata={"help": help, "group": group, "choices": choices, "aliases": aliases, "hidden": hidden},
    )


@dataclass(frozen=True)
class TrainingOptions:
    # Model
    pipeline: str = option(
        "ddpm-digits-16",
        "a pipelines/<name> configuration (name or folder) to train from scratch, or a trained pipeline folder or "
        "Hub repo id to fine-tune",
        "model",
        aliases=("--model_config_name_or_path",),
    )
    prediction_type: str | None = option(
        None, "what the UNet predicts (default: the pipeline's scheduler config)", "model", choices=PREDICTION_TYPES
    )
    variance_type: str | None = option(
        None,
        "reverse-process variance; learned_range trains with L_hybrid and doubles the UNet's out_channels of a "
        "configuration (default: the pipeline's scheduler config)",
        "model",
        choices=VARIANCE_TYPES,
    )
    ddpm_num_steps: int | None = option(
        None, "T, the number of diffusion timesteps (default: the pipeline's scheduler config)", "model"
    )
    ddpm_beta_schedule: str | None = option(
        None,
        "the beta schedule (default: the pipeline's scheduler config)",
        "model",
        choices=(*BETA_SCHEDULES, "squaredcos_cap_v2"),
    )
    snr_gamma: float | None = option(
        None, "min-SNR-gamma loss weighting (Hang et al. 2023; 5.0 is the paper's value); default: off", "model"
    )
    # Data
    dataset_name: str | None = option(
        None,
        f"a Hub dataset name, or {' / '.join(BUILTIN_DATASETS)} (scikit-learn's digits, offline); default: "
        f"{BUILTIN_DATASETS[0]} unless --train_data_dir is given",
        "data",
    )
    dataset_split: str = option("train", "the split of a Hub dataset", "data")
    train_data_dir: str | None = option(
        None, "a local folder of images (recursive); unreadable files are skipped and reported", "data"
    )
    image_column: str | None = option(
        None, "the image column of a Hub dataset (default: its first Image column, else 'image' or 'img')", "data"
    )
    cache_dir: str | None = option(None, "where Hub datasets are cached (default: the datasets cache)", "data")
    resolution: int | None = option(None, "image size (default: the UNet's sample_size)", "data")
    center_crop: bool = option(
        True, "resize the short side and crop the centre; --no-center_crop resizes the whole image instead", "data"
    )
    random_flip: bool = option(False, "flip images left-right at random", "data")
    max_train_samples: int | None = option(None, "use only the first N usable images (default: all)", "data")
    dataloader_num_workers: int = option(0, "data loading worker processes (0: in the main process)", "data")
    # Training
    output_dir: str = option("ddpm-model", "where the pipeline, samples, checkpoints and logs are written", "training")
    overwrite_output_dir: bool = option(
        False, "delete checkpoints an earlier run left in output_dir and start over", "training"
    )
    seed: int = option(0, "seeds the weights and every random draw; same seed, same run", "training")
    train_batch_size: int = option(16, "images per process per micro-batch", "training")
    num_epochs: int = option(100, "passes over the data; ignored when --max_train_steps is given", "training")
    max_train_steps: int | None = option(
        None, "optimizer steps to train (default: from --num_epochs); the LR schedule spans them", "training"
    )
    max_train_minutes: float | None = option(
        None,
        "stop after this many minutes of training, then save and sample as at the end (default: no limit)",
        "training",
    )
    gradient_accumulation_steps: int = option(1, "micro-batches per optimizer step", "training")
    # Optimizer
    learning_rate: float = option(1e-4, "peak learning rate (after warmup)", "optimizer")
    lr_scheduler: str = option("cosine", "learning-rate schedule over optimizer steps", "optimizer", LR_SCHEDULERS)
    lr_warmup_steps: int = option(500, "optimizer steps of linear warmup", "optimizer")
    adam_beta1: float = option(0.95, "AdamW beta1", "optimizer")
    adam_beta2: float = option(0.999, "AdamW beta2", "optimizer")
    adam_weight_decay: float = option(1e-6, "AdamW weight decay", "optimizer")
    adam_epsilon: float = option(1e-8, "AdamW epsilon", "optimizer")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0: no clipping)", "optimizer")
    # EMA
    use_ema: bool = option(
        False, "keep an exponential moving average of the weights and save it as the pipeline", "ema"
    )
    ema_max_decay: float = option(0.9999, "the EMA decay after warmup (the DDPM paper's value)", "ema")
    ema_inv_gamma: float = option(1.0, "EMA warmup: decay = 1 - (1 + step / inv_gamma) ** -power", "ema")
    ema_power: float = option(0.75, "EMA warmup power (2/3 suits runs of a few thousand steps)", "ema")
    # Speed
    mixed_precision: str | None = option(
        None,
        "autocast precision (fp16 needs a GPU); default: Accelerate's configuration, else no",
        "speed",
        MIXED_PRECISIONS,
    )
    allow_tf32: bool = option(True, "TF32 matmuls and convolutions on Ampere or newer GPUs", "speed")
    compile: bool = option(False, "torch.compile the UNet (inductor)", "speed")
    enable_xformers_memory_efficient_attention: bool = option(
        False, "xformers attention (needs xformers; PyTorch's SDPA is used otherwise)", "speed"
    )
    # Checkpoints
    checkpointing_steps: int = option(
        500, "save a checkpoint every N optimizer steps and at the end (0: never)", "checkpoints"
    )
    checkpoints_total_limit: int | None = option(
        None, "keep only the newest N checkpoints (default: keep all)", "checkpoints"
    )
    resume_from_checkpoint: str | None = option(
        None,
        "'latest' (the newest in output_dir/checkpoints; a fresh start if none) or a checkpoint folder",
        "checkpoints",
    )
    # Validation
    validation_steps: int = option(500, "sample a grid every N optimizer steps (0: only at the end)", "validation")
    num_validation_images: int = option(
        16, "images in each grid, shared among the processes", "validation", aliases=("--eval_batch_size",)
    )
    ddpm_num_inference_steps: int = option(250, "respaced sampling steps for the grids", "validation")
    validation_holdout: int = option(
        0,
        "hold out N images (a seeded choice) from training; log their loss and a sampled bits/dim estimate with "
        "each grid and at the end (0: no held-out metrics)",
        "validation",
    )
    validation_bpd_steps: int = option(
        20, "UNet calls per held-out image for the sampled bits/dim estimate (ddpm_hub.likelihood)", "validation"
    )
    # Logging
    logger: str = option("tensorboard", "experiment tracker (wandb must be installed)", "logging", LOGGERS)
    logging_dir: str = option("logs", "tracker logs and validation grids, relative to output_dir", "logging")
    # Hub
    push_to_hub: bool = option(False, "publish output_dir with ddpm_hub.hub.publish at the end", "hub")
    hub_model_id: str | None = option(None, "the repo id (default: the name of output_dir)", "hub")
    hub_private_repo: bool = option(False, "create the repo private", "hub")
    hub_token: str | None = option(None, "the Hub token (default: the logged-in token or HF_TOKEN)", "hub")
    # Fault injection for the tests (hidden from --help)
    debug_kill_at_step: int | None = option(
        None, "SIGKILL right after the checkpoint of this step", "debug", hidden=True
    )
    debug_nonfinite_loss_at_step: int | None = option(None, "make the loss NaN at this step", "debug", hidden=True)


GROUP_TITLES = {
    "model": "model and objective",
    "data": "data (ddpm_hub.data: decoded once into uint8 tensors)",
    "training": "training length and output",
    "optimizer": "optimizer (AdamW) and learning-rate schedule",
    "ema": "exponential moving average",
    "speed": "precision and speed",
    "checkpoints": "checkpoints (output_dir/checkpoints)",
    "validation": "sample grids",
    "logging": "logging",
    "hub": "publishing (ddpm_hub.hub)",
    "debug": "debug",
}


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the docstring's layout and appends every option's default to its help (once)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _field_type(hint) -> type:
    """int, float, str or bool from an annotation such as `int | None`."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else hint


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train.py", description=__doc__, formatter_class=_HelpFormatter)
    parser.add_argument(
        "--config", help="a YAML or JSON file of options, keys as the flag names without '--'; flags given win"
    )
    parser.add_argument("--local_rank", type=int, default=-1, help=argparse.SUPPRESS)  # torch.distributed.launch
    hints = typing.get_type_hints(TrainingOptions)
    groups = {}
    for f in fields(TrainingOptions):
        meta = f.metadata
        group = groups.get(meta["group"]) or groups.setdefault(
            meta["group"], parser.add_argument_group(GROUP_TITLES[meta["group"]])
        )
        kind = _field_type(hints[f.name])
        kwargs = {"dest": f.name, "default": f.default, "help": argparse.SUPPRESS if meta["hidden"] else meta["help"]}
        if kind is bool:
            group.add_argument(f"--{f.name}", *meta["aliases"], action=argparse.BooleanOptionalAction, **kwargs)
        else:
            group.add_argument(f"--{f.name}", *meta["aliases"], type=kind, choices=meta["choices"], **kwargs)
    return parser


def parse_options(argv: list[str] | None = None) -> TrainingOptions:
    """Command line over config file over defaults, into one typed `TrainingOptions`."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    config_path = pre.parse_known_args(argv)[0].config
    parser = build_parser()
    if config_path is not None:
        parser.set_defaults(**read_config_file(config_path))
    namespace = parser.parse_args(argv)
    return TrainingOptions(**{f.name: getattr(namespace, f.name) for f in fields(TrainingOptions)})


def read_config_file(path: str) -> dict:
    """A YAML (.yaml/.yml) or JSON mapping of option names to values, type-checked like the command line."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--config {path}: no such file.")
    if file.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise ValueError(f"--config {path}: expected a .yaml, .yml or .json file.")
    text = file.read_text()
    values = json.loads(text) if file.suffix.lower() == ".json" else yaml.safe_load(text)
    if not isinstance(values, dict):
        raise ValueError(
            f"--config {path}: expected a mapping of option names to values, got {type(values).__name__}."
        )
    hints = typing.get_type_hints(TrainingOptions)
    known = {f.name: f for f in fields(TrainingOptions)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"--config {path}: unknown options {unknown}; valid options are {sorted(known)}.")
    return {name: _check_config_value(path, name, value, hints[name], known[name]) for name, value in values.items()}


def _check_config_value(path: str, name: str, value, hint, f):
    kind = _field_type(hint)
    optional = type(None) in typing.get_args(hint)
    if value is None and optional:
        return None
    if kind is float and not isinstance(value, bool) and isinstance(value, (int, str)):
        with contextlib.suppress(ValueError):  # YAML 1.1 reads 3e-4 as a string; 3.0e-4 would be a float
            value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(
            f"--config {path}: {name} must be {'null or ' if optional else ''}a {kind.__name__}, got {value!r}."
        )
    choices = f.metadata["choices"]
    if choices is not None and value not in choices:
        raise ValueError(f"--config {path}: {name}={value!r} is not one of {list(choices)}.")
    return value


# ----------------------------------------------------------------------------------------------------------------
# Checks that need no model: everything a user can get wrong fails here, in seconds.


@dataclass
class PipelineSource:
    """Where the weights come from: a configuration (fresh weights), a trained folder or a Hub repo (fine-tuning)."""

    kind: typing.Literal["config", "folder", "hub"]
    location: str
    unet_config: dict
    scheduler_config: dict


def parse_and_check_options(argv: list[str] | None) -> tuple[TrainingOptions, PipelineSource]:
    options = parse_options(argv)
    check_numbers(options)
    check_environment(options)
    check_output_dir(options)
    source = inspect_pipeline(options.pipeline, options.hub_token)
    options = resolve_options(options, source)
    check_model_compatibility(options, source)
    return options, source


def check_numbers(o: TrainingOptions) -> None:
    at_least = {
        "train_batch_size": (o.train_batch_size, 1),
        "gradient_accumulation_steps": (o.gradient_accumulation_steps, 1),
        "num_epochs": (o.num_epochs, 1),
        "max_train_steps": (o.max_train_steps, 1),
        "lr_warmup_steps": (o.lr_warmup_steps, 0),
        "checkpointing_steps": (o.checkpointing_steps, 0),
        "checkpoints_total_limit": (o.checkpoints_total_limit, 1),
        "validation_steps": (o.validation_steps, 0),
        "num_validation_images": (o.num_validation_images, 1),
        "ddpm_num_inference_steps": (o.ddpm_num_inference_steps, 1),
        "validation_holdout": (o.validation_holdout, 0),
        "validation_bpd_steps": (o.validation_bpd_steps, 2),
        "ddpm_num_steps": (o.ddpm_num_steps, 2),
        "dataloader_num_workers": (o.dataloader_num_workers, 0),
        "resolution": (o.resolution, 1),
        "max_train_samples": (o.max_train_samples, 1),
    }
    for name, (value, minimum) in at_least.items():
        if value is not None and value < minimum:
            raise ValueError(f"--{name} must be at least {minimum}, got {value}.")
    positive = {
        "learning_rate": o.learning_rate,
        "adam_epsilon": o.adam_epsilon,
        "ema_inv_gamma": o.ema_inv_gamma,
        "ema_power": o.ema_power,
        "snr_gamma": o.snr_gamma,
        "max_train_minutes": o.max_train_minutes,
    }
    for name, value in positive.items():
        if value is not None and not value > 0:
            raise ValueError(f"--{name} must be > 0, got {value}.")
    for name, value in {"adam_beta1": o.adam_beta1, "adam_beta2": o.adam_beta2}.items():
        if not 0 <= value < 1:
            raise ValueError(f"--{name} must be in [0, 1), got {value}.")
    if not 0 <= o.ema_max_decay <= 1:
        raise ValueError(f"--ema_max_decay must be in [0, 1], got {o.ema_max_decay}.")
    if o.max_grad_norm < 0 or o.adam_weight_decay < 0:
        raise ValueError("--max_grad_norm and --adam_weight_decay must be >= 0.")


def check_environment(o: TrainingOptions) -> None:
    """Data sources, optional packages and modules: things that would otherwise fail after the model is built."""
    if o.train_data_dir is not None:
        if o.dataset_name is not None:
            raise ValueError(
                f"Give one image source: --dataset_name {o.dataset_name!r} or --train_data_dir {o.train_data_dir!r}."
            )
        if not os.path.isdir(o.train_data_dir):
            what = "is a file, not a folder" if os.path.exists(o.train_data_dir) else "does not exist"
            raise FileNotFoundError(f"--train_data_dir {o.train_data_dir!r} {what}; give a folder of images.")
    if o.logger == "wandb" and importlib.util.find_spec("wandb") is None:
        raise ValueError("--logger wandb needs the wandb package (pip install wandb); or use --logger tensorboard.")
    if o.enable_xformers_memory_efficient_attention and importlib.util.find_spec("xformers") is None:
        raise ValueError(
            "--enable_xformers_memory_efficient_attention needs the xformers package (pip install xformers)."
        )
    if o.push_to_hub:
        check_can_publish(o)


def check_can_publish(o: TrainingOptions) -> None:
    """--push_to_hub: the token, its write access and the namespace are checked before training, not after it."""
    hub = importlib.import_module("ddpm_hub.hub")
    try:
        hub.check_can_publish(hub_repo_id(o), private=o.hub_private_repo, token=o.hub_token)
    except hub.PublishError as error:
        raise ValueError(f"--push_to_hub: {error}") from error


def hub_repo_id(o: TrainingOptions) -> str:
    return o.hub_model_id or Path(o.output_dir).resolve().name


def check_output_dir(o: TrainingOptions) -> None:
    checkpoints = list_checkpoints(Path(o.output_dir, CHECKPOINTS_DIR))
    if o.resume_from_checkpoint is None and checkpoints and not o.overwrite_output_dir:
        raise ValueError(
            f"--output_dir {o.output_dir} holds checkpoints of an earlier run ({checkpoints[-1].name}, ...). "
            "Continue it with --resume_from_checkpoint latest, start over with --overwrite_output_dir (deletes "
            "them), or choose another --output_dir."
        )
    if o.resume_from_checkpoint is not None and o.overwrite_output_dir:
        raise ValueError("--resume_from_checkpoint and --overwrite_output_dir contradict each other; give one.")
    if o.resume_from_checkpoint not in (None, "latest"):
        path = Path(o.resume_from_checkpoint)
        if not path.is_dir():
            raise FileNotFoundError(
                f"--resume_from_checkpoint {o.resume_from_checkpoint!r} is not a folder; give a "
                f"{CHECKPOINTS_DIR}/checkpoint-<step> folder or 'latest'."
            )
        TrainingState.read(path)  # FileNotFoundError if it is not a checkpoint of this script


def inspect_pipeline(name_or_path: str, token: str | None = None) -> PipelineSource:
    """Read the UNet and scheduler configs of `--pipeline` without building anything."""
    local = Path(name_or_path)
    looks_like_repo_id = name_or_path.count("/") == 1 and not local.exists() and not name_or_path.startswith(".")
    if looks_like_repo_id:
        return _inspect_hub_repo(name_or_path, token)
    folder = resolve_pipeline_config(name_or_path)  # FileNotFoundError listing the configurations
    trained = any((folder / "unet").glob("*.safetensors"))
    return PipelineSource(
        kind="folder" if trained else "config",
        location=str(folder),
        unet_config=json.loads((folder / "unet" / "config.json").read_text()),
        scheduler_config=json.loads((folder / "scheduler" / "scheduler_config.json").read_text()),
    )


def _inspect_hub_repo(repo_id: str, token: str | None) -> PipelineSource:
    from huggingface_hub import hf_hub_download

    try:
        names = ("unet/config.json", "scheduler/scheduler_config.json", MODEL_INDEX)
        configs = [hf_hub_download(repo_id, name, token=token) for name in names][:2]
    except Exception as error:
        raise ValueError(
            f"--pipeline {repo_id!r} is neither a local folder, a pipelines/ configuration nor a readable Hub "
            f"pipeline repo ({type(error).__name__}: {error})."
        ) from error
    unet_config, scheduler_config = (json.loads(Path(c).read_text()) for c in configs)
    return PipelineSource("hub", repo_id, unet_config, scheduler_config)


def resolve_options(o: TrainingOptions, source: PipelineSource) -> TrainingOptions:
    """Fill in the defaults that depend on the pipeline and the data source."""
    dataset_name = o.dataset_name if (o.dataset_name or o.train_data_dir) else BUILTIN_DATASETS[0]
    resolution = o.resolution or source.unet_config["sample_size"]
    return replace(o, dataset_name=dataset_name, resolution=resolution)


def check_model_compatibility(o: TrainingOptions, source: PipelineSource) -> None:
    unet = source.unet_config
    downsamplings = len(unet["block_out_channels"]) - 1
    multiple = 2**downsamplings
    if o.resolution % multiple:
        raise ValueError(
            f"--resolution {o.resolution} does not fit the UNet of {o.pipeline}: it halves the image {downsamplings} "
            f"times, so the resolution must be a multiple of {multiple} (its sample_size is {unet['sample_size']})."
        )
    scheduler = {**source.scheduler_config, **scheduler_overrides(o)}
    if scheduler["_class_name"] not in ("DDPMHubScheduler", "DDPMScheduler"):
        raise ValueError(
            f"{o.pipeline}: training needs a DDPMHubScheduler or DDPMScheduler, not {scheduler['_class_name']}."
        )
    if scheduler.get("variance_type", "fixed_small") not in VARIANCE_TYPES:
        raise ValueError(f"{o.pipeline}: variance_type {scheduler['variance_type']!r} is not one of {VARIANCE_TYPES}.")
    out_channels = unet_overrides(o, source).get("out_channels", unet["out_channels"])
    wanted = unet["in_channels"] * (2 if scheduler["variance_type"] == "learned_range" else 1)
    if out_channels != wanted:
        raise ValueError(
            f"variance_type {scheduler['variance_type']} needs a UNet with {wanted} output channels; the trained UNet "
            f"of {o.pipeline} has {out_channels}. Keep the pipeline's variance_type to fine-tune it."
        )
    num_timesteps = scheduler["num_train_timesteps"]
    if o.ddpm_num_inference_steps > num_timesteps:
        raise ValueError(
            f"--ddpm_num_inference_steps {o.ddpm_num_inference_steps} exceeds the {num_timesteps} training timesteps."
        )


def scheduler_overrides(o: TrainingOptions) -> dict:
    overrides = {
        "prediction_type": o.prediction_type,
        "variance_type": o.variance_type,
        "num_train_timesteps": o.ddpm_num_steps,
        "beta_schedule": o.ddpm_beta_schedule,
    }
    return {k: v for k, v in overrides.items() if v is not None}


def unet_overrides(o: TrainingOptions, source: PipelineSource) -> dict:
    """A configuration gets the run's resolution, and 2C output channels for learned_range; trained UNets stay."""
    if source.kind != "config":
        return {}
    unet = source.unet_config
    variance_type = o.variance_type or source.scheduler_config.get("variance_type", "fixed_small")
    channels = unet["in_channels"] * (2 if variance_type == "learned_range" else 1)
    return {"sample_size": o.resolution, "out_channels": channels}


# ----------------------------------------------------------------------------------------------------------------
# Setting up: accelerator, data, model, optimizer


@dataclass
class Run:
    """Everything the training loop touches."""

    options: TrainingOptions
    accelerator: Accelerator
    model: torch.nn.Module  # prepared (DDP, autocast, compiled): the one to call in training
    scheduler: DDPMHubScheduler  # on the full training chain; never set_timesteps on it
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: EMA | None
    data: MicroBatches
    report: ImageDatasetReport
    output_dir: Path
    holdout: torch.Tensor | None = None  # uint8 [N x C x H x W], not trained on

    @property
    def unet(self) -> UNet2DModel:
        """The bare UNet: what is saved, checksummed and averaged."""
        return self.accelerator.unwrap_model(self.model, keep_torch_compile=False)

    @property
    def images_per_step(self) -> int:
        return self.data.global_batch_size * self.options.gradient_accumulation_steps


@contextlib.contextmanager
def exit_on(*errors: type[Exception]):
    """Turn the listed exceptions into a one-line message and exit status 1, without a traceback."""
    try:
        yield
    except errors as error:
        sys.exit(f"train.py: error: {error}")


def distributed_without_accelerator() -> bool:
    """
    `accelerate launch --multi_gpu --num_processes N` on a machine without GPUs: Accelerate falls back to N separate
    single-process runs unless told to use the CPU; with `cpu=True` the ranks form one gloo group (MULTI_CPU).
    """
    has_accelerator = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not has_accelerator


def make_accelerator(o: TrainingOptions) -> Accelerator:
    output_dir = Path(o.output_dir)
    accelerator = Accelerator(
        cpu=distributed_without_accelerator(),
        mixed_precision=o.mixed_precision,
        log_with=None if o.logger == "none" else o.logger,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / o.logging_dir)),
        step_scheduler_with_optimizer=False,  # we step the LR schedule once per optimizer step, whatever the world
        dynamo_backend="inductor" if o.compile else None,
    )
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise ValueError("fp16 mixed precision needs a GPU; on a CPU use --mixed_precision bf16 or no.")
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per file of every checkpoint otherwise
    logger.info(
        "%d process(es), device %s, mixed precision %s",
        accelerator.num_processes,
        accelerator.device,
        accelerator.mixed_precision,
    )
    return accelerator


def load_training_images(o: TrainingOptions, source: PipelineSource, accelerator: Accelerator):
    """uint8 [N x C x H x W] through ddpm_hub.data; a Hub dataset is downloaded by the main process first."""
    with accelerator.main_process_first():
        images, report = load_image_tensor(
            dataset_name=None if o.train_data_dir else o.dataset_name,
            train_data_dir=o.train_data_dir,
            image_column=o.image_column,
            resolution=o.resolution,
            channels=source.unet_config["in_channels"],
            center_crop=o.center_crop,
            split=o.dataset_split,
            cache_dir=o.cache_dir,
            max_images=o.max_train_samples,
        )
    logger.info(
        "Dataset: %d images [%s], %d skipped",
        report.num_images,
        " x ".join(map(str, images.shape)),
        report.num_skipped,
    )
    if report.num_skipped:
        logger.warning("Skipped %d items: %s", report.num_skipped, report.summary())
    return images, report


def split_holdout(o: TrainingOptions, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(training images, held-out images): `validation_holdout` images chosen by a generator seeded with --seed."""
    if not o.validation_holdout:
        return images, None
    if o.validation_holdout >= len(images):
        raise ValueError(
            f"--validation_holdout {o.validation_holdout} leaves no training images: the dataset has {len(images)}."
        )
    order = torch.randperm(len(images), generator=make_generator(o.seed, HOLDOUT))
    held_out, kept = order[: o.validation_holdout].sort().values, order[o.validation_holdout :].sort().values
    logger.info("Held out %d images for validation; %d train", len(held_out), len(kept))
    return images[kept], images[held_out]


def resolve_training_length(o: TrainingOptions, data: MicroBatches) -> TrainingOptions:
    """max_train_steps from num_epochs (in optimizer steps), and num_epochs from max_train_steps."""
    micro_batches_per_step = o.gradient_accumulation_steps
    if o.max_train_steps is None:
        steps = max(1, o.num_epochs * data.batches_per_epoch // micro_batches_per_step)
        return replace(o, max_train_steps=steps)
    epochs = math.ceil(o.max_train_steps * micro_batches_per_step / data.batches_per_epoch)
    return replace(o, num_epochs=epochs)


def build_training_pipeline(o: TrainingOptions, source: PipelineSource) -> DDPMHubPipeline:
    if source.kind == "config":
        return build_pipeline(
            source.location,
            seed=o.seed,
            unet_overrides=unet_overrides(o, source),
            scheduler_overrides=scheduler_overrides(o),
        )
    token = {"token": o.hub_token} if source.kind == "hub" else {}
    pipeline = DDPMHubPipeline.from_pretrained(source.location, **token)
    scheduler = DDPMHubScheduler.from_config({**pipeline.scheduler.config, **scheduler_overrides(o)})
    if pipeline.unet.config.sample_size != o.resolution:
        pipeline.unet.register_to_config(sample_size=o.resolution)
    return DDPMHubPipeline(unet=pipeline.unet, scheduler=scheduler)


def apply_speed_settings(unet: UNet2DModel, o: TrainingOptions, device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = o.allow_tf32
        torch.backends.cudnn.allow_tf32 = o.allow_tf32
        unet.to(memory_format=torch.channels_last)
    if o.enable_xformers_memory_efficient_attention:
        unet.enable_xformers_memory_efficient_attention()


def make_optimizer(unet: UNet2DModel, o: TrainingOptions, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        unet.parameters(),
        lr=o.learning_rate,
        betas=(o.adam_beta1, o.adam_beta2),
        weight_decay=o.adam_weight_decay,
        eps=o.adam_epsilon,
        fused=device.type == "cuda",
    )


def build_run(
    o: TrainingOptions, source: PipelineSource, accelerator: Accelerator, images, report, holdout=None
) -> Run:
    data = MicroBatches(
        UInt8ImageDataset(images, random_flip=o.random_flip),
        o.train_batch_size,
        accelerator.num_processes,
        accelerator.process_index,
        o.seed,
    )
    o = resolve_training_length(o, data)
    o = replace(o, mixed_precision=accelerator.mixed_precision)
    pipeline = build_training_pipeline(o, source)
    unet = pipeline.unet.train()
    apply_speed_settings(unet, o, accelerator.device)
    scheduler = pipeline.scheduler.config
    logger.info(
        "UNet: %s parameters; %s betas, T=%d, %s prediction, %s variance",
        f"{count_parameters(unet):,}",
        scheduler.beta_schedule,
        scheduler.num_train_timesteps,
        scheduler.prediction_type,
        scheduler.variance_type,
    )
    optimizer = make_optimizer(unet, o, accelerator.device)
    lr_scheduler = get_scheduler(
        o.lr_scheduler, optimizer, num_warmup_steps=o.lr_warmup_steps, num_training_steps=o.max_train_steps
    )
    ema = EMA(unet, o.ema_max_decay, o.ema_inv_gamma, o.ema_power) if o.use_ema else None
    model, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    if ema is not None:
        ema.model.to(accelerator.device)
    return Run(
        o,
        accelerator,
        model,
        pipeline.scheduler,
        optimizer,
        lr_scheduler,
        ema,
        data,
        report,
        Path(o.output_dir),
        holdout,
    )


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints and resume


def save_checkpoint(run: Run, step: int) -> None:
    """Accelerate state + EMA + data position, written under a temporary name and renamed when complete."""
    accelerator, checkpoints_dir = run.accelerator, run.output_dir / CHECKPOINTS_DIR
    temporary = temporary_checkpoint_dir(checkpoints_dir, step)
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))  # every rank writes its RNG state; the main process the rest
    if accelerator.is_main_process:
        if run.ema is not None:
            run.ema.save(temporary / EMA_FOLDER)
        training_state(run, step).write(temporary)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final = commit_checkpoint(temporary, checkpoints_dir, step)
        pruned = prune_checkpoints(checkpoints_dir, run.options.checkpoints_total_limit)
        logger.info("Saved %s%s", final, f"; pruned {', '.join(p.name for p in pruned)}" if pruned else "")
    accelerator.wait_for_everyone()
    if step == run.options.debug_kill_at_step:
        os.kill(os.getpid(), signal.SIGKILL)


def training_state(run: Run, step: int) -> TrainingState:
    micro_batch = step * run.options.gradient_accumulation_steps
    epoch, batch_in_epoch = run.data.position(micro_batch)
    return TrainingState(
        global_step=step,
        micro_batch=micro_batch,
        epoch=epoch,
        batch_in_epoch=batch_in_epoch,
        seed=run.options.seed,
        global_batch_size=run.data.global_batch_size,
        gradient_accumulation_steps=run.options.gradient_accumulation_steps,
        num_images=len(run.data.images),
        ema_updates=run.ema.num_updates if run.ema is not None else None,
    )


def find_checkpoint(o: TrainingOptions) -> Path | None:
    if o.resume_from_checkpoint is None:
        return None
    if o.resume_from_checkpoint == "latest":
        found = latest_checkpoint(Path(o.output_dir, CHECKPOINTS_DIR))
        if found is None:
            logger.info("--resume_from_checkpoint latest: no checkpoint in %s yet; starting a new run.", o.output_dir)
        return found
    return Path(o.resume_from_checkpoint)


def resume(run: Run) -> TrainingState | None:
    """Load the checkpoint named by --resume_from_checkpoint, if any; returns its position."""
    folder = find_checkpoint(run.options)
    if folder is None:
        return None
    state = TrainingState.read(folder)
    check_resumable(run, state, folder)
    run.accelerator.load_state(str(folder))
    if run.ema is not None and (folder / EMA_FOLDER).is_dir():
        run.ema.load(folder / EMA_FOLDER, state.ema_updates)
    elif run.ema is not None:
        logger.warning("%s has no EMA weights; the EMA starts from the checkpoint's weights.", folder)
        run.ema = EMA(run.unet, run.options.ema_max_decay, run.options.ema_inv_gamma, run.options.ema_power)
    logger.info(
        "Resumed from %s: step %d, epoch %d, batch %d", folder, state.global_step, state.epoch, state.batch_in_epoch
    )
    return state


def check_resumable(run: Run, state: TrainingState, folder: Path) -> None:
    """The data position only means something with the same data, seed and global batch."""
    now = {
        "seed": run.options.seed,
        "global_batch_size": run.data.global_batch_size,
        "gradient_accumulation_steps": run.options.gradient_accumulation_steps,
        "num_images": len(run.data.images),
    }
    for name, value in now.items():
        if getattr(state, name) != value:
            raise ValueError(
                f"Cannot resume from {folder}: it was trained with {name}={getattr(state, name)}, this run has "
                f"{name}={value} (global_batch_size = train_batch_size x processes; num_images after skips). "
                "Use the same settings to continue it."
            )


# ----------------------------------------------------------------------------------------------------------------
# Training


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class TrainingResult:
    first_step: int
    global_step: int
    stopped_by: str
    wall_time: float
    step_time: float  # time in optimizer steps only (no checkpoints, no grids)
    losses: list[float]
    last_checkpoint: int | None
    validation: dict | None = None  # the held-out metrics at the last step


def micro_batch_loss(run: Run, m: int, x_0: torch.Tensor) -> torch.Tensor:
    """The loss of micro-batch m: its noise, timesteps and dropout are drawn from (seed, m, rank)."""
    o, accelerator = run.options, run.accelerator
    x_0 = x_0.to(accelerator.device, non_blocking=True)
    torch.manual_seed(derive_seed(o.seed, DROPOUT, m, accelerator.process_index))  # dropout uses the global RNG
    generator = make_generator(o.seed, NOISE, m, accelerator.process_index, device=accelerator.device)
    return training_loss(run.model, run.scheduler, x_0, generator, o.snr_gamma)


def optimizer_step(run: Run, micro_batches: list, step: int, time_up: bool) -> tuple[float, bool]:
    """One optimizer step over `gradient_accumulation_steps` micro-batches; returns (loss over ranks, stop?)."""
    accelerator, o = run.accelerator, run.options
    losses = []
    for i, (m, x_0) in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(run.model):  # all-reduce once per step
            loss = micro_batch_loss(run, m, x_0)
            accelerator.backward(loss / len(micro_batches))
        losses.append(loss.detach().float())
    loss = torch.stack(losses).mean()
    if step == o.debug_nonfinite_loss_at_step:
        loss = loss * float("nan")
    flags = accelerator.gather(torch.stack([loss, torch.tensor(float(time_up), device=loss.device)])[None])
    if not torch.isfinite(flags[:, 0]).all():  # every rank sees the same gathered values: all stop together
        raise NonFiniteLossError(non_finite_message(run, step, flags[:, 0].tolist()))
    if o.max_grad_norm > 0:
        accelerator.clip_grad_norm_(run.model.parameters(), o.max_grad_norm)
    run.optimizer.step()
    run.lr_scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    if run.ema is not None:
        run.ema.update(run.unet)
    return flags[:, 0].mean().item(), bool(flags[:, 1].max() > 0)


def non_finite_message(run: Run, step: int, losses: list[float]) -> str:
    last = latest_checkpoint(run.output_dir / CHECKPOINTS_DIR)
    where = f"the last good checkpoint is {last}" if last else "no checkpoint was saved yet"
    return (
        f"non-finite loss at step {step} (per process: {losses}); training stopped without saving, {where}. Lower "
        "--learning_rate, check --max_grad_norm and --mixed_precision, then resume with --resume_from_checkpoint."
    )


def make_loader(run: Run, first_micro_batch: int) -> DataLoader:
    """Micro-batches from the resume position on; earlier ones are never produced."""
    end = run.options.max_train_steps * run.options.gradient_accumulation_steps
    return DataLoader(
        run.data,
        batch_size=None,  # MicroBatches yields whole micro-batches
        sampler=range(first_micro_batch, end),
        num_workers=run.options.dataloader_num_workers,
        pin_memory=run.accelerator.device.type == "cuda",
    )


def train(run: Run, resumed: TrainingState | None) -> TrainingResult:
    o, accelerator = run.options, run.accelerator
    first_step = resumed.global_step if resumed else 0
    micro_batches = iter(make_loader(run, resumed.micro_batch if resumed else 0))
    progress = tqdm(
        total=o.max_train_steps, initial=first_step, desc="train", disable=not accelerator.is_local_main_process
    )
    started, step_time, losses, speed = time.monotonic(), 0.0, [], None
    step, stopped_by, last_checkpoint = first_step, "max_train_steps", None
    while step < o.max_train_steps:
        tick = time.monotonic()
        time_up = o.max_train_minutes is not None and tick - started > 60 * o.max_train_minutes
        batch = [next(micro_batches) for _ in range(o.gradient_accumulation_steps)]
        loss, stop = optimizer_step(run, batch, step + 1, time_up)  # stop: some rank's time is up (after this step)
        step, duration = step + 1, time.monotonic() - tick
        step_time, speed = step_time + duration, run.images_per_step / duration
        losses.append(loss)
        log_step(run, progress, step, loss, speed)
        if o.checkpointing_steps and step % o.checkpointing_steps == 0:
            save_checkpoint(run, step)
            last_checkpoint = step
        if o.validation_steps and step % o.validation_steps == 0 and step < o.max_train_steps:
            write_validation_grid(run, step)
            log_holdout_metrics(run, step)
        if stop:
            stopped_by = "max_train_minutes"
            break
    progress.close()
    validation = log_holdout_metrics(run, step)
    wall_time = time.monotonic() - started
    return TrainingResult(first_step, step, stopped_by, wall_time, step_time, losses, last_checkpoint, validation)


def log_step(run: Run, progress: tqdm, step: int, loss: float, speed: float) -> None:
    lr = run.lr_scheduler.get_last_lr()[0]
    logs = {"train/loss": loss, "train/lr": lr, "train/images_per_second": speed}
    if run.ema is not None:
        logs["train/ema_decay"] = run.ema.decay(run.ema.num_updates - 1)
    run.accelerator.log(logs, step=step)
    progress.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{speed:.0f}", refresh=False)
    progress.update(1)


# ----------------------------------------------------------------------------------------------------------------
# Sampling: every rank samples its share of the grid, so that no rank idles into a collective timeout.


def final_unet(run: Run) -> UNet2DModel:
    return run.ema.model if run.ema is not None else run.unet


def sample_images(run: Run) -> list[np.ndarray]:
    """`num_validation_images` uint8 [H x W x C] images, image i from its own generator (seed, i); all ranks."""
    o, accelerator = run.options, run.accelerator
    unet = final_unet(run)
    was_training = unet.training
    # A separate scheduler: set_timesteps(n) respaces the chain, which the training scheduler must keep whole.
    pipeline = DDPMHubPipeline(unet=unet.eval(), scheduler=type(run.scheduler).from_config(run.scheduler.config))
    pipeline.set_progress_bar_config(disable=True)
    with accelerator.split_between_processes(list(range(o.num_validation_images))) as mine:
        images = []
        if mine:
            generators = [make_generator(o.seed, SAMPLING, i, device=accelerator.device) for i in mine]
            with accelerator.autocast():
                output = pipeline(
                    batch_size=len(mine),
                    generator=generators,
                    num_inference_steps=o.ddpm_num_inference_steps,
                    output_type="np",
                )
            images = list(to_uint8(output.images))
    unet.train(was_training)
    return gather_object(images)


def grid_image(images: list[np.ndarray], resolution: int) -> Image.Image:
    tiles = [Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im) for im in images]
    return upscale(make_grid(tiles), max(1, 64 // resolution))


def log_grid(run: Run, grid: Image.Image, step: int) -> None:
    pixels = np.asarray(grid.convert("RGB"))
    for tracker in run.accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image("samples", pixels, step, dataformats="HWC")
        elif tracker.name == "wandb":
            import wandb

            tracker.log({"samples": wandb.Image(grid)}, step=step)


def write_validation_grid(run: Run, step: int) -> None:
    images = sample_images(run)
    if run.accelerator.is_main_process:
        grid = grid_image(images, run.options.resolution)
        folder = run.output_dir / run.options.logging_dir / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        grid.save(folder / f"step-{step:07d}.png")
        log_grid(run, grid, step)
    run.accelerator.wait_for_everyone()


def holdout_metrics(run: Run) -> dict:
    """
    The cheap in-training signals on the held-out images, for the weights that will be saved (EMA if on):
    L_simple with noise and timesteps fixed by --seed (comparable across steps), and the sampled estimate of the
    full-chain bits/dim over `validation_bpd_steps` UNet calls per image (ddpm_hub.likelihood, seeded too).
    """
    o, device = run.options, run.accelerator.device
    unet = final_unet(run)
    was_training = unet.training
    unet.eval()
    x_0 = to_model_range(run.holdout).to(device)
    generator = make_generator(o.seed, HOLDOUT, 1)
    timesteps = torch.randint(0, run.scheduler.config.num_train_timesteps, (len(x_0),), generator=generator)
    noise = torch.randn(x_0.shape, generator=generator).to(device)
    with torch.no_grad():
        x_t = run.scheduler.add_noise(x_0, noise, timesteps)
        output = unet(x_t, timesteps.to(device)).sample
        loss = diffusion_loss(run.scheduler, output, x_0, x_t, noise, timesteps.to(device)).mean().item()
    pipeline = DDPMHubPipeline(unet=unet, scheduler=run.scheduler)  # bits_per_dim works on its own scheduler copy
    bpd = bits_per_dim(
        pipeline,
        run.holdout,
        num_steps=o.validation_bpd_steps,
        estimator="sampled",
        generator=make_generator(o.seed, HOLDOUT, 2),
    )
    unet.train(was_training)
    return {"loss": loss, "bits_per_dim": bpd.mean(), "bits_per_dim_label": bpd.label, "num_images": len(x_0)}


def log_holdout_metrics(run: Run, step: int) -> dict | None:
    """Every rank computes the same (deterministic, small) numbers, so no rank waits; the main process logs them."""
    if run.holdout is None:
        return None
    metrics = holdout_metrics(run)
    run.accelerator.log({"val/loss": metrics["loss"], "val/bits_per_dim": metrics["bits_per_dim"]}, step=step)
    logger.info(
        "step %d held-out: loss %.4f, %.3f bits/dim (%s)",
        step,
        metrics["loss"],
        metrics["bits_per_dim"],
        metrics["bits_per_dim_label"],
    )
    return metrics


# ----------------------------------------------------------------------------------------------------------------
# Output


def start_output(run: Run) -> None:
    """Create output_dir, clear old checkpoints if asked, write the resolved options, start the tracker."""
    accelerator, o = run.accelerator, run.options
    if accelerator.is_main_process:
        run.output_dir.mkdir(parents=True, exist_ok=True)
        if o.overwrite_output_dir:
            shutil.rmtree(run.output_dir / CHECKPOINTS_DIR, ignore_errors=True)
        (run.output_dir / OPTIONS_FILE).write_text(json.dumps(recorded_options(o), indent=2) + "\n")
    accelerator.wait_for_everyone()
    tracker_config = {
        k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in recorded_options(o).items()
    }
    accelerator.init_trackers("train", config=tracker_config)


def recorded_options(o: TrainingOptions) -> dict:
    """The options as written to disk and to the tracker: everything but the Hub token."""
    return asdict(replace(o, hub_token=None))


def finish(run: Run, result: TrainingResult) -> None:
    """Final checkpoint, grid, pipeline and summary; the main process writes, every rank samples."""
    accelerator, o = run.accelerator, run.options
    checksums = gather_object([weights_checksum(run.unet)])
    if len(set(checksums)) != 1:
        raise RuntimeError(f"The processes ended with different weights (sha256 per rank: {checksums}).")
    if (
        o.checkpointing_steps
        and result.last_checkpoint != result.global_step
        and result.global_step > result.first_step
    ):
        save_checkpoint(run, result.global_step)
    images = sample_images(run)
    if accelerator.is_main_process:
        save_pipeline(run)
        grid = grid_image(images, o.resolution)
        grid.save(run.output_dir / SAMPLES_FILE)
        log_grid(run, grid, result.global_step)
        write_summary(run, result, checksums)
        logger.info("Wrote the pipeline, %s and %s to %s", SAMPLES_FILE, SUMMARY_FILE, run.output_dir)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if o.push_to_hub and accelerator.is_main_process:
        publish_output(o)


def save_pipeline(run: Run) -> None:
    unet = final_unet(run)
    scheduler = type(run.scheduler).from_config(run.scheduler.config)
    DDPMHubPipeline(unet=unet, scheduler=scheduler).save_pretrained(run.output_dir)


def write_summary(run: Run, result: TrainingResult, checksums: list[str]) -> None:
    o, accelerator = run.options, run.accelerator
    steps_done = result.global_step - result.first_step
    device = accelerator.device
    summary = {
        "steps": result.global_step,
        "max_train_steps": o.max_train_steps,
        "stopped_by": result.stopped_by,
        "resumed_from_step": result.first_step or None,
        "images_seen": result.global_step * run.images_per_step,
        "epochs": round(result.global_step * run.images_per_step / len(run.data.images), 3),
        "wall_time_seconds": round(result.wall_time, 1),
        "images_per_second": round(steps_done * run.images_per_step / result.step_time, 1) if steps_done else None,
        "final_loss": result.losses[-1] if result.losses else None,
        "mean_loss_last_100_steps": float(np.mean(result.losses[-100:])) if result.losses else None,
        "final_learning_rate": run.lr_scheduler.get_last_lr()[0],
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        "num_processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        "global_batch_size": run.images_per_step,
        "ema": run.ema is not None,
        "parameters": count_parameters(run.unet),
        "pipeline": o.pipeline,
        "dataset": {
            "source": o.train_data_dir or o.dataset_name,
            "num_images": run.report.num_images,
            "num_skipped": run.report.num_skipped,
            "skipped": [list(item) for item in run.report.skipped[:20]],
        },
        "samples": {"file": SAMPLES_FILE, "num_images": o.num_validation_images, "steps": o.ddpm_num_inference_steps},
        "weights_sha256_per_rank": checksums,
    }
    if result.validation is not None:
        summary["validation"] = {"held_out_images": o.validation_holdout, **result.validation}
    (run.output_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")


def publish_output(o: TrainingOptions) -> None:
    hub = importlib.import_module("ddpm_hub.hub")
    try:
        result = hub.publish(o.output_dir, repo_id=hub_repo_id(o), private=o.hub_private_repo, token=o.hub_token)
    except hub.PublishError as error:
        sys.exit(f"train.py: error: training finished and {o.output_dir} is saved, but publishing failed: {error}")
    logger.info("Published %s to %s", o.output_dir, result)


# ----------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    with exit_on(ValueError, FileNotFoundError):  # bad options, data or checkpoints: a message, not a traceback
        options, source = parse_and_check_options(argv)
        accelerator = make_accelerator(options)
        images, report = load_training_images(options, source, accelerator)
        images, holdout = split_holdout(options, images)
        run = build_run(options, source, accelerator, images, report, holdout)
        resumed = resume(run)
    start_output(run)
    with exit_on(NonFiniteLossError):
        result = train(run, resumed)
    finish(run, result)


if __name__ == "__main__":
    main()
