"""The order of the data: micro-batch m of the run for one rank, a function of (seed, m, rank) only; or, for a
streamed dataset, the next images of the rank's part of the stream (`StreamedMicroBatches`)."""

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data.decode import image_size
from ..data.tensors import to_training_batch
from ..errors import UsageError
from .randomness import CROP, FLIP, HOLDOUT, SHUFFLE, make_generator

STREAM_STATE = "stream_state_rank_{rank}.json"


class MicroBatches(Dataset):
    """
    Micro-batch `m` of the run as one rank sees it: `(m, x_0, values)`, x_0 float32 `[train_batch_size x C x H x W]`
    in [-1, 1], `values` the rows of each per-image column the model's condition reads (`{"labels": int64
    [train_batch_size]}` for a class-conditional model, `{}` for an unconditional one).

    The run walks micro-batches m = 0, 1, 2, ...; micro-batch m is batch b = m % batches_per_epoch of epoch
    e = m // batches_per_epoch. Epoch e visits the images in the order `randperm(N)` drawn from (seed, e); its batch b
    is the global batch of `train_batch_size x num_processes` images at positions [b * G, (b + 1) * G) of that order,
    of which rank r takes the r-th slice. Incomplete batches at the end of an epoch are dropped. Flips are drawn from
    (seed, m, rank). Nothing depends on what came before, so a resumed run starts at any m directly.

    Args:
        images: the dataset of `ddpm_hub.data`: `len(images)` and `images.get_batch(indices, generator)`, a float
            batch with its flips drawn from the generator.
        columns: per-image values `[N x ...]` by name, what the model's condition reads
        (`ddpm_hub.pipelines.conditioning`).
    """

    def __init__(
        self, images, train_batch_size: int, num_processes: int, rank: int, seed: int, columns=None, crop=None
    ):
        self.images, self.batch_size, self.rank, self.seed = images, train_batch_size, rank, seed
        self.columns, self.crop = columns or {}, crop
        self.global_batch_size = train_batch_size * num_processes
        self.batches_per_epoch = len(images) // self.global_batch_size
        if self.batches_per_epoch == 0:
            raise UsageError(
                f"The dataset has {len(images)} images, fewer than one global batch of {self.global_batch_size} "
                f"(train_batch_size {train_batch_size} x {num_processes} processes); lower --train_batch_size or "
                "give more images."
            )
        self._epoch, self._order = None, None

    def position(self, m: int) -> tuple[int, int]:
        """(epoch, batch in epoch) of micro-batch m."""
        return divmod(m, self.batches_per_epoch)

    def order(self, epoch: int) -> torch.Tensor:
        """The permutation of the dataset that epoch `epoch` follows (the same on every rank)."""
        if self._epoch != epoch:
            generator = make_generator(self.seed, SHUFFLE, epoch)
            self._epoch, self._order = epoch, torch.randperm(len(self.images), generator=generator)
        return self._order

    def indices(self, m: int) -> list[int]:
        epoch, batch = self.position(m)
        start = batch * self.global_batch_size + self.rank * self.batch_size
        return self.order(epoch)[start : start + self.batch_size].tolist()

    def __getitem__(self, m: int) -> tuple[int, torch.Tensor, dict]:
        generator = make_generator(self.seed, FLIP, m, self.rank)
        indices = self.indices(m)
        values = {name: take_rows(column, indices) for name, column in self.columns.items()}
        x_0 = self.images.get_batch(indices, generator)
        return m, random_crops(x_0, self.crop, make_generator(self.seed, CROP, m, self.rank)), values

    def __len__(self) -> int:  # the run is as long as the sampler says; one epoch is the natural length
        return self.batches_per_epoch

    @property
    def num_images(self) -> int:
        return len(self.images)

    def loader(self, first_micro_batch: int, end: int, num_workers: int, pin_memory: bool) -> DataLoader:
        return make_loader(self, first_micro_batch, end, num_workers, pin_memory)

    def write_state(self, folder: Path, rank: int) -> None:
        """Nothing to save: the position is the micro-batch index, in the training state."""

    def read_state(self, folder: Path, rank: int, num_processes: int) -> None:
        """Nothing to read back (see `write_state`)."""


class StreamedMicroBatches:
    """
    Micro-batch m of a streamed run as one rank sees it: `(m, x_0, values)`, the next `train_batch_size` usable
    images of the rank's part of the stream (`ddpm_hub.data.streaming.ImageStream`), flipped from (seed, m, rank) as
    `MicroBatches` does. The position is the stream's state, which every checkpoint saves per rank (`write_state`):
    what a resumed run reproduces is described in `ddpm_hub.data.streaming`.
    """

    batches_per_epoch = None  # a stream's length is not known: the run is --max_train_steps long
    num_images = 0  # what the training state records for a stream (a decoded dataset records its size)

    def __init__(
        self, stream, train_batch_size: int, num_processes: int, rank: int, seed: int, random_flip: bool, crop=None
    ):
        self.stream, self.batch_size, self.rank, self.seed = stream, train_batch_size, rank, seed
        self.random_flip, self.crop = random_flip, crop
        self.global_batch_size = train_batch_size * num_processes
        self.num_processes = num_processes

    def position(self, m: int) -> tuple[int, int]:
        """(epoch of this rank's stream, micro-batches into it), as far as the stream has been read."""
        return self.stream.epoch, self.stream.images_in_epoch // self.batch_size

    def loader(self, first_micro_batch: int, end: int, num_workers: int = 0, pin_memory: bool = False):
        """Micro-batches `first_micro_batch` .. `end - 1`, read in this process (no worker reads ahead)."""
        images = iter(self.stream)
        for m in range(first_micro_batch, end):
            pixels, labels, captions = zip(*(next(images) for _ in range(self.batch_size)))
            x_0 = to_training_batch(torch.from_numpy(np.stack(pixels)), self.random_flip, self._flips(m))
            x_0 = random_crops(x_0, self.crop, make_generator(self.seed, CROP, m, self.rank))
            values = {}
            if self.stream.label_column is not None:
                values["labels"] = torch.as_tensor(labels, dtype=torch.int64)
            if self.stream.caption_column is not None:
                values["captions"] = list(captions)
            yield m, x_0, values

    def _flips(self, m: int) -> torch.Generator:
        return make_generator(self.seed, FLIP, m, self.rank)

    def write_state(self, folder: Path, rank: int) -> None:
        state = {"num_processes": self.num_processes, **self.stream.state_dict()}
        (folder / STREAM_STATE.format(rank=rank)).write_text(json.dumps(state) + "\n")

    def read_state(self, folder: Path, rank: int, num_processes: int) -> None:
        path = folder / STREAM_STATE.format(rank=rank)
        if not path.is_file():
            raise UsageError(
                f"Cannot resume the stream from {folder}: it has no {path.name}, so it was saved by a run without "
                f"--streaming or with fewer processes than this one ({num_processes}). Resume with the same settings."
            )
        state = json.loads(path.read_text())
        if state["num_processes"] != num_processes:
            raise UsageError(
                f"Cannot resume the stream from {folder}: it was read by {state['num_processes']} processes, this run "
                f"has {num_processes}; each process's part of the stream depends on their number. Use the same."
            )
        self.stream.load_state_dict(state)


def random_crops(images: torch.Tensor, size, generator: torch.Generator) -> torch.Tensor:
    """
    A crop of `size` (H x W) of each image `[B x C x H' x W']`, its top-left corner uniform over the image, drawn from
    `generator` (--random_crop); the images as they are without a size.
    """
    if size is None:
        return images
    height, width = image_size(size)
    if tuple(images.shape[-2:]) == (height, width):
        return images
    tops = torch.randint(0, images.shape[-2] - height + 1, (len(images),), generator=generator).tolist()
    lefts = torch.randint(0, images.shape[-1] - width + 1, (len(images),), generator=generator).tolist()
    return torch.stack([image[:, t : t + height, s : s + width] for image, t, s in zip(images, tops, lefts)])


def center_crops(images: torch.Tensor, size) -> torch.Tensor:
    """The centre `size` (H x W) of each image `[B x C x H' x W']` (held-out images under --random_crop)."""
    if size is None:
        return images
    height, width = image_size(size)
    top, left = (images.shape[-2] - height) // 2, (images.shape[-1] - width) // 2
    return images[..., top : top + height, left : left + width].contiguous()


def take_rows(column, indices):
    """Rows `indices` of a per-image column: a tensor's rows, or a list's items (captions)."""
    if isinstance(column, torch.Tensor):
        return column[indices]
    return [column[int(i)] for i in indices]


def make_loader(
    data: MicroBatches, first_micro_batch: int, end: int, num_workers: int, pin_memory: bool
) -> DataLoader:
    """Micro-batches `first_micro_batch` .. `end - 1` (resume starts here: earlier ones are never produced)."""
    return DataLoader(
        data,
        batch_size=None,  # MicroBatches yields whole micro-batches
        sampler=range(first_micro_batch, end),
        num_workers=num_workers,
        pin_memory=pin_memory,
    )


def holdout_indices(num_images: int, holdout: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training indices, held-out indices), both sorted: `holdout` of `num_images` chosen from (seed, HOLDOUT)."""
    if holdout >= num_images:
        raise UsageError(f"--validation_holdout {holdout} leaves no training images: the dataset has {num_images}.")
    order = torch.randperm(num_images, generator=make_generator(seed, HOLDOUT))
    return order[holdout:].sort().values, order[:holdout].sort().values
