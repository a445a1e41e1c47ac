"""The data of a run: the decoded dataset (or this rank's part of a stream) checked against what the model is
conditioned on, split into training and held-out images, and served as micro-batches (`ddpm_hub.training.batches`).
"""

from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger

from ..data import DataOptions, ImageDatasetReport, UInt8ImageDataset
from ..data.cache import Coordinator
from ..data.streaming import ImageStream, open_stream
from ..errors import UsageError
from ..pipelines.conditioning import TrainingConditioning
from .batches import MicroBatches, StreamedMicroBatches, center_crops, holdout_indices, take_rows
from .options import BatchOptions

logger = get_logger(__name__, log_level="INFO")


@dataclass
class TrainingData:
    """
    The decoded dataset split for training: the images (memory-mapped from the decoded cache, or in RAM) of which
    training reads the rows `indices` (all when None: no copy of the training part is made), and the held-out
    images (a small copy). `columns` are what the model's condition reads per training row (`{"labels": ...}` for a
    class-conditional model; empty for an unconditional one), `holdout_columns` the same for the held-out rows.
    """

    images: torch.Tensor  # uint8 [N x C x H x W]
    columns: dict[str, torch.Tensor]
    label_names: list[str] | None
    holdout: torch.Tensor | None
    holdout_columns: dict[str, torch.Tensor] | None
    report: ImageDatasetReport
    indices: torch.Tensor | None = None
    file: Path | None = None  # the cache file `images` is memory-mapped from
    num_labels: int | None = None  # unnamed integer labels: how many classes they name (the largest id + 1)


@dataclass
class TrainingStream:
    """A streamed dataset (--streaming): this rank's part of it, read as training goes."""

    stream: ImageStream
    label_names: list[str] | None
    report: ImageDatasetReport = field(default_factory=lambda: ImageDatasetReport(num_images=0, num_skipped=0))
    holdout = holdout_columns = columns = None  # a stream has no held-out images, and no columns read upfront
    num_labels = None  # unnamed labels of a stream: not known before it is read (the model's room is checked)


def load_training_data(
    data: DataOptions,
    holdout: int,
    seed: int,
    conditioning: TrainingConditioning,
    channels: int,
    pipeline_name: str,
    accelerator: Accelerator,
) -> TrainingData | TrainingStream:
    """
    The dataset through ddpm_hub.data, checked against the model's conditioning, split into training and `holdout`
    held-out images. The decoded cache is built by the local main process of each machine while the others wait
    (`Coordinator`); with --no-decoded_cache the main process decodes (and downloads a Hub dataset) first. With
    --streaming: this rank's part of the stream (`open_training_stream`).
    """
    if data.streaming:
        return open_training_stream(data, seed, conditioning, channels, pipeline_name, accelerator)
    captions = conditioning.prompts is not None  # a text-to-image model reads each image's captions
    if data.decoded_cache:
        coordinator = Coordinator(accelerator.is_local_main_process, accelerator.wait_for_everyone)
        decoded = data.load(channels=channels, coordinator=coordinator, captions=captions)
    else:
        with accelerator.main_process_first():
            decoded = data.load(channels=channels, captions=captions)
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
    columns = conditioning.columns(decoded, data.source, pipeline_name)
    label_names = decoded.label_names if conditioning.classes is not None else None
    labels = columns.get("labels")
    num_labels = int(labels.max()) + 1 if labels is not None and label_names is None else None
    if not holdout:
        return TrainingData(
            decoded.images, columns, label_names, None, None, report, file=decoded.file, num_labels=num_labels
        )
    kept, held = holdout_indices(len(decoded.images), holdout, seed)
    logger.info("Held out %d images for validation; %d train", len(held), len(kept))
    held_images = center_crops(decoded.images[held], data.random_crop)  # a copy of the few held-out rows
    training = {name: take_rows(column, kept) for name, column in columns.items()}
    held_columns = {name: take_rows(column, held) for name, column in columns.items()}
    return TrainingData(
        decoded.images, training, label_names, held_images, held_columns, report, kept, decoded.file, num_labels
    )


def check_same_count_on_every_machine(num_images: int, accelerator: Accelerator) -> None:
    """
    Every process decoded as many images: ranks read their batches by index into the same dataset. Each machine
    decodes its own copy of the data into its own cache; a machine whose copy has other images would count other
    epochs and steps, and leave the others waiting in a collective until the process group's timeout (30 min on
    gloo). Every rank stops at once instead. (Copies with as many images but other pixels are not detected.)
    """
    counts = accelerator.gather(torch.tensor([num_images], device=accelerator.device)).tolist()
    if len(set(counts)) > 1:
        seen = ", ".join(f"process {rank}: {count}" for rank, count in enumerate(counts))
        raise UsageError(
            f"The processes of this run decoded different numbers of images ({seen}): every machine must read the "
            "same data (the same Hub dataset at the same revision, or the same files under the same path; see "
            "docs/multi-node.md)."
        )


def open_training_stream(
    data: DataOptions, seed: int, conditioning: TrainingConditioning, channels: int, pipeline_name: str, accelerator
) -> TrainingStream:
    """This rank's part of the stream (`ddpm_hub.data.streaming`), its labels checked against the model."""
    captions = conditioning.prompts is not None
    stream = open_stream(data, channels, accelerator.process_index, accelerator.num_processes, seed, captions)
    if conditioning.classes is None:
        stream.label_column = None  # a model without a class embedding ignores labels
    conditioning.check_stream(stream, data.source, pipeline_name)
    return TrainingStream(stream, stream.label_names if conditioning.classes is not None else None)


def make_micro_batches(
    batches: BatchOptions, seed: int, accelerator: Accelerator, dataset: TrainingData | TrainingStream, crop=None
) -> MicroBatches | StreamedMicroBatches:
    processes, rank = accelerator.num_processes, accelerator.process_index
    if isinstance(dataset, TrainingStream):
        return StreamedMicroBatches(
            dataset.stream, batches.train_batch_size, processes, rank, seed, batches.random_flip, crop
        )
    check_same_count_on_every_machine(dataset.report.num_images, accelerator)
    images = UInt8ImageDataset(dataset.images, batches.random_flip, indices=dataset.indices, file=dataset.file)
    return MicroBatches(images, batches.train_batch_size, processes, rank, seed, columns=dataset.columns, crop=crop)
