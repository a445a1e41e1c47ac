"""uint8 images and the model's range: the conversions, and the dataset that serves a uint8 tensor to training."""

import mmap
import os
import weakref
from pathlib import Path

import numpy as np
import torch


def map_images(file: str | Path, shape: tuple[int, ...]) -> tuple[torch.Tensor, mmap.mmap]:
    """
    A uint8 tensor of `shape` on the pages of `file` (no copy), and its mapping. The mapping is private (copy on
    write): the pages are the page cache's, shared by every process that maps the file, and writes never reach it.
    """
    with open(file, "rb") as handle:
        mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
    if len(mapping) != int(np.prod(shape)):
        raise ValueError(f"{file} has {len(mapping)} bytes, not the {int(np.prod(shape))} of uint8 {list(shape)}.")
    return torch.from_numpy(np.frombuffer(mapping, dtype=np.uint8).reshape(shape)), mapping


def to_model_range(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Map uint8 pixels 0..255 to `dtype` in [-1, 1] (``x / 127.5 - 1``), the range the DDPM is trained on.

    Args:
        images: uint8 tensor of any shape, e.g. [N x C x H x W] or [C x H x W].
        dtype: float32 for training; the likelihood uses float64 (the pixels are then the exact bin centres).
    """
    if images.dtype != torch.uint8:
        raise ValueError(f"to_model_range expects a uint8 tensor with values 0..255, got dtype {images.dtype}.")
    return images.to(dtype) / 127.5 - 1.0


def from_model_range(images: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_model_range`: float in [-1, 1] to uint8 0..255 (``round((x + 1) * 127.5)``, clamped).

    Args:
        images: floating-point tensor of any shape, e.g. [N x C x H x W].
    """
    if not images.is_floating_point():
        raise ValueError(f"from_model_range expects a floating-point tensor in [-1, 1], got dtype {images.dtype}.")
    return ((images.to(torch.float32) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


class UInt8ImageDataset(torch.utils.data.Dataset):
    """Serve a uint8 image tensor as float32 [C x H x W] items in [-1, 1], with an optional horizontal flip.

    The flip is drawn per item as ``torch.rand(1, generator=generator) < 0.5`` (the draw torchvision's
    ``RandomHorizontalFlip`` makes, so the flips match diffusers' training script for the same RNG state):

    - ``dataset[i]`` (what ``DataLoader`` calls) uses the global torch RNG. It is reproducible after
      ``torch.manual_seed(seed)``: with ``num_workers=0`` the flips come from the main process RNG; with workers,
      PyTorch seeds each worker from the main RNG (or the DataLoader's ``generator``), so a fixed seed and a fixed
      ``num_workers`` give the same flips.
    - ``dataset.get_item(i, generator)`` draws from the given ``torch.Generator`` instead, for full control.

    With ``random_flip=False`` no random number is drawn, so the RNG stream is the same as without this dataset.

    The decoded cache (`ddpm_hub.data.cache`) is served from its file: given ``file``, each row of a batch is read
    with one ``pread`` straight into the batch. The file's pages live in the page cache, one copy for every process
    of the machine, and nothing of the dataset stays in the process: its resident memory does not grow with the
    dataset. (Reading through the memory mapping instead would leave every page read mapped, and counted in the
    process's resident memory, until unmapped; on Linux 6.x a random 3 KB read maps a whole 2 MB page-cache folio.)
    `indices` selects rows by index (the training part of a held-out split); pickling (DataLoader workers started by
    spawn or forkserver) sends the file's name, not the pixels.

    Args:
        tensor: uint8 images [N x C x H x W] (from :func:`load_images`, in RAM or memory-mapped).
        random_flip: flip each item left-right with probability 1/2.
        indices: int64 [M]: item i is row ``indices[i]`` of ``tensor`` (default: every row, in order).
        file: the file ``tensor`` is memory-mapped from (`DecodedImages.file`): rows are read from it with pread.
    """

    def __init__(
        self,
        tensor: torch.Tensor,
        random_flip: bool = False,
        indices: torch.Tensor | None = None,
        file: str | Path | None = None,
    ):
        if tensor.dtype != torch.uint8 or tensor.ndim != 4:
            raise ValueError(
                f"UInt8ImageDataset expects a uint8 tensor [N x C x H x W], got dtype {tensor.dtype} "
                f"and shape {list(tensor.shape)}."
            )
        self.random_flip = random_flip
        self.indices = None if indices is None else torch.as_tensor(indices, dtype=torch.int64)
        self.file = file
        self.tensor = tensor
        self._descriptor = None if file is None else _open_for_reads(self, file)

    def __len__(self) -> int:
        return self.tensor.shape[0] if self.indices is None else len(self.indices)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.get_item(index)

    def rows(self, indices) -> torch.Tensor:
        """uint8 items ``indices`` ([B x C x H x W] for a list, [C x H x W] for an int): one gather, no other copy."""
        rows = indices if self.indices is None else self.indices[indices]
        if self._descriptor is None:
            return self.tensor[rows]
        single = isinstance(rows, int) or (isinstance(rows, torch.Tensor) and rows.ndim == 0)
        batch = self._read_rows([int(rows)] if single else [int(row) for row in rows])
        return batch[0] if single else batch

    def _read_rows(self, rows: list[int]) -> torch.Tensor:
        """Rows of the file, one pread each, into a new uint8 [len(rows) x C x H x W] array."""
        batch = np.empty((len(rows), *self.tensor.shape[1:]), dtype=np.uint8)
        row_bytes = batch[0].nbytes if len(rows) else 0
        for position, row in enumerate(rows):
            if os.preadv(self._descriptor, [batch[position]], row * row_bytes) != row_bytes:
                raise OSError(f"{self.file}: row {row} is incomplete; the decoded cache is damaged, delete it.")
        return torch.from_numpy(batch)

    def get_batch(self, indices: list[int], generator: torch.Generator | None = None) -> torch.Tensor:
        """
        Items ``indices`` as one float32 [B x C x H x W] batch in [-1, 1]: one gather and one conversion, the flips
        drawn at once as ``torch.rand(B, generator=generator) < 0.5`` (what training reads).
        """
        return to_training_batch(self.rows(indices), self.random_flip, generator)

    def get_item(self, index: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Item ``index`` as float32 [C x H x W] in [-1, 1], the flip drawn from ``generator`` (None: global RNG)."""
        image = to_model_range(self.rows(index))
        if self.random_flip and torch.rand(1, generator=generator).item() < 0.5:
            image = image.flip(-1)
        return image

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.file is not None:  # the name and shape of the mapped file, not its pixels
            state.update(tensor=tuple(self.tensor.shape), _descriptor=None)
        return state

    def __setstate__(self, state: dict) -> None:
        if state["file"] is not None:
            state["tensor"], _ = map_images(state["file"], state["tensor"])
            state["_descriptor"] = _open_for_reads(self, state["file"])
        self.__dict__.update(state)


def _open_for_reads(owner, file: str | Path) -> int:
    """A read-only descriptor of `file`, closed when `owner` is collected (pread needs no file position, so forked
    DataLoader workers can share it)."""
    descriptor = os.open(file, os.O_RDONLY)
    weakref.finalize(owner, os.close, descriptor)
    return descriptor


def to_training_batch(
    images: torch.Tensor, random_flip: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """uint8 [B x C x H x W] -> float32 in [-1, 1], each image flipped left-right if ``torch.rand(B) < 0.5``."""
    batch = to_model_range(images)
    if random_flip:
        flip = torch.rand(len(images), generator=generator) < 0.5
        batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
    return batch
