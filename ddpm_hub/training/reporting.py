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
from ..data import to_model_range
from ..images import make_grid, to_uint8, upscale
from ..likelihood import bits_per_dim
from ..pipeline import DDPMHubPipeline
from ..run_folder import (
    CHECKPOINTS_DIR,
    OPTIONS_FILE,
    SAMPLES_FILE,
    DatasetRecord,
    SamplesRecord,
    TrainingSummary,
    write_json,
)
from .build import Run
from .checkpoints import weights_checksum
from .options import recorded_options
from .randomness import HOLDOUT, SAMPLING, make_generator
from .run_state import check_finite_weights, save_checkpoint

logger = get_logger(__name__, log_level="INFO")


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
    images = sample_images(run)
    if accelerator.is_main_process:
        save_pipeline(run)
        write_final_grid(run, images, result.global_step)
        write_summary(run, result, checksums)
        logger.info("Wrote the pipeline, %s and the summary to %s", SAMPLES_FILE, run.output_dir)
    accelerator.wait_for_everyone()
    accelerator.end_training()


def final_unet(run: Run) -> UNet2DModel:
    return run.ema.model if run.ema is not None else run.unet


def save_pipeline(run: Run) -> None:
    scheduler = type(run.scheduler).from_config(run.scheduler.config)
    DDPMHubPipeline(unet=final_unet(run), scheduler=scheduler).save_pretrained(run.output_dir)


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
        epochs=round(result.global_step * run.images_per_step / len(run.data.images), 3),
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
        samples=SamplesRecord(num_images=o.num_validation_images, steps=o.ddpm_num_inference_steps),
        weights_sha256_per_rank=checksums,
        validation={"held_out_images": o.validation_holdout, **result.validation} if result.validation else None,
    )
    summary.write(run.output_dir)


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
        grid = grid_image(images, run.options.data.resolution)
        folder = run.output_dir / run.options.logging_dir / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        grid.save(folder / f"step-{step:07d}.png")
        log_grid(run, grid, step)
    run.accelerator.wait_for_everyone()


def write_final_grid(run: Run, images: list[np.ndarray], step: int) -> None:
    grid = grid_image(images, run.options.data.resolution)
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
    with torch.no_grad():
        loss = run.objective(unet, x_0, timesteps=timesteps.to(device), noise=noise).mean().item()
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
