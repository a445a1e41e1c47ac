"""`TrainingOptions`: every option of training, one typed frozen object in groups (`ModelOptions`, `OptimizerOptions`,
...), each the options one part of training takes; `--help`, `--config` and the checks of value ranges come from the
fields (`ddpm_hub.options`), flat. The data options are `ddpm_hub.data.DataOptions`, shared with `ddpm-hub eval`.
"""

import argparse
import json
from dataclasses import dataclass, field, fields, replace

from ..data import DataOptions
from ..errors import UsageError
from ..loading.hub_errors import TOKEN_ADVICE
from ..loading.settings import TORCH_DTYPES, LoadSettings
from ..options import (
    HelpFormatter,
    add_arguments,
    from_namespace,
    guidance_scale,
    option,
    read_config_file,
    to_flat_dict,
)
from ..shipped.conditioning_ddpm_hub import GUIDANCE_SCALE_RANGE
from ..shipped.scheduling_ddpm_hub import BETA_SCHEDULES, PREDICTION_TYPES, VARIANCE_TYPES
from .objective_options import DISTILL_METHODS, AutoencoderOptions, DistillOptions  # noqa: F401 - re-exported
from .option_values import parse_calls, parse_guidance_range, parse_prompts, parse_trackers  # noqa: F401
from .prior_options import PriorOptions

LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
MIXED_PRECISIONS = ("no", "fp16", "bf16")


@dataclass(frozen=True)
class ModelOptions:
    """The model and its objective (`--pipeline` and the scheduler settings it is trained with)."""

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
        None, "T, the number of diffusion timesteps (default: the pipeline's scheduler config)", "model", at_least=2
    )
    ddpm_beta_schedule: str | None = option(
        None,
        "the beta schedule (default: the pipeline's scheduler config)",
        "model",
        choices=(*BETA_SCHEDULES, "squaredcos_cap_v2"),
    )
    snr_gamma: float | None = option(
        None,
        "min-SNR-gamma loss weighting (Hang et al. 2023; 5.0 is the paper's value); default: off",
        "model",
        above=0,
    )
    vae: str | None = option(
        None,
        "train on this autoencoder's latents (latent diffusion): a diffusers AutoencoderKL folder or Hub repo, e.g. "
        "runs/ddpm-vae-digits-64 or stabilityai/sd-vae-ft-mse; frozen (default: pixels, or a trained latent "
        "pipeline's own vae/)",
        "model",
    )
    revision: str | None = option(
        None,
        "the branch, tag or commit of every Hub repo the run loads by name (--pipeline, --distill_from, --vae, "
        "--text_encoder), as diffusers' training scripts take one --revision (default: main; folders have none)",
        "model",
    )
    variant: str | None = option(
        None,
        "load weights saved as this variant (e.g. fp16: diffusion_pytorch_model.fp16.safetensors) from the models "
        "named by --pipeline, --distill_from, --vae and --text_encoder (default: the plain weights)",
        "model",
    )
    torch_dtype: str | None = option(
        None,
        "the dtype of the frozen models the run only reads: the autoencoder of a latent run and a frozen text "
        "encoder (float16/bfloat16 halve their memory); the trained weights stay float32 (default: float32)",
        "model",
        choices=TORCH_DTYPES,
    )
    vae_subfolder: str | None = option(
        None, "the autoencoder's subfolder inside --vae (a pipeline repo's `vae`)", "model"
    )
    vae_scaling_factor: float | None = option(
        None,
        "the latents the DDPM sees are z' = (z - shift) x this: smaller values let the forward process destroy them "
        "sooner (input scaling, Chen 2023); saved in the pipeline's vae/config.json (default: the autoencoder's "
        "scaling_factor, 1/std of its latents)",
        "model",
        above=0,
    )

    def loading(self, frozen: bool = False) -> LoadSettings:
        """How the run reads a model by name: --revision, --variant, and with `frozen` (a model it only reads)
        --torch_dtype; a model it trains loads in float32."""
        return LoadSettings(self.revision, self.variant, self.torch_dtype if frozen else None)


@dataclass(frozen=True)
class ConditioningOptions:
    """How the condition of a conditional model is trained (`ddpm_hub.pipelines.conditioning`)."""

    class_dropout_prob: float | None = option(
        None,
        "a class-conditional model (a class embedding in its UNet config): the share of labels replaced by the null "
        "label (the last class id), which classifier-free guidance needs; 0 trains no null label (default: 0.1)",
        "model",
        at_least=0,
        below=1,
    )
    caption_dropout_prob: float | None = option(
        None,
        "a text-to-image model: the share of captions replaced by the empty prompt (the null condition of "
        "classifier-free guidance), drawn per batch from the seeded stream (default: 0.1)",
        "model",
        at_least=0,
        below=1,
    )
    clean_low_res_prob: float | None = option(
        None,
        "a super-resolution model: the share of examples whose low-resolution input is left clean (augmentation "
        "level 0, rounded to 8 bits as an image file holds it); the others are corrupted at a level drawn uniformly "
        "in 1 .. max_noise_level (default: 0.8)",
        "model",
        at_least=0,
        at_most=1,
    )
    text_encoder: str | None = option(
        None,
        "a text-to-image configuration: the transformers text encoder (a Hub name or a folder with its tokenizer; "
        "T5EncoderModel, CLIPTextModel, ...) instead of the one in the configuration (default: the configuration's)",
        "model",
    )
    train_text_encoder: bool = option(
        False, "train the text encoder with the UNet (default: frozen, as Imagen keeps T5)", "model"
    )
    image_encoder: str | None = option(
        None,
        "a decoder configuration (a UNet conditioned on a CLIP image embedding, DALL-E 2): the frozen CLIP image "
        "encoder each training image is embedded with, a CLIPModel (its vision tower and projection are taken) or a "
        "CLIPVisionModelWithProjection, folder or Hub name (e.g. runs/ddpm-unclip-digit-pairs-clip, "
        "openai/clip-vit-base-patch32); saved in the run folder (default: the configuration's, or a trained one's)",
        "model",
    )
    image_embed_dropout_prob: float | None = option(
        None,
        "a decoder: the share of image embeddings replaced by the zero embedding (the null condition of "
        "classifier-free guidance), drawn per micro-batch from the seeded stream (default: 0.1)",
        "model",
        at_least=0,
        below=1,
    )
    validation_prompts: tuple[str, ...] | None = option(
        None,
        "a text-to-image model: the prompts of the grids, one row each, separated by '|' (a list in a config file); "
        "default: the first 8 distinct captions of the data",
        "validation",
        parse=parse_prompts,
    )


@dataclass(frozen=True)
class BatchOptions:
    """How training reads the data: batches, flips, workers."""

    train_batch_size: int = option(16, "images per process per micro-batch", "training", at_least=1)
    gradient_accumulation_steps: int = option(1, "micro-batches per optimizer step", "training", at_least=1)
    random_flip: bool = option(False, "flip images left-right at random", "data")
    dataloader_num_workers: int = option(
        0, "data loading worker processes (0: in the main process)", "data", at_least=0
    )


@dataclass(frozen=True)
class LengthOptions:
    """How long training runs."""

    num_epochs: int = option(
        100, "passes over the data; ignored when --max_train_steps is given", "training", at_least=1
    )
    max_train_steps: int | None = option(
        None,
        "optimizer steps to train (default: from --num_epochs); the LR schedule spans them",
        "training",
        at_least=1,
    )
    max_train_minutes: float | None = option(
        None,
        "stop after this many minutes of training, then save and sample as at the end (default: no limit)",
        "training",
        above=0,
    )


@dataclass(frozen=True)
class OptimizerOptions:
    """AdamW, its learning-rate schedule and gradient clipping."""

    learning_rate: float = option(1e-4, "peak learning rate (after warmup)", "optimizer", above=0)
    lr_scheduler: str = option("cosine", "learning-rate schedule over optimizer steps", "optimizer", LR_SCHEDULERS)
    lr_warmup_steps: int = option(500, "optimizer steps of linear warmup", "optimizer", at_least=0)
    adam_beta1: float = option(0.95, "AdamW beta1", "optimizer", at_least=0, below=1)
    adam_beta2: float = option(0.999, "AdamW beta2", "optimizer", at_least=0, below=1)
    adam_weight_decay: float = option(1e-6, "AdamW weight decay", "optimizer", at_least=0)
    adam_epsilon: float = option(1e-8, "AdamW epsilon", "optimizer", above=0)
    max_grad_norm: float = option(1.0, "gradient clipping norm (0: no clipping)", "optimizer", at_least=0)


@dataclass(frozen=True)
class EMAOptions:
    """The exponential moving average of the weights (`ddpm_hub.training.ema`)."""

    use_ema: bool = option(
        False, "keep an exponential moving average of the weights and save it as the pipeline", "ema"
    )
    ema_max_decay: float = option(
        0.9999, "the EMA decay after warmup (the DDPM paper's value)", "ema", at_least=0, at_most=1
    )
    ema_inv_gamma: float = option(1.0, "EMA warmup: decay = 1 - (1 + step / inv_gamma) ** -power", "ema", above=0)
    ema_power: float = option(0.75, "EMA warmup power (2/3 suits runs of a few thousand steps)", "ema", above=0)
    offload_ema: bool = option(
        False,
        "keep the EMA weights in CPU memory, not on the accelerator (each update copies the weights across; the "
        "grids and held-out metrics move them over for a while)",
        "ema",
    )


@dataclass(frozen=True)
class SpeedOptions:
    """Precision and speed."""

    mixed_precision: str | None = option(
        None,
        "autocast precision (fp16 needs a GPU); default: Accelerate's configuration, else no",
        "speed",
        MIXED_PRECISIONS,
    )
    allow_tf32: bool = option(True, "TF32 matmuls and convolutions on Ampere or newer GPUs", "speed")
    compile: bool = option(False, "torch.compile the UNet (inductor)", "speed")
    gradient_checkpointing: bool = option(
        False,
        "recompute the UNet's (and a trained text encoder's) activations in the backward pass instead of keeping "
        "them: less memory, a slower step (docs/training.md#memory)",
        "speed",
    )
    channels_last: bool = option(
        True, "channels_last memory format for the UNet and its input (faster convolutions on GPU and CPU)", "speed"
    )
    flush_denormal: bool = option(
        True, "on a CPU, flush floats below 1e-38 to zero (denormal arithmetic is slow on x86)", "speed"
    )
    cpu_threads: int | None = option(
        None,
        "torch threads per process on a CPU (default: the physical cores shared among this machine's processes)",
        "speed",
        at_least=1,
    )
    enable_xformers_memory_efficient_attention: bool = option(
        False, "xformers attention (needs xformers; PyTorch's SDPA is used otherwise)", "speed"
    )


@dataclass(frozen=True)
class CheckpointOptions:
    """Checkpoints in output_dir/checkpoints, and resuming from one."""

    checkpointing_steps: int = option(
        500, "save a checkpoint every N optimizer steps and at the end (0: never)", "checkpoints", at_least=0
    )
    checkpoints_total_limit: int | None = option(
        None, "keep only the newest N checkpoints (default: keep all)", "checkpoints", at_least=1
    )
    resume_from_checkpoint: str | None = option(
        None,
        "'latest' (the newest in output_dir/checkpoints; a fresh start if none) or a checkpoint folder",
        "checkpoints",
    )


@dataclass(frozen=True)
class ValidationOptions:
    """Sample grids and held-out metrics."""

    validation_steps: int = option(
        500, "sample a grid every N optimizer steps (0: only at the end)", "validation", at_least=0
    )
    num_validation_images: int = option(
        16, "images in each grid, shared among the processes", "validation", aliases=("--eval_batch_size",), at_least=1
    )
    ddpm_num_inference_steps: int = option(250, "respaced sampling steps for the grids", "validation", at_least=1)
    validation_guidance_scale: float = option(
        1.0,
        "classifier-free guidance scale of the grids of a class-conditional model (one row per class), in the range "
        "every pipeline call accepts: [0, 100]",
        "validation",
        at_least=GUIDANCE_SCALE_RANGE[0],
        at_most=GUIDANCE_SCALE_RANGE[1],
        parse=guidance_scale,
    )
    validation_holdout: int = option(
        0,
        "hold out N images (a seeded choice) from training; log their loss and a sampled bits/dim estimate with "
        "each grid and at the end (0: no held-out metrics)",
        "validation",
        at_least=0,
    )
    validation_bpd_steps: int = option(
        20,
        "UNet calls per held-out image for the sampled bits/dim estimate (ddpm_hub.evaluation.likelihood)",
        "validation",
        at_least=2,
    )


@dataclass(frozen=True)
class LoggingOptions:
    """The tracker and how often losses are exchanged."""

    report_to: str = option(
        "tensorboard",
        "experiment trackers, comma separated: any Accelerate supports (tensorboard, wandb, mlflow, comet_ml, aim, "
        "clearml, dvclive, swanlab, trackio; each must be installed), all (every installed one), or none",
        "logging",
        aliases=("--logger",),
        parse=parse_trackers,
    )
    tracker_project_name: str | None = option(
        None,
        "the trackers' project (wandb's project, tensorboard's run folder; default: output_dir's name)",
        "logging",
    )
    logging_dir: str = option("logs", "tracker logs and validation grids, relative to output_dir", "logging")
    logging_steps: int = option(
        10,
        "exchange the losses every N optimizer steps: log them, stop on a non-finite one, check the time limit "
        "(the only wait for the device; also before every checkpoint and grid)",
        "logging",
        at_least=1,
    )


@dataclass(frozen=True)
class HubOptions:
    """Publishing at the end (`ddpm_hub.hub`)."""

    push_to_hub: bool = option(False, "publish output_dir with ddpm_hub.hub.publish at the end", "hub")
    hub_model_id: str | None = option(None, "the repo id (default: the name of output_dir)", "hub")
    hub_private_repo: bool = option(False, "create the repo private", "hub")


@dataclass(frozen=True)
class TrainingOptions:
    """
    Every option of a training run, in the groups the parts of training take (as EDM passes `network_kwargs`,
    `loss_kwargs`, ...): `o.model` to the model and objective, `o.data` to the data, `o.optimizer` to the optimizer,
    and so on. On the command line, in config files and in `training_options.json` the options are flat (`--seed`,
    `--learning_rate`): a group is only how the code passes them around.
    """

    model: ModelOptions = field(default_factory=ModelOptions)
    conditioning: ConditioningOptions = field(default_factory=ConditioningOptions)
    # Data: which images and how they are decoded (shared with ddpm-hub eval), then how training reads them
    data: DataOptions = field(default_factory=DataOptions)
    batches: BatchOptions = field(default_factory=BatchOptions)
    # The run
    output_dir: str = option("ddpm-model", "where the pipeline, samples, checkpoints and logs are written", "training")
    overwrite_output_dir: bool = option(
        False, "delete checkpoints an earlier run left in output_dir and start over", "training"
    )
    seed: int = option(0, "seeds the weights and every random draw; same seed, same run", "training", at_least=0)
    ddp_timeout: int = option(
        1800,
        "seconds a process waits for the others in a collective before the run stops (torch.distributed's timeout, "
        "transformers' --ddp_timeout): how long a machine that freezes holds up the others; longer than any time one "
        "process works alone (a checkpoint written, the final grids)",
        "training",
        at_least=1,
    )
    length: LengthOptions = field(default_factory=LengthOptions)
    optimizer: OptimizerOptions = field(default_factory=OptimizerOptions)
    ema: EMAOptions = field(default_factory=EMAOptions)
    distillation: DistillOptions = field(default_factory=DistillOptions)
    speed: SpeedOptions = field(default_factory=SpeedOptions)
    checkpoints: CheckpointOptions = field(default_factory=CheckpointOptions)
    validation: ValidationOptions = field(default_factory=ValidationOptions)
    logging: LoggingOptions = field(default_factory=LoggingOptions)
    hub: HubOptions = field(default_factory=HubOptions)
    autoencoder: AutoencoderOptions = field(default_factory=AutoencoderOptions)
    prior: PriorOptions = field(default_factory=PriorOptions)

    def changed(self, group: str, **changes) -> "TrainingOptions":
        """A copy with fields of one group (`"data"`, `"length"`, ...) replaced."""
        return replace(self, **{group: replace(getattr(self, group), **changes)})


GROUP_TITLES = {
    "model": "model and objective",
    "data": "data (ddpm_hub.data: decoded once into uint8 tensors)",
    "training": "training length and output",
    "optimizer": "optimizer (AdamW) and learning-rate schedule",
    "ema": "exponential moving average",
    "distillation": "distillation (--distill_from): progressive or consistency",
    "speed": "precision and speed",
    "checkpoints": "checkpoints (output_dir/checkpoints)",
    "validation": "sample grids",
    "logging": "logging",
    "hub": "publishing (ddpm_hub.hub)",
    "autoencoder": "autoencoder (--pipeline an AutoencoderKL configuration)",
    "prior": "diffusion prior (--pipeline a PriorTransformer configuration, unCLIP)",
}


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train.py", description=description, formatter_class=HelpFormatter)
    parser.add_argument(
        "--config", help="a YAML or JSON file of options, keys as the flag names without '--'; flags given win"
    )
    parser.add_argument(
        "--dry-run",
        "--dry_run",
        dest="dry_run",
        action="store_true",
        help="check the options, print them resolved as JSON, and exit without loading data or building a model",
    )
    parser.add_argument("--local_rank", type=int, default=-1, help=argparse.SUPPRESS)  # torch.distributed.launch
    add_arguments(parser, TrainingOptions, GROUP_TITLES)
    parser.add_argument("--hub_token", dest="hub_token_given", metavar="TOKEN", help=f"not accepted: {TOKEN_ADVICE}")
    return parser


def parse_options(argv: list[str] | None = None, description: str | None = None) -> tuple[TrainingOptions, bool]:
    """Command line over config file over defaults: `(options, dry_run)`."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    config_path = pre.parse_known_args(argv)[0].config
    parser = build_parser(description)
    if config_path is not None:
        parser.set_defaults(**read_config_file(config_path, TrainingOptions, secrets=("hub_token",)))
    namespace = parser.parse_args(argv)
    if namespace.hub_token_given is not None:
        raise UsageError(f"--hub_token is refused: {TOKEN_ADVICE}")
    return from_namespace(TrainingOptions, namespace), namespace.dry_run


def recorded_options(o: TrainingOptions) -> dict:
    """The options as written to `training_options.json` and the tracker: flat (no option holds a secret)."""
    return to_flat_dict(o)


def dry_run_report(o: TrainingOptions, source) -> str:
    """What `--dry-run` prints: the resolved options and where the weights come from, as JSON."""
    return json.dumps({"options": recorded_options(o), "pipeline_source": source.kind}, indent=2)


def options_given(o: TrainingOptions, groups: tuple[str, ...], kept: tuple[str, ...] = ("pipeline",)) -> list[str]:
    """
    The flags of the option `groups` (and --distill_from) given a value other than their default, but `kept`: what a
    run of one component refuses, since the options of other runs mean nothing to it.
    """
    defaults = TrainingOptions()
    given = [
        f"--{f.name}"
        for group in groups
        for f in fields(getattr(defaults, group))
        if f.name not in kept and getattr(getattr(o, group), f.name) != getattr(getattr(defaults, group), f.name)
    ]
    return given + ["--distill_from"] * (o.distillation.distill_from is not None)
