"""Setting up a run: the accelerator, the data, the model, the objective, the optimizer, the EMA: one `Run`."""

import gc
import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration
from diffusers import UNet2DModel
from diffusers.optimization import get_scheduler

from ..configs import build_pipeline, count_parameters
from ..data import ImageDatasetReport, UInt8ImageDataset
from ..data.cache import Coordinator
from ..data.decode import image_size
from ..data.streaming import ImageStream, open_stream
from ..errors import UsageError
from ..losses import DiffusionObjective
from ..pipeline import DDPMHubPipeline
from ..runtime import default_cpu_threads, distributed_without_accelerator
from ..scheduling_ddpm_hub import DDPMHubScheduler
from .batches import MicroBatches, StreamedMicroBatches, holdout_indices
from .checks import PipelineSource, sample_size_config, scheduler_overrides, unet_overrides
from .ema import EMA
from .options import TrainingOptions

logger = get_logger(__name__, log_level="INFO")


@dataclass
class Run:
    """Everything the training loop touches."""

    options: TrainingOptions
    accelerator: Accelerator
    model: torch.nn.Module  # prepared (DDP, autocast, compiled): the one to call in training
    scheduler: DDPMHubScheduler  # on the full training chain; never set_timesteps on it
    objective: DiffusionObjective
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: EMA | None
    data: MicroBatches | StreamedMicroBatches
    report: ImageDatasetReport
    output_dir: Path
    holdout: torch.Tensor | None = None  # uint8 [N x C x H x W], not trained on
    holdout_labels: torch.Tensor | None = None  # [N], a class-conditional model's
    label_names: list[str] | None = None  # class i's name, saved with the pipeline as id2label
    null_class_label: int | None = None  # the class id label dropout uses (classifier-free guidance)

    @property
    def unet(self) -> UNet2DModel:
        """The bare UNet: what is saved, checksummed and averaged."""
        return self.accelerator.unwrap_model(self.model, keep_torch_compile=False)

    @property
    def images_per_step(self) -> int:
        return self.data.global_batch_size * self.options.gradient_accumulation_steps


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
        raise UsageError("fp16 mixed precision needs a GPU; on a CPU use --mixed_precision bf16 or no.")
    if accelerator.device.type == "cpu":  # --cpu_threads, else the physical cores this process may use
        torch.set_num_threads(o.cpu_threads or default_cpu_threads())
        torch.set_flush_denormal(o.flush_denormal)  # floats below 1e-38 as 0: no slow denormal arithmetic
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per file of every checkpoint otherwise
    logger.info(
        "%d process(es), device %s, mixed precision %s",
        accelerator.num_processes,
        accelerator.device,
        accelerator.mixed_precision,
    )
    return accelerator


def close_accelerator(accelerator: Accelerator) -> None:
    """
    Stop the trackers and destroy the process group, once the prepared model is gone: call it after the `Run`.

    A gloo group must not be freed by DDP's reducer. The reducer's destructor holds the GIL; the group's destructor
    waits for its worker threads; a worker dropping the last reference to a finished collective's tensors needs the
    GIL. Both then wait forever: a 2-process CPU run that had written everything hung at exit (pytorch/pytorch#56297).
    Freed first (accelerate keeps only the bare model), while the group is still registered, the reducer is not the
    group's last owner; the group then goes with its Python handle in `end_training`, which lets go of the GIL.
    """
    gc.collect()  # a reference cycle still holding the DDP model
    accelerator.end_training()


@dataclass
class TrainingData:
    """
    The decoded dataset split for training: the images (memory-mapped from the decoded cache, or in RAM) of which
    training reads the rows `indices` (all when None: no copy of the training part is made), and the held-out
    images (a small copy), with labels for a conditional model.
    """

    images: torch.Tensor  # uint8 [N x C x H x W]
    labels: torch.Tensor | None  # [len(indices)]: the labels of the training rows
    label_names: list[str] | None
    holdout: torch.Tensor | None
    holdout_labels: torch.Tensor | None
    report: ImageDatasetReport
    indices: torch.Tensor | None = None
    file: Path | None = None  # the cache file `images` is memory-mapped from


@dataclass
class TrainingStream:
    """A streamed dataset (--streaming): this rank's part of it, read as training goes."""

    stream: ImageStream
    label_names: list[str] | None
    report: ImageDatasetReport = field(default_factory=lambda: ImageDatasetReport(num_images=0, num_skipped=0))
    holdout = holdout_labels = None  # a stream has no held-out images


def open_training_stream(o: TrainingOptions, source: PipelineSource, accelerator: Accelerator) -> TrainingStream:
    """This rank's part of the stream (`ddpm_hub.data.streaming`), its labels checked against the model."""
    stream = open_stream(
        o.data, source.unet_config["in_channels"], accelerator.process_index, accelerator.num_processes, o.seed
    )
    num_class_embeds = source.unet_config.get("num_class_embeds")
    if num_class_embeds is None:
        stream.label_column = None  # an unconditional model ignores labels
        return TrainingStream(stream, None)
    names = stream.label_names
    if stream.label_column is None or (names is not None and len(names) > num_class_embeds - 1):
        labels = None if stream.label_column is None else torch.arange(len(names))
        check_labels(o, source, labels)  # the message for no labels / too many classes
    return TrainingStream(stream, names)


def load_training_images(
    o: TrainingOptions, source: PipelineSource, accelerator: Accelerator
) -> TrainingData | TrainingStream:
    """The dataset through ddpm_hub.data, checked against a class-conditional model's labels, split into training
    and held-out images. The decoded cache is built by the local main process of each machine while the others wait
    (`Coordinator`); with --no-decoded_cache the main process decodes (and downloads a Hub dataset) first. With
    --streaming: this rank's part of the stream (`open_training_stream`)."""
    if o.data.streaming:
        return open_training_stream(o, source, accelerator)
    channels = source.unet_config["in_channels"]
    if o.data.decoded_cache:
        coordinator = Coordinator(accelerator.is_local_main_process, accelerator.wait_for_everyone)
        decoded = o.data.load(channels=channels, coordinator=coordinator)
    else:
        with accelerator.main_process_first():
            decoded = o.data.load(channels=channels)
    report = decoded.report
    logger.info(
        "Dataset: %d images [%s] %s, %d skipped",
        report.num_images,
        " x ".join(map(str, decoded.images.shape)),
        f"rows read from the decoded cache {decoded.file}" if decoded.file else "in RAM",
        report.num_skipped,
    )
    if report.num_skipped:
        logger.warning("Skipped %d items: %s", report.num_skipped, report.summary())
    labels = check_labels(o, source, decoded.labels)
    label_names = decoded.label_names if labels is not None else None
    if not o.validation_holdout:
        return TrainingData(decoded.images, labels, label_names, None, None, report, file=decoded.file)
    kept, held = holdout_indices(len(decoded.images), o.validation_holdout, o.seed)
    logger.info("Held out %d images for validation; %d train", len(held), len(kept))
    pick = (lambda index: None) if labels is None else (lambda index: labels[index])  # noqa: E731
    holdout = decoded.images[held]  # a copy of the few held-out rows; the training rows stay an index view
    return TrainingData(decoded.images, pick(kept), label_names, holdout, pick(held), report, kept, decoded.file)


def check_labels(o: TrainingOptions, source: PipelineSource, labels: torch.Tensor | None) -> torch.Tensor | None:
    """A class-conditional UNet needs a label per image, each below its null label; an unconditional one none."""
    num_class_embeds = source.unet_config.get("num_class_embeds")
    if num_class_embeds is None:
        return None
    if labels is None:
        raise UsageError(
            f"{o.pipeline} is class-conditional (num_class_embeds={num_class_embeds}: {num_class_embeds - 1} classes "
            f"and the null label), but {o.data.source} has no labels. Give a dataset with labels (builtin:digits, a "
            "folder of class subfolders, a Hub dataset with a ClassLabel column or --class_column), or train an "
            "unconditional configuration."
        )
    largest = int(labels.max())
    if largest > num_class_embeds - 2:
        raise UsageError(
            f"{o.data.source} has labels up to {largest} ({largest + 1} classes), but {o.pipeline} has "
            f"num_class_embeds={num_class_embeds}: room for {num_class_embeds - 1} classes and the null label. Set "
            f"num_class_embeds to {largest + 2} in its unet/config.json."
        )
    return labels


def resolve_training_length(o: TrainingOptions, data: MicroBatches | StreamedMicroBatches) -> TrainingOptions:
    """max_train_steps from num_epochs (in optimizer steps), and num_epochs from max_train_steps (not for a stream,
    whose length is unknown: there --max_train_steps is required)."""
    if data.batches_per_epoch is None:
        return o
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
    pipeline = DDPMHubPipeline.from_pretrained(source.location)  # a Hub repo: HF_TOKEN or the login cache
    scheduler = DDPMHubScheduler.from_config({**pipeline.scheduler.config, **scheduler_overrides(o)})
    if image_size(pipeline.unet.config.sample_size) != image_size(o.data.resolution):
        pipeline.unet.register_to_config(sample_size=sample_size_config(o.data.resolution))
    return DDPMHubPipeline(unet=pipeline.unet, scheduler=scheduler)


def apply_speed_settings(unet: UNet2DModel, o: TrainingOptions, device: torch.device) -> None:
    """TF32 on GPUs; channels_last memory (faster convolutions on GPUs and on this project's CPU, see the README)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = o.allow_tf32
        torch.backends.cudnn.allow_tf32 = o.allow_tf32
    if o.channels_last:
        unet.to(memory_format=torch.channels_last)
    if o.enable_xformers_memory_efficient_attention:
        unet.enable_xformers_memory_efficient_attention()


def make_optimizer(unet: UNet2DModel, o: TrainingOptions, device: torch.device) -> torch.optim.Optimizer:
    """AdamW, fused into one kernel per step (CUDA, and CPU since torch 2.4: 12% of a step on this CPU)."""
    return torch.optim.AdamW(
        unet.parameters(),
        lr=o.learning_rate,
        betas=(o.adam_beta1, o.adam_beta2),
        weight_decay=o.adam_weight_decay,
        eps=o.adam_epsilon,
        fused=device.type in ("cuda", "cpu"),
    )


def make_micro_batches(
    o: TrainingOptions, accelerator: Accelerator, dataset: TrainingData | TrainingStream
) -> MicroBatches | StreamedMicroBatches:
    processes, rank = accelerator.num_processes, accelerator.process_index
    if isinstance(dataset, TrainingStream):
        return StreamedMicroBatches(dataset.stream, o.train_batch_size, processes, rank, o.seed, o.random_flip)
    images = UInt8ImageDataset(dataset.images, o.random_flip, indices=dataset.indices, file=dataset.file)
    return MicroBatches(images, o.train_batch_size, processes, rank, o.seed, labels=dataset.labels)


def build_run(
    o: TrainingOptions, source: PipelineSource, accelerator: Accelerator, dataset: TrainingData | TrainingStream
) -> Run:
    data = make_micro_batches(o, accelerator, dataset)
    o = replace(resolve_training_length(o, data), mixed_precision=accelerator.mixed_precision)
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
    objective = DiffusionObjective(pipeline.scheduler, snr_gamma=o.snr_gamma, channels_last=o.channels_last)
    null_class_label = None
    if data.has_labels and o.class_dropout_prob != 0:  # conditional, trained with label dropout
        null_class_label = unet.config.num_class_embeds - 1
    return Run(
        o, accelerator, model, pipeline.scheduler, objective, optimizer, lr_scheduler, ema, data, dataset.report,
        Path(o.output_dir), dataset.holdout, dataset.holdout_labels, dataset.label_names, null_class_label,
    )  # fmt: skip
