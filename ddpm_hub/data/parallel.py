"""Decoding a source's images in parallel: items read in chunks, each chunk decoded by one of a pool of worker
processes, the results taken back in item order, so that the images, their labels and the skip list come out exactly
as one process decoding them one after the other would give them (and `max_images` stops at the same image).

Workers are forked where the platform allows it (they inherit the source: no copy of a folder listing or a Hub
table goes through a pipe, only the decoded pixels come back); they run numpy and PIL only, no torch.
"""

import math
import multiprocessing
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .decode import (
    Resolution,
    SkipImage,
    caption_list,
    decode_hub_value,
    image_size,
    image_to_array,
    open_file,
    strict_truncation_check,
)

CHUNK_BYTES = 4 * 2**20  # decoded pixels per chunk: what one worker hands back at a time
MAX_CHUNK_ITEMS = 256


@dataclass(frozen=True)
class DecodeSettings:
    """What the decoded pixels depend on, besides the source."""

    resolution: Resolution
    channels: int
    center_crop: bool

    @property
    def shape(self) -> tuple[int, int, int]:
        """One image: (C, H, W)."""
        return (self.channels, *image_size(self.resolution))

    @property
    def image_bytes(self) -> int:
        return math.prod(self.shape)


# (id for the report, open the image, class id or None, captions as the source gives them or None)
Item = tuple[str, Callable[[], Image.Image], int | None, object]


class FolderItems:
    """
    The image files of a folder: item i is `paths[i]` (relative, `/`-separated) under `root`, with `labels[i]` and
    `captions[i]` (from metadata.jsonl; None when captions are not read).
    """

    def __init__(self, root: str, paths: list[str], labels: list[int | None], resolution: Resolution, captions=None):
        self.root, self.paths, self.labels, self.resolution = root, paths, labels, resolution
        self.captions = captions

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, start: int, stop: int) -> Iterator[Item]:
        for index in range(start, stop):
            path = os.path.join(self.root, self.paths[index])
            caption = self.captions[index] if self.captions is not None else None
            yield self.paths[index], lambda path=path: open_file(path, self.resolution), self.labels[index], caption


class HubItems:
    """Rows of a `datasets.Dataset` whose image column is read raw (`{"bytes", "path"}`) and decoded row by row."""

    def __init__(
        self, raw, column: str, label_column: str | None, mode: str | None, caption_column: str | None = None
    ):
        self.raw, self.column, self.label_column, self.mode = raw, column, label_column, mode
        self.caption_column = caption_column

    def __len__(self) -> int:
        return len(self.raw)

    def read(self, start: int, stop: int) -> Iterator[Item]:
        import datasets

        decoder = datasets.Image(mode=self.mode)
        batch = self.raw[start:stop]
        values = batch[self.column]
        labels = batch[self.label_column] if self.label_column else [None] * len(values)
        captions = batch[self.caption_column] if self.caption_column else [None] * len(values)
        for offset, (value, label, caption) in enumerate(zip(values, labels, captions, strict=True)):
            name = value.get("path") if isinstance(value, dict) else None
            item_id = f"row {start + offset}" + (f" ({name})" if name else "")
            yield item_id, lambda value=value: decode_hub_value(decoder, value), label, caption


@dataclass
class DecodedChunk:
    """Items [start, stop) decoded: the usable images in order, their labels and captions, and every item's outcome
    in order."""

    images: np.ndarray  # uint8 [k x C x H x W]
    labels: list[int | None]
    captions: list[list[str] | None]
    outcomes: list[tuple[str, str | None]]  # (item id, why it was skipped, or None for a usable image)


def decode_range(items, start: int, stop: int, settings: DecodeSettings) -> DecodedChunk:
    """Decode items [start, stop) of `items` (`FolderItems` or `HubItems`); bad items are recorded, not raised."""
    pixels, labels, captions, outcomes = [], [], [], []
    read_captions = getattr(items, "captions", None) is not None or getattr(items, "caption_column", None) is not None
    with strict_truncation_check():
        for item_id, load, label, caption in items.read(start, stop):
            try:
                texts = caption_list(caption) if read_captions else None
                pixels.append(image_to_array(load(), settings.resolution, settings.channels, settings.center_crop))
            except SkipImage as reason:
                outcomes.append((item_id, str(reason)))
                continue
            labels.append(label)
            captions.append(texts)
            outcomes.append((item_id, None))
    images = np.stack(pixels) if pixels else np.empty((0, *settings.shape), dtype=np.uint8)
    return DecodedChunk(images, labels, captions, outcomes)


@dataclass
class DecodeResult:
    """What `decode_all` took: `count` images (written in order), their labels, the skipped items in order."""

    count: int = 0
    labels: list[int | None] = field(default_factory=list)
    captions: list[list[str] | None] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def decode_all(
    items,
    capacity: int,
    settings: DecodeSettings,
    num_workers: int,
    write: Callable[[np.ndarray], None],
    progress: bool = False,
) -> DecodeResult:
    """
    Decode `items` in order until `capacity` usable images were written (`write` gets uint8 [k x C x H x W] blocks
    in item order), with `num_workers` processes (1: in this process). Items after the last image taken are not
    reported, as when decoding serially.
    """
    result = DecodeResult()
    bar = _progress_bar(len(items), progress)
    chunks = _chunks(items, settings, num_workers)
    try:
        for chunk in chunks:
            if _take(chunk, capacity, result, write):
                break
            bar.update(len(chunk.outcomes))
    finally:
        chunks.close()  # stops the worker pool at once when max_images was reached early
        bar.close()
    return result


def _take(chunk: DecodedChunk, capacity: int, result: DecodeResult, write: Callable[[np.ndarray], None]) -> bool:
    """Take a chunk's outcomes in order until `capacity` images; True when it is reached."""
    taken = 0
    for item_id, reason in chunk.outcomes:
        if result.count + taken == capacity:
            break
        if reason is None:
            taken += 1
        else:
            result.skipped.append((item_id, reason))
    if taken:
        write(chunk.images[:taken])
        result.labels += chunk.labels[:taken]
        result.captions += chunk.captions[:taken]
        result.count += taken
    return result.count == capacity


def chunk_size(settings: DecodeSettings) -> int:
    return max(1, min(MAX_CHUNK_ITEMS, CHUNK_BYTES // settings.image_bytes))


def _chunks(items, settings: DecodeSettings, num_workers: int) -> Iterator[DecodedChunk]:
    size = chunk_size(settings)
    ranges = [(start, min(start + size, len(items))) for start in range(0, len(items), size)]
    workers = min(num_workers, len(ranges))
    if workers <= 1:
        yield from (decode_range(items, start, stop, settings) for start, stop in ranges)
        return
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    with context.Pool(workers, initializer=_set_worker_source, initargs=(items, settings)) as pool:
        yield from pool.imap(_decode_in_worker, ranges)


_WORKER_SOURCE = None


def _set_worker_source(items, settings: DecodeSettings) -> None:
    global _WORKER_SOURCE
    _WORKER_SOURCE = (items, settings)


def _decode_in_worker(bounds: tuple[int, int]) -> DecodedChunk:
    items, settings = _WORKER_SOURCE
    return decode_range(items, *bounds, settings)


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="decode", unit="image", mininterval=2.0, disable=not enabled)


def default_workers() -> int:
    """The physical cores of this machine (decoding is CPU-bound; hyper-threads add little)."""
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1
