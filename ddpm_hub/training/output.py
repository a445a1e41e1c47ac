"""What a run writes and tells: the output folder (options, pipeline, grids, summary) and publishing at the end."""

import contextlib
import shutil
from collections.abc import Iterator

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import gather_object

from ..data import ImageDatasetReport
from ..errors import UsageError
from ..loading.configs import count_parameters
from ..run_folder import (
    CHECKPOINTS_DIR,
    OPTIONS_FILE,
    SAMPLES_FILE,
    DatasetRecord,
    RunFolderLock,
    SamplesRecord,
    TrainingSummary,
    write_json,
)
from .batches import StreamedMicroBatches
from .checkpoint_folders import weights_checksum
from .checkpointing import check_finite_weights, save_checkpoint
from .grids import samples_record, write_final_grids
from .options import TrainingOptions, recorded_options
from .run import Run
from .trackers import project_name

logger = get_logger(__name__, log_level="INFO")


@contextlib.contextmanager
def hold_output_dir(o: TrainingOptions, accelerator: Accelerator) -> Iterator[None]:
    """
    --output_dir locked against a second run for the whole of this one (`RunFolderLock`, by the main process). A
    folder another run holds stops every rank before anything is read or written: the ranks exchange the refusal, so
    that none goes on into a collective that the main process never joins.
    """
    lock, refusal = None, None
    if accelerator.is_main_process:
        try:
            lock = RunFolderLock.lock(o.output_dir, "--output_dir")
        except Exception as error:  # noqa: BLE001 - any failure is exchanged first: no rank may wait for this one
            refusal = error
    refused = accelerator.gather(torch.tensor([float(refusal is not None)], device=accelerator.device))
    if bool(refused.any()):
        raise refusal or UsageError(
            f"--output_dir {o.output_dir} could not be locked for this run by its main process (its message says why)."
        )
    stopped = True
    try:
        yield
        stopped = False
    finally:
        if lock is not None:
            lock.release(tidy=stopped)  # a run refused at its start (a checkpoint of another model) changes nothing


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
    accelerator.init_trackers(project_name(o.logging.tracker_project_name, o.output_dir), config=tracker_config)


def finish(run: Run, result) -> None:
    """Final checkpoint, grids, pipeline and summary; the main process writes, every rank samples."""
    accelerator = run.accelerator
    check_finite_weights(run, result.global_step)  # a NaN model is never saved over good state nor published
    checksums = gather_object([weights_checksum(run.unet)])
    if len(set(checksums)) != 1:
        raise RuntimeError(f"The processes ended with different weights (sha256 per rank: {checksums}).")
    if (
        run.options.checkpoints.checkpointing_steps
        and result.last_checkpoint != result.global_step
        and result.global_step > result.first_step
    ):
        save_checkpoint(run, result.global_step)
    if isinstance(run.data, StreamedMicroBatches):
        run.report = stream_report(run)
    write_final_grids(run, result.global_step)
    if accelerator.is_main_process:
        run.saved_pipeline().save_pretrained(run.output_dir)
        write_summary(run, result, checksums)
        logger.info("Wrote the pipeline, %s and the summary to %s", SAMPLES_FILE, run.output_dir)
    accelerator.wait_for_everyone()


def stream_report(run: Run) -> ImageDatasetReport:
    """What the ranks read from their parts of a stream, over the whole run (resumed runs included)."""
    stream = run.data.stream
    counts = gather_object([(stream.images, stream.skipped, stream.skipped_examples)])
    skipped = [tuple(item) for _, _, examples in counts for item in examples]
    return ImageDatasetReport(sum(c[0] for c in counts), sum(c[1] for c in counts), skipped)


def write_summary(run: Run, result, checksums: list[str]) -> None:
    summary = run_summary(run, result, checksums, run.unet)
    summary.samples = SamplesRecord(**samples_record(run, run.options.validation))
    if run.distillation is not None:
        summary.distillation = run.distillation.card_facts(run.options.distillation.distill_from)
    summary.write(run.output_dir)


def run_summary(run, result, checksums: list[str], model: torch.nn.Module) -> TrainingSummary:
    """The record of a run (a DDPM's, or an autoencoder's: `model` is what it trained), without its samples."""
    o, accelerator = run.options, run.accelerator
    steps_done = result.global_step - result.first_step
    device = accelerator.device
    return TrainingSummary(
        steps=result.global_step,
        max_train_steps=o.length.max_train_steps,
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
        parameters=count_parameters(model),
        pipeline=o.model.pipeline,
        dataset=DatasetRecord(
            source=o.data.source,
            num_images=run.report.num_images,
            num_skipped=run.report.num_skipped,
            skipped=[list(item) for item in run.report.skipped[:20]],
        ),
        weights_sha256_per_rank=checksums,
        validation={"held_out_images": o.validation.validation_holdout, **result.validation}
        if result.validation
        else None,
    )


def epochs_done(run: Run, step: int) -> float | None:
    """Passes over the dataset; None for a stream (its length is not known)."""
    return round(step * run.images_per_step / run.data.num_images, 3) if run.data.num_images else None


def publish_output(run: Run) -> str:
    """`ddpm_hub.hub.publish(output_dir)` on the main process; a PublishError says the folder is saved."""
    from .. import hub
    from .checks import hub_repo_id

    o = run.options
    try:
        url = hub.publish(o.output_dir, repo_id=hub_repo_id(o), private=o.hub.hub_private_repo)
    except hub.PublishError as error:
        raise hub.PublishError(
            f"training finished and {o.output_dir} is saved, but publishing failed: {error}"
        ) from None
    logger.info("Published %s to %s", o.output_dir, url)
    return url
