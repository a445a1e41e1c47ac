"""A run and what it holds: the accelerator, the data, the pipeline and its prepared UNet, the conditioning, the
objective, the optimizer and the EMA: one `Run`, built by `build_run` from the options' groups."""

import contextlib
import gc
import logging
import math
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import InitProcessGroupKwargs, ProjectConfiguration
from diffusers import UNet2DModel
from diffusers.optimization import get_scheduler

from ..data import ImageDatasetReport
from ..errors import UsageError
from ..loading.configs import count_parameters
from ..losses import DiffusionObjective
from ..pipelines.conditioning import TrainingConditioning
from ..pipelines.sampling import DEFAULT_SAMPLER_STEPS, default_sampler
from ..pipelines.source import Source
from ..runtime import default_cpu_threads, distributed_without_accelerator
from ..shipped.scheduling_ddpm_hub import DDPMHubScheduler
from .batches import MicroBatches, StreamedMicroBatches
from .data import TrainingData, TrainingStream, make_micro_batches
from .distillation import ConsistencyDistillation, Distillation, make_distillation
from .ema import EMA
from .latents import PosteriorImages, cached_posteriors
from .model import apply_speed_settings, make_optimizer, training_pipeline
from .options import TrainingOptions
from .trackers import log_with

logger = get_logger(__name__, log_level="INFO")


@dataclass
class Run:
    """Everything the training loop touches."""

    options: TrainingOptions
    accelerator: Accelerator
    pipeline: object  # the pipeline being trained (its `unet` is the bare model, its settings the conditioning's)
    model: torch.nn.Module  # the UNet prepared (DDP, autocast, compiled): the one to call in training
    conditioning: TrainingConditioning  # what the model is conditioned on, as this run trains it
    objective: DiffusionObjective
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: EMA | None
    data: MicroBatches | StreamedMicroBatches
    report: ImageDatasetReport
    output_dir: Path
    holdout: torch.Tensor | None = None  # uint8 [N x C x H x W], not trained on
    holdout_columns: dict | None = None  # what the condition reads of the held-out images
    text_encoder: torch.nn.Module | None = None  # --train_text_encoder: the encoder prepared (DDP), trained with it
    text_ema: EMA | None = None  # its EMA
    distillation: Distillation | ConsistencyDistillation | None = None  # --distill_from: the teacher, the stages

    @property
    def trained_text_encoder(self) -> torch.nn.Module | None:
        """The bare text encoder when it is trained (saved, averaged); None when frozen or absent."""
        if self.text_encoder is None:
            return None
        return self.accelerator.unwrap_model(self.text_encoder, keep_torch_compile=False)

    @property
    def unet(self) -> UNet2DModel:
        """The bare UNet: what is saved, checksummed and averaged."""
        return self.accelerator.unwrap_model(self.model, keep_torch_compile=False)

    @property
    def vae(self):
        """A latent model's frozen autoencoder (`training/latents.py`), on the device; None in pixel space."""
        return getattr(self.pipeline, "vae", None)

    @property
    def scheduler(self) -> DDPMHubScheduler:
        """The training scheduler, on the full training chain: never set_timesteps on it."""
        return self.pipeline.scheduler

    @property
    def images_per_step(self) -> int:
        return self.data.global_batch_size * self.options.batches.gradient_accumulation_steps

    def trained_parameters(self) -> list[torch.nn.Parameter]:
        """What the optimizer updates: the UNet's parameters, and the text encoder's when it is trained."""
        modules = [self.model] + ([self.text_encoder] if self.text_encoder is not None else [])
        return [parameter for module in modules for parameter in module.parameters()]

    def final_unet(self) -> UNet2DModel:
        """The weights that are saved and sampled: the EMA when on."""
        return self.ema.model if self.ema is not None else self.unet

    @contextlib.contextmanager
    def final_weights_on_device(self):
        """The saved weights on the accelerator for a while (grids, held-out metrics): EMA kept on the CPU moves."""
        with contextlib.ExitStack() as stack:
            for average in (self.ema, self.text_ema):
                if average is not None:
                    stack.enter_context(average.visiting(self.accelerator.device))
            yield

    def final_components(self) -> dict:
        """The components that are saved and sampled: the UNet, and a trained text encoder (EMA when on)."""
        components = {"unet": self.final_unet()}
        if self.trained_text_encoder is not None:
            components["text_encoder"] = (
                self.text_ema.model if self.text_ema is not None else self.trained_text_encoder
            )
        return components

    def sampling_pipeline(self):
        """
        The saved weights in a pipeline of their own (diffusers' `from_pipe`: the components shared, no copy) with a
        scheduler of its own: set_timesteps(n) respaces the chain, which the training scheduler must keep whole. A
        distilled student's is DDIM on its own timesteps (LCMScheduler for a consistency student), and it samples in
        its calls by default.
        """
        if self.distillation is not None:
            calls = self.distillation.calls_now
            scheduler = self.distillation.sampling_scheduler(self.scheduler.config)
            extra = {"default_num_inference_steps": calls}
        else:
            scheduler, extra = type(self.scheduler).from_config(self.scheduler.config), {}
        pipeline = type(self.pipeline).from_pipe(self.pipeline, scheduler=scheduler, **self.final_components())
        if extra:
            pipeline.register_to_config(**extra)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline

    def saved_pipeline(self):
        """
        The pipeline saved as the run's output: the sampling pipeline, with the fast sampler a trained pixel model
        ships with (`default_sampler`: UniPC, DEFAULT_SAMPLER_STEPS calls by default) where it applies.
        """
        pipeline = self.sampling_pipeline()
        sampler = default_sampler(pipeline) if self.distillation is None else None
        if sampler is not None:
            pipeline = type(pipeline).from_pipe(pipeline, scheduler=sampler)
            pipeline.register_to_config(default_num_inference_steps=DEFAULT_SAMPLER_STEPS)
        w = self.options.validation.validation_guidance_scale
        if self.conditioning.get("image_embeds") is not None and self.conditioning.has_null and w != 1.0:
            # a decoder: DDPMHubUnCLIPImageVariationPipeline's default w is its grids' (DDPMHubPipeline ignores it)
            pipeline.register_to_config(decoder_guidance_scale=w)
        return pipeline

    @property
    def sampling_steps(self) -> int:
        """The steps of the run's grids: --ddpm_num_inference_steps, or a student's calls."""
        if self.distillation is not None:
            return self.distillation.calls_now
        return self.options.validation.ddpm_num_inference_steps


def make_accelerator(o: TrainingOptions) -> Accelerator:
    output_dir = Path(o.output_dir)
    accelerator = Accelerator(
        cpu=distributed_without_accelerator(),
        mixed_precision=o.speed.mixed_precision,
        log_with=log_with(o.logging.report_to),
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(output_dir / o.logging.logging_dir)
        ),
        step_scheduler_with_optimizer=False,  # we step the LR schedule once per optimizer step, whatever the world
        dynamo_backend="inductor" if o.speed.compile else None,
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=o.ddp_timeout))],
    )
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise UsageError("fp16 mixed precision needs a GPU; on a CPU use --mixed_precision bf16 or no.")
    if accelerator.device.type == "cpu":  # --cpu_threads, else the physical cores this process may use
        torch.set_num_threads(o.speed.cpu_threads or default_cpu_threads())
        torch.set_flush_denormal(o.speed.flush_denormal)  # floats below 1e-38 as 0: no slow denormal arithmetic
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


def resolve_training_length(o: TrainingOptions, data: MicroBatches | StreamedMicroBatches) -> TrainingOptions:
    """max_train_steps from num_epochs (in optimizer steps), and num_epochs from max_train_steps (not for a stream,
    whose length is unknown: there --max_train_steps is required)."""
    if data.batches_per_epoch is None:
        return o
    micro_batches_per_step = o.batches.gradient_accumulation_steps
    if o.length.max_train_steps is None:
        steps = max(1, o.length.num_epochs * data.batches_per_epoch // micro_batches_per_step)
        return o.changed("length", max_train_steps=steps)
    epochs = math.ceil(o.length.max_train_steps * micro_batches_per_step / data.batches_per_epoch)
    return o.changed("length", num_epochs=epochs)


def cache_posteriors(o: TrainingOptions, vae, dataset, data, accelerator: Accelerator) -> None:
    """
    A latent model on a decoded cache: each image's posterior encoded once per machine and kept beside the pixels
    (`training/latents.py`), so a step draws its latents without the encoder. A stream, a dataset in RAM
    (--no-decoded_cache) and --random_crop encode each micro-batch instead.
    """
    if not isinstance(data, MicroBatches) or dataset.file is None or o.data.random_crop is not None:
        return
    posteriors = cached_posteriors(vae, dataset.images, dataset.file, accelerator)
    data.images = PosteriorImages(posteriors, o.batches.random_flip, dataset.indices)


def build_run(
    o: TrainingOptions, source: Source, accelerator: Accelerator, dataset: TrainingData | TrainingStream
) -> Run:
    data = make_micro_batches(o.batches, o.seed, accelerator, dataset, o.data.random_crop)
    o = replace(resolve_training_length(o, data), speed=replace(o.speed, mixed_precision=accelerator.mixed_precision))
    pipeline = training_pipeline(o, source)
    conditioning = pipeline.conditioning.trained(dataset, o.conditioning)
    if conditioning.low_res is not None:  # noise conditioning augmentation follows the training chain
        conditioning.low_res.alphas_cumprod = pipeline.scheduler.alphas_cumprod
    pipeline.register_to_config(**conditioning.settings())  # class names and the null label, saved with it
    unet = pipeline.unet.train()
    text_encoder = pipeline.text_encoder if o.conditioning.train_text_encoder else None
    apply_speed_settings(unet, o.speed, accelerator.device)
    if text_encoder is not None and o.speed.gradient_checkpointing:
        text_encoder.gradient_checkpointing_enable()
    scheduler = pipeline.scheduler.config
    logger.info(
        "UNet: %s parameters; %s betas, T=%d, %s prediction, %s variance",
        f"{count_parameters(unet):,}",
        scheduler.beta_schedule,
        scheduler.num_train_timesteps,
        scheduler.prediction_type,
        scheduler.variance_type,
    )
    if getattr(pipeline, "vae", None) is not None:  # frozen: encodes each micro-batch, decodes the grids
        pipeline.vae.to(accelerator.device).requires_grad_(False).eval()
        logger.info(
            "Autoencoder: %s, %s parameters, frozen; latents %s",
            type(pipeline.vae).__name__,
            f"{count_parameters(pipeline.vae):,}",
            "x".join(map(str, pipeline.latent_shape(1)[1:])),
        )
        cache_posteriors(o, pipeline.vae, dataset, data, accelerator)
    if getattr(pipeline, "text_encoder", None) is not None:
        pipeline.text_encoder.to(accelerator.device)
        logger.info(
            "Text encoder: %s, %s parameters, %s",
            type(pipeline.text_encoder).__name__,
            f"{count_parameters(pipeline.text_encoder):,}",
            "trained with the UNet" if text_encoder is not None else "frozen",
        )
    if getattr(pipeline, "image_encoder", None) is not None:  # a decoder's: embeds each micro-batch, frozen
        pipeline.image_encoder.to(accelerator.device)
        logger.info(
            "Image encoder: %s, %s parameters, frozen; embeddings of width %d",
            type(pipeline.image_encoder).__name__,
            f"{count_parameters(pipeline.image_encoder):,}",
            conditioning.image_embeds.embed_dim,
        )
    parameters = [*unet.parameters(), *(text_encoder.parameters() if text_encoder is not None else [])]
    optimizer = make_optimizer(parameters, o.optimizer, accelerator.device)
    lr_scheduler = get_scheduler(
        o.optimizer.lr_scheduler,
        optimizer,
        num_warmup_steps=o.optimizer.lr_warmup_steps,
        num_training_steps=o.length.max_train_steps,
    )
    ema = EMA(unet, o.ema.ema_max_decay, o.ema.ema_inv_gamma, o.ema.ema_power) if o.ema.use_ema else None
    text_ema = None
    if text_encoder is not None:
        text_ema = EMA(text_encoder, o.ema.ema_max_decay, o.ema.ema_inv_gamma, o.ema.ema_power) if ema else None
        model, text_encoder, optimizer, lr_scheduler = accelerator.prepare(unet, text_encoder, optimizer, lr_scheduler)
        conditioning.prompts.text_encoder = text_encoder  # training batches go through the prepared encoder
    else:
        model, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    for average in (ema, text_ema):
        if average is not None:  # --offload_ema: the averages stay in CPU memory
            average.model.to("cpu" if o.ema.offload_ema else accelerator.device)
    objective = DiffusionObjective(
        pipeline.scheduler, snr_gamma=o.model.snr_gamma, channels_last=o.speed.channels_last
    )
    distillation = None
    if o.distillation.distill_from is not None:  # the teacher: the given model as loaded, before any step
        distillation = make_distillation(
            o.distillation, unet, source, pipeline.scheduler, o.speed.channels_last, accelerator.autocast
        ).to(accelerator.device)
        objective = distillation.objective()
    return Run(
        o, accelerator, pipeline, model, conditioning, objective, optimizer, lr_scheduler, ema, data, dataset.report,
        Path(o.output_dir), dataset.holdout, dataset.holdout_columns, text_encoder, text_ema, distillation,
    )  # fmt: skip
