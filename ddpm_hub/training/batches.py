"""The order of the data: micro-batch m of the run for one rank, a function of (seed, m, rank) only."""

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import UsageError
from .randomness import FLIP, HOLDOUT, SHUFFLE, make_generator


class MicroBatches(Dataset):
    """
    Micro-batch `m` of the run as one rank sees it: `(m, x_0, labels)`, x_0 float32 `[train_batch_size x C x H x W]`
    in [-1, 1], labels int64 `[train_batch_size]` (None without labels).

    The run walks micro-batches m = 0, 1, 2, ...; micro-batch m is batch b = m % batches_per_epoch of epoch
    e = m // batches_per_epoch. Epoch e visits the images in the order `randperm(N)` drawn from (seed, e); its batch b
    is the global batch of `train_batch_size x num_processes` images at positions [b * G, (b + 1) * G) of that order,
    of which rank r takes the r-th slice. Incomplete batches at the end of an epoch are dropped. Flips are drawn from
    (seed, m, rank). Nothing depends on what came before, so a resumed run starts at any m directly.

    Args:
        images: the dataset of `ddpm_hub.data`: `len(images)` and `images.get_batch(indices, generator)`, a float
            batch with its flips drawn from the generator.
        labels: int64 `[N]` class ids of the images, for a class-conditional model.
    """

    def __init__(self, images, train_batch_size: int, num_processes: int, rank: int, seed: int, labels=None):
        self.images, self.batch_size, self.rank, self.seed = images, train_batch_size, rank, seed
        self.labels = labels
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

    def __getitem__(self, m: int) -> tuple[int, torch.Tensor, torch.Tensor | None]:
        generator = make_generator(self.seed, FLIP, m, self.rank)
        indices = self.indices(m)
        labels = None if self.labels is None else self.labels[indices]
        return m, self.images.get_batch(indices, generator), labels

    def __len__(self) -> int:  # the run is as long as the sampler says; one epoch is the natural length
        return self.batches_per_epoch


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
