"""What a run writes and tells: the output folder (options, pipeline, grid, summary), sample grids, held-out metrics,
and publishing at the end. Every rank samples its share of a grid, so that no rank idles into a collective timeout.
"""

import shutil

import numpy as np
import torch
from accelerate.logging import get_logger
from accelerate.utils import gather_object
from diffusers import UNet2DModel
from PIL import Image

from ..configs import count_parameters
from ..data import ImageDatasetReport, to_model_range
from ..data.decode import image_size
from ..images import make_grid, to_uint8, upscale
from ..likelihood import bits_per_dim
from ..pipeline import DDPMHubPipeline
from ..run_folder import (
    CHECKPOINTS_DIR,
    GUIDANCE_FILE,
    OPTIONS_FILE,
    SAMPLES_FILE,
    DatasetRecord,
    SamplesRecord,
    TrainingSummary,
    write_json,
)
from .batches import StreamedMicroBatches
from .build import Run
from .checkpoints import weights_checksum
from .options import recorded_options
from .randomness import HOLDOUT, SAMPLING, make_generator
from .run_state import check_finite_weights, save_checkpoint

logger = get_logger(__name__, log_level="INFO")
# The guidance strip of a conditional model: these scales, the noise of images GUIDANCE_SEEDS + class.
GUIDANCE_STRIP_SCALES = (0.0, 1.0, 2.0, 4.0)
GUIDANCE_SEEDS = 100_000


# ----------------------------------------------------------------------------------------------------------------
# The output folder


def start_output(run: Run) -> None:
    """Create output_dir, clear old checkpoints if asked, write the resolved options, start the tracker."""
    accelerator, o = run.accelerator, run.options
    if accelerator.is_main_process:
        run.output_dir.mkdir(parents=True, exist_ok=True)
        if o.overwrite_output_dir:
            shutil.rmtree(run.output_dir / CHECKPOINTS_DIR, ignore_errors=True)
        write_json(run.output_dir / OPTIONS_FILE, recorded_options(o))
    accelerator.wait_for_everyone()
    tracker_config = {
        k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in recorded_options(o).items()
    }
    accelerator.init_trackers("train", config=tracker_config)


def finish(run: Run, result) -> None:
    """Final checkpoint, grid, pipeline and summary; the main process writes, every rank samples."""
    accelerator, o = run.accelerator, run.options
    check_finite_weights(run, result.global_step)  # a NaN model is never saved over good state nor published
    checksums = gather_object([weights_checksum(run.unet)])
    if len(set(checksums)) != 1:
        raise RuntimeError(f"The processes ended with different weights (sha256 per rank: {checksums}).")
    if (
        o.checkpointing_steps
        and result.last_checkpoint != result.global_step
        and result.global_step > result.first_step
    ):
        save_checkpoint(run, result.global_step)
    if isinstance(run.data, StreamedMicroBatches):
        run.report = stream_report(run)
    images = sample_images(run)
    write_guidance_strip(run)
    if accelerator.is_main_process:
        save_pipeline(run)
        write_final_grid(run, images, result.global_step)
        write_summary(run, result, checksums)
        logger.info("Wrote the pipeline, %s and the summary to %s", SAMPLES_FILE, run.output_dir)
    accelerator.wait_for_everyone()


def stream_report(run: Run) -> ImageDatasetReport:
    """What the ranks read from their parts of a stream, over the whole run (resumed runs included)."""
    stream = run.data.stream
    counts = gather_object([(stream.images, stream.skipped, stream.skipped_examples)])
    skipped = [tuple(item) for _, _, examples in counts for item in examples]
    return ImageDatasetReport(sum(c[0] for c in counts), sum(c[1] for c in counts), skipped)


def final_unet(run: Run) -> UNet2DModel:
    return run.ema.model if run.ema is not None else run.unet


def save_pipeline(run: Run) -> None:
    sampling_pipeline(run).save_pretrained(run.output_dir)


def sampling_pipeline(run: Run) -> DDPMHubPipeline:
    """The weights to save (EMA if on) with a separate scheduler: set_timesteps(n) respaces the chain, which the
    training scheduler must keep whole; with the class names and null label of a conditional model."""
    names = run.label_names
    id2label = dict(enumerate(names)) if names else None
    scheduler = type(run.scheduler).from_config(run.scheduler.config)
    return DDPMHubPipeline(final_unet(run), scheduler, id2label=id2label, null_class_label=run.null_class_label)


def grid_labels(run: Run) -> list[int] | None:
    """A conditional model's grid: one row per class, num_validation_images shared out (at least one per class)."""
    if not run.data.has_labels:
        return None
    num_classes = run.unet.config.num_class_embeds - 1
    per_class = max(1, -(-run.options.num_validation_images // num_classes))
    return [label for label in range(num_classes) for _ in range(per_class)]


def write_summary(run: Run, result, checksums: list[str]) -> None:
    o, accelerator = run.options, run.accelerator
    steps_done = result.global_step - result.first_step
    device = accelerator.device
    summary = TrainingSummary(
        steps=result.global_step,
        max_train_steps=o.max_train_steps,
        stopped_by=result.stopped_by,
        resumed_from_step=result.first_step or None,
        images_seen=result.global_step * run.images_per_step,
        epochs=epochs_done(run, result.global_step),
        wall_time_seconds=round(result.wall_time, 1),
        images_per_second=round(steps_done * run.images_per_step / result.step_time, 1) if steps_done else None,
        final_loss=result.losses[-1] if result.losses else None,
        mean_loss_last_100_steps=float(np.mean(result.losses[-100:])) if result.losses else None,
        final_learning_rate=run.lr_scheduler.get_last_lr()[0],
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        num_processes=accelerator.num_processes,
        mixed_precision=accelerator.mixed_precision,
        global_batch_size=run.images_per_step,
        ema=run.ema is not None,
        parameters=count_parameters(run.unet),
        pipeline=o.pipeline,
        dataset=DatasetRecord(
            source=o.data.source,
            num_images=run.report.num_images,
            num_skipped=run.report.num_skipped,
            skipped=[list(item) for item in run.report.skipped[:20]],
        ),
        samples=SamplesRecord(
            num_images=len(grid_labels(run) or range(o.num_validation_images)),
            steps=o.ddpm_num_inference_steps,
            guidance_scale=o.validation_guidance_scale
            if grid_labels(run) and run.null_class_label is not None
            else None,
        ),
        weights_sha256_per_rank=checksums,
        validation={"held_out_images": o.validation_holdout, **result.validation} if result.validation else None,
    )
    summary.write(run.output_dir)


def epochs_done(run: Run, step: int) -> float | None:
    """Passes over the dataset; None for a stream (its length is not known)."""
    return round(step * run.images_per_step / run.data.num_images, 3) if run.data.num_images else None


def publish_output(run: Run) -> str:
    """`ddpm_hub.hub.publish(output_dir)` on the main process; a PublishError says the folder is saved."""
    from .. import hub
    from .checks import hub_repo_id

    o = run.options
    try:
        url = hub.publish(o.output_dir, repo_id=hub_repo_id(o), private=o.hub_private_repo)
    except hub.PublishError as error:
        raise hub.PublishError(
            f"training finished and {o.output_dir} is saved, but publishing failed: {error}"
        ) from None
    logger.info("Published %s to %s", o.output_dir, url)
    return url


# ----------------------------------------------------------------------------------------------------------------
# Sample grids


def sample_images(run: Run, labels: list[int] | None = None, guidance_scale: float = 1.0, first: int = 0):
    """
    uint8 [H x W x C] images, image i from its own generator (seed, SAMPLING, first + i), shared among the ranks: the
    grid's (`grid_labels`, at --validation_guidance_scale) by default, or one per label of `labels` at
    `guidance_scale`.
    """
    o, accelerator = run.options, run.accelerator
    if labels is None and (labels := grid_labels(run)) is not None and run.null_class_label is not None:
        guidance_scale = o.validation_guidance_scale
    unet = final_unet(run)
    was_training = unet.training
    pipeline = sampling_pipeline(run)
    pipeline.unet.eval()
    pipeline.set_progress_bar_config(disable=True)
    count = len(labels) if labels is not None else o.num_validation_images
    with accelerator.split_between_processes(list(range(count))) as mine:
        images = []
        if mine:
            generators = [make_generator(o.seed, SAMPLING, first + i, device=accelerator.device) for i in mine]
            conditioning = {}
            if labels is not None:
                conditioning = {"class_labels": [labels[i] for i in mine], "guidance_scale": guidance_scale}
            with accelerator.autocast():
                output = pipeline(
                    batch_size=len(mine),
                    generator=generators,
                    num_inference_steps=o.ddpm_num_inference_steps,
                    output_type="np",
                    **conditioning,
                )
            images = list(to_uint8(output.images))
    unet.train(was_training)
    return gather_object(images)


def write_guidance_strip(run: Run) -> None:
    """A conditional model with a null label: one row per class, one column per guidance scale, the same noise."""
    if not run.data.has_labels or run.null_class_label is None:
        return
    classes = list(range(run.unet.config.num_class_embeds - 1))
    columns = [sample_images(run, classes, w, first=GUIDANCE_SEEDS) for w in GUIDANCE_STRIP_SCALES]
    if run.accelerator.is_main_process:
        rows = [column[c] for c in classes for column in columns]
        grid_image(rows, run.options.data.resolution, len(GUIDANCE_STRIP_SCALES)).save(run.output_dir / GUIDANCE_FILE)


def grid_image(images: list[np.ndarray], resolution, columns: int | None = None) -> Image.Image:
    """Tiles of [H x W x C] uint8 samples, enlarged so that the longer side of a tile is about 64 pixels."""
    tiles = [Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im) for im in images]
    return upscale(make_grid(tiles, columns=columns), max(1, 64 // max(image_size(resolution))))


def grid_columns(run: Run) -> int | None:
    """One row per class for a conditional model; as square as possible otherwise."""
    labels = grid_labels(run)
    return None if labels is None else labels.count(0)


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
        grid = grid_image(images, run.options.data.resolution, grid_columns(run))
        folder = run.output_dir / run.options.logging_dir / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        grid.save(folder / f"step-{step:07d}.png")
        log_grid(run, grid, step)
    run.accelerator.wait_for_everyone()


def write_final_grid(run: Run, images: list[np.ndarray], step: int) -> None:
    grid = grid_image(images, run.options.data.resolution, grid_columns(run))
    grid.save(run.output_dir / SAMPLES_FILE)
    log_grid(run, grid, step)


# ----------------------------------------------------------------------------------------------------------------
# Held-out metrics


def holdout_metrics(run: Run) -> dict:
    """
    The cheap in-training signals on the held-out images, for the weights that will be saved (EMA if on):
    the objective with noise and timesteps fixed by --seed (comparable across steps), and the sampled estimate of
    the full-chain bits/dim over `validation_bpd_steps` UNet calls per image (ddpm_hub.likelihood, seeded too).
    """
    o, device = run.options, run.accelerator.device
    unet = final_unet(run)
    was_training = unet.training
    unet.eval()
    x_0 = to_model_range(run.holdout).to(device)
    generator = make_generator(o.seed, HOLDOUT, 1)
    timesteps = torch.randint(0, run.scheduler.config.num_train_timesteps, (len(x_0),), generator=generator)
    noise = torch.randn(x_0.shape, generator=generator).to(device)
    labels = None if run.holdout_labels is None else run.holdout_labels.to(device)
    with torch.no_grad():
        loss = run.objective(unet, x_0, timesteps=timesteps.to(device), noise=noise, class_labels=labels)
    pipeline = DDPMHubPipeline(unet=unet, scheduler=run.scheduler)  # bits_per_dim works on its own scheduler copy
    bpd = bits_per_dim(
        pipeline,
        run.holdout,
        num_steps=o.validation_bpd_steps,
        estimator="sampled",
        generator=make_generator(o.seed, HOLDOUT, 2),
        class_labels=run.holdout_labels,  # conditional: the bound on -log p(x | label)
    )
    unet.train(was_training)
    return {
        "loss": loss.mean().item(),
        "bits_per_dim": bpd.mean(),
        "bits_per_dim_label": bpd.label,
        "num_images": len(x_0),
    }


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
