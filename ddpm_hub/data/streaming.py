"""Streaming: a Hub dataset (or local parquet / webdataset shards) read as a `datasets.IterableDataset`, without a
download or a decoded cache, for datasets that do not fit on a disk (`--streaming`).

Each process reads its own part: `datasets.distributed.split_dataset_by_node` gives it whole shards when the number of
shards is a multiple of the number of processes, else every `world_size`-th example; the parts are disjoint. Images
are decoded one at a time as they arrive (bad rows skipped and counted, as everywhere), epoch after epoch: when a
process's part ends, its next epoch starts (`set_epoch`), so no process ever waits for another.

Order and resume (`ImageStream.state_dict`, saved per process in every checkpoint):

- `shuffle_buffer_size=0` (the default): the stream's own order, every epoch. The state is the position of the next
  example in the process's part (datasets' `IterableDataset.state_dict()`); a resumed run reads exactly the examples
  an uninterrupted one would have read, so its weights are bit-identical (where the source's own order is fixed:
  local shards, or a Hub dataset at a fixed revision).
- `shuffle_buffer_size=B`: every epoch the shards are shuffled and examples pass through a buffer of B, both drawn
  from (seed, epoch) (`IterableDataset.shuffle` + `set_epoch`). The buffer's content is not part of the state: on
  resume, the examples that were in the buffer are not read again in that epoch (at most B per process), no example
  is read twice, and the order from then on differs, so the weights are not those of an uninterrupted run. The
  following epochs read every example again.
"""

import logging
from collections.abc import Iterator

import numpy as np

from ..errors import UsageError
from .decode import SkipImage, caption_list, decode_hub_value, image_to_array, strict_truncation_check
from .hub_datasets import (
    hub_version,
    raw_image_rows,
    resolve_caption_column,
    resolve_class_column,
    resolve_image_column,
)
from .parallel import DecodeSettings
from .sources import BUILTIN_DATASETS, DecodedImages, ImageDatasetReport, check_and_warn

logger = logging.getLogger(__name__)

MAX_SKIPS_KEPT = 20  # the skipped examples a stream remembers (it counts them all)
MAX_SKIPS_LOGGED = 5  # each logged as it happens; then one line per epoch


def check_streaming(data) -> None:
    """--streaming needs a source that datasets streams: a Hub name or a path with parquet / webdataset shards."""
    if data.train_data_dir is not None or data.resolved().dataset_name in BUILTIN_DATASETS:
        what = f"--train_data_dir {data.train_data_dir}" if data.train_data_dir else data.resolved().dataset_name
        raise UsageError(
            f"--streaming applies to Hub datasets and datasets.load_dataset paths (parquet or webdataset shards), not "
            f"to {what}: decode it into the decoded cache instead (drop --streaming)."
        )


class ImageStream:
    """
    One process's part of a streamed dataset, decoded image by image, epoch after epoch (see the module docstring).
    Iterating yields `(uint8 [C x H x W], class id or None, captions or None)`; an example without a caption is
    skipped when captions are read (`caption_column`). `state_dict()` after the last image taken is where a resumed
    stream continues.
    """

    def __init__(
        self,
        dataset,
        column: str,
        label_column: str | None,
        label_names,
        settings: DecodeSettings,
        mode,
        caption_column: str | None = None,
    ):
        self.dataset, self.column, self.label_column, self.label_names = dataset, column, label_column, label_names
        self.settings, self.mode, self.caption_column = settings, mode, caption_column
        # Labels are ids 0 .. num_labels - 1: the class names' count; a model narrows it to its classes
        # (`TrainingClassCondition.check_stream`). A row with another label is skipped and counted, like a bad image.
        self.num_labels = len(label_names) if label_names is not None else None
        self.epoch, self.images_in_epoch = 0, 0
        self.images, self.skipped = 0, 0  # over the whole run (restored on resume)
        self.skipped_examples: list[tuple[str, str]] = []

    def __iter__(self) -> Iterator[tuple[np.ndarray, int | None, list[str] | None]]:
        while True:
            self.dataset.set_epoch(self.epoch)
            yield from self._one_epoch()
            if self.skipped:
                logger.warning("Stream epoch %d ended; %d example(s) skipped so far.", self.epoch, self.skipped)
            if self.images_in_epoch == 0:
                raise UsageError(
                    f"this process's part of the stream has no usable image ({self.skipped} skipped, e.g. "
                    f"{self.skipped_examples[:3]}); check the dataset, or use fewer processes than it has shards."
                )
            self.epoch, self.images_in_epoch = self.epoch + 1, 0

    def _one_epoch(self) -> Iterator[tuple[np.ndarray, int | None, list[str] | None]]:
        import datasets

        decoder = datasets.Image(mode=self.mode)
        for row in self.dataset:
            value = row[self.column]
            label = row[self.label_column] if self.label_column else None
            try:
                self.check_label(label)
                captions = caption_list(row[self.caption_column]) if self.caption_column else None
                with strict_truncation_check():
                    pixels = image_to_array(decode_hub_value(decoder, value), *self._settings())
            except SkipImage as reason:
                self._skip(value, str(reason))
                continue
            self.images, self.images_in_epoch = self.images + 1, self.images_in_epoch + 1
            yield pixels, label, captions

    def check_label(self, label) -> None:
        """A decoded dataset's label check, per row: an id of one of the classes (datasets' "no label" is -1)."""
        if self.label_column is None:
            return
        limit = self.num_labels
        is_id = isinstance(label, int) and not isinstance(label, bool) and label >= 0
        if not is_id or (limit is not None and label >= limit):
            classes = f"0..{limit - 1}" if limit is not None else "an id >= 0"
            raise SkipImage(f"label {label!r} in column {self.label_column!r} is not one of the classes ({classes})")

    def _settings(self) -> tuple:
        return self.settings.resolution, self.settings.channels, self.settings.center_crop

    def _skip(self, value, reason: str) -> None:
        self.skipped += 1
        if len(self.skipped_examples) < MAX_SKIPS_KEPT:
            name = value.get("path") if isinstance(value, dict) else None
            self.skipped_examples.append((f"epoch {self.epoch}" + (f" ({name})" if name else ""), reason))
        if self.skipped <= MAX_SKIPS_LOGGED:
            logger.warning("Skipped a streamed example (%d so far): %s", self.skipped, reason)

    def take(self, count: int) -> DecodedImages:
        """The first `count` usable images of the current epoch (fewer if it ends first), in RAM: for evaluation."""
        import torch

        pixels, labels, captions = [], [], []
        for image, label, texts in self._one_epoch():
            pixels.append(image)
            labels.append(label)
            captions.append(texts)
            if len(pixels) == count:
                break
        images = torch.from_numpy(np.stack(pixels)) if pixels else torch.empty((0, *self.settings.shape))
        report = ImageDatasetReport(len(pixels), self.skipped, list(self.skipped_examples))
        ids = torch.as_tensor(labels, dtype=torch.int64) if pixels and labels[0] is not None else None
        names = self.label_names if ids is not None else None
        return DecodedImages(
            images.to(torch.uint8), ids, names, report, None, captions if self.caption_column else None
        )

    def state_dict(self) -> dict:
        """JSON-able: datasets' position in this process's part, and the counts."""
        return {
            "epoch": self.epoch,
            "images_in_epoch": self.images_in_epoch,
            "images": self.images,
            "skipped": self.skipped,
            "skipped_examples": [list(item) for item in self.skipped_examples],
            "stream": self.dataset.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.images_in_epoch = state["epoch"], state["images_in_epoch"]
        self.images, self.skipped = state["images"], state["skipped"]
        self.skipped_examples = [tuple(item) for item in state["skipped_examples"]]
        self.dataset.set_epoch(self.epoch)
        self.dataset.load_state_dict(state["stream"])


def open_stream(
    data, channels: int, rank: int = 0, world_size: int = 1, seed: int = 0, captions: bool = False
) -> ImageStream:
    """Process `rank`'s part of the stream `data` (`DataOptions` with --streaming) names, with captions if asked."""
    import datasets
    from datasets.distributed import split_dataset_by_node

    check_streaming(data)
    resolved = data.resolved()
    name, split = resolved.dataset_name, data.dataset_split
    config_name, revision = data.dataset_config_name, data.dataset_revision
    try:
        dataset = datasets.load_dataset(
            name, config_name, split=split, streaming=True, cache_dir=data.cache_dir, revision=revision
        )
    except Exception as exc:  # ConnectionError offline, DatasetNotFoundError, unknown split, ...
        raise UsageError(
            f"Could not stream dataset {name!r} (split {split!r}{hub_version(config_name, revision)}) with "
            "datasets.load_dataset(streaming=True): "
            f"{type(exc).__name__}: {exc}. Check the name, the split and the network."
        ) from exc
    if dataset.features is None:
        raise UsageError(
            f"The stream of {name!r} does not declare its features (columns and types); a streamed dataset needs "
            "them to find its image column. Give a dataset with parquet or webdataset shards."
        )
    column = resolve_image_column(dataset, data.image_column, name)
    label_column, label_names = resolve_class_column(dataset, data.class_column, name)
    text_column = resolve_caption_column(dataset, data.caption_column_for(captions), name)
    feature = dataset.features[column]
    raw = raw_image_rows(dataset, column, label_column, name, text_column)
    if data.shuffle_buffer_size:
        raw = raw.shuffle(seed=seed, buffer_size=data.shuffle_buffer_size)  # the same seed on every process
    part = split_dataset_by_node(raw, rank=rank, world_size=world_size)
    settings = DecodeSettings(resolved.resolution, channels, data.center_crop)
    mode = feature.mode if isinstance(feature, datasets.Image) else None
    logger.info(
        "Streaming %s (split %s): %d shard(s), process %d of %d reads %s",
        name,
        split,
        raw.num_shards,
        rank,
        world_size,
        "whole shards" if raw.num_shards % world_size == 0 else f"every {world_size}-th example",
    )
    return ImageStream(part, column, label_column, label_names, settings, mode, text_column)


def load_streamed(data, channels: int, captions: bool = False) -> DecodedImages:
    """`--streaming --max_images N` outside training (`ddpm-hub eval`): the first N usable images, in RAM."""
    if data.max_images is None:
        raise UsageError("--streaming outside training needs --max_images N: the first N usable images are read.")
    decoded = open_stream(data, channels, captions=captions).take(data.max_images)
    check_and_warn(f"the stream of {data.resolved().dataset_name!r}", decoded.report, stacklevel=2)
    return decoded
