"""Library pieces of `training/train.py` that tests and the throughput benchmark import.

- Randomness by construction: every random draw of training is a function of (seed, position, rank) through
  `derive_seed`, so a resumed run repeats the draws of an uninterrupted one exactly, without replaying data.
- `MicroBatches`: micro-batch m of the run for one rank; epoch order a function of (seed, epoch).
- `training_loss`: Algorithm 1 for one micro-batch (t ~ U{0..T-1}, eps ~ N(0, I), the loss of `ddpm_hub.losses`).
- `EMA`: exponential moving average of the weights with a warmup of the decay.
- Checkpoint folders: listing, atomic commit (write to a temporary name, then rename), pruning.
"""

import copy
import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .losses import diffusion_loss
from .scheduling_ddpm_hub import DDPMHubScheduler

# Streams of randomness; each is seeded separately so that adding one never shifts another.
SHUFFLE, FLIP, NOISE, DROPOUT, SAMPLING, HOLDOUT = range(6)

CHECKPOINT_PREFIX = "checkpoint-"
TEMPORARY_PREFIX = ".tmp-" + CHECKPOINT_PREFIX
TRAINING_STATE = "training_state.json"
EMA_FOLDER = "ema_unet"


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed that is a well-mixed function of (seed, *keys); keys are non-negative ints (stream, step...)."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def make_generator(seed: int, *keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derive_seed(seed, *keys))


# ----------------------------------------------------------------------------------------------------------------
# Data order


class MicroBatches(Dataset):
    """
    Micro-batch `m` of the run as one rank sees it: float32 `[train_batch_size x C x H x W]` in [-1, 1].

    The run walks micro-batches m = 0, 1, 2, ...; micro-batch m is batch b = m % batches_per_epoch of epoch
    e = m // batches_per_epoch. Epoch e visits the images in the order `randperm(N)` drawn from (seed, e); its batch b
    is the global batch of `train_batch_size x num_processes` images at positions [b * G, (b + 1) * G) of that order,
    of which rank r takes the r-th slice. Incomplete batches at the end of an epoch are dropped. Flips are drawn from
    (seed, m, rank). Nothing depends on what came before, so a resumed run starts at any m directly.

    Args:
        images: the dataset of `ddpm_hub.data` (uint8 tensor, per-item flip with an explicit generator).
    """

    def __init__(self, images, train_batch_size: int, num_processes: int, rank: int, seed: int):
        self.images, self.batch_size, self.rank, self.seed = images, train_batch_size, rank, seed
        self.global_batch_size = train_batch_size * num_processes
        self.batches_per_epoch = len(images) // self.global_batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(
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

    def __getitem__(self, m: int) -> tuple[int, torch.Tensor]:
        generator = make_generator(self.seed, FLIP, m, self.rank)
        return m, torch.stack([self.images.get_item(i, generator) for i in self.indices(m)])

    def __len__(self) -> int:  # the run is as long as the sampler says; one epoch is the natural length
        return self.batches_per_epoch


# ----------------------------------------------------------------------------------------------------------------
# The objective


def training_loss(
    model: torch.nn.Module,
    scheduler: DDPMHubScheduler,
    x_0: torch.Tensor,
    generator: torch.Generator,
    snr_gamma: float | None = None,
) -> torch.Tensor:
    """
    Algorithm 1 for one micro-batch, the mean of the per-sample loss (`ddpm_hub.losses.diffusion_loss`).

    Args:
        x_0: `[N x C x H x W]` in [-1, 1], on the model's device.
        generator: on x_0's device; draws t ~ Uniform({0, ..., T-1}) `[N]` and eps ~ N(0, I) `[N x C x H x W]`.
    """
    num_timesteps = scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, num_timesteps, (x_0.shape[0],), generator=generator, device=x_0.device)
    noise = torch.randn(x_0.shape, generator=generator, device=x_0.device, dtype=x_0.dtype)
    x_t = scheduler.add_noise(x_0, noise, timesteps)  # q(x_t | x_0), eq. 4
    if x_0.is_cuda:
        x_t = x_t.contiguous(memory_format=torch.channels_last)
    model_output = model(x_t, timesteps).sample
    return diffusion_loss(scheduler, model_output, x_0, x_t, noise, timesteps, snr_gamma=snr_gamma).mean()


# ----------------------------------------------------------------------------------------------------------------
# EMA


class EMA:
    """
    Exponential moving average of a model's weights, theta_ema <- d theta_ema + (1 - d) theta, after every optimizer
    step. The decay warms up as d_n = 1 - (1 + n / inv_gamma) ** -power for the n-th update (n from 0), clipped to
    [0, max_decay] (diffusers' EMAModel warmup; inv_gamma=1, power=3/4 reaches 0.999 at 10k steps and 0.9999 at
    215k). The averaged weights live in `self.model`, a frozen copy of the model, ready to sample with or save.
    """

    def __init__(self, model: torch.nn.Module, max_decay: float = 0.9999, inv_gamma: float = 1.0, power: float = 0.75):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.max_decay, self.inv_gamma, self.power = max_decay, inv_gamma, power
        self.num_updates = 0

    def decay(self, n: int | None = None) -> float:
        """The decay of update number `n` (default: the next one)."""
        n = self.num_updates if n is None else n
        return min(max(1.0 - (1.0 + n / self.inv_gamma) ** -self.power, 0.0), self.max_decay)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        weight = 1.0 - self.decay()
        averaged = list(self.model.parameters())
        current = [p.detach().to(a.dtype) for a, p in zip(averaged, model.parameters(), strict=True)]
        torch._foreach_lerp_(averaged, current, weight)
        for mine, theirs in zip(self.model.buffers(), model.buffers(), strict=True):
            mine.copy_(theirs)
        self.num_updates += 1

    def save(self, folder: str | os.PathLike) -> None:
        """The averaged UNet as a diffusers model folder (config + safetensors)."""
        self.model.save_pretrained(folder, safe_serialization=True)

    def load(self, folder: str | os.PathLike, num_updates: int) -> None:
        from safetensors.torch import load_file

        files = sorted(Path(folder).glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"No EMA weights (*.safetensors) in {folder}; was the checkpoint saved with EMA?")
        self.model.load_state_dict(load_file(files[0], device=str(next(self.model.parameters()).device)))
        self.num_updates = num_updates


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints: output_dir/checkpoints/checkpoint-<step>/


@dataclass
class TrainingState:
    """What a checkpoint adds to Accelerate's state: the data position and what it must agree with on resume."""

    global_step: int  # optimizer steps done
    micro_batch: int  # next micro-batch m to train on (global_step x gradient_accumulation_steps)
    epoch: int
    batch_in_epoch: int
    seed: int
    global_batch_size: int
    gradient_accumulation_steps: int
    num_images: int
    ema_updates: int | None = None

    def write(self, folder: Path) -> None:
        (folder / TRAINING_STATE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, folder: Path) -> "TrainingState":
        path = folder / TRAINING_STATE
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not a ddpm_hub training checkpoint: it has no {TRAINING_STATE}.")
        return cls(**json.loads(path.read_text()))


def checkpoint_step(path: Path) -> int | None:
    match = re.fullmatch(re.escape(CHECKPOINT_PREFIX) + r"(\d+)", path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def list_checkpoints(checkpoints_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of interrupted saves are not checkpoints)."""
    folder = Path(checkpoints_dir)
    if not folder.is_dir():
        return []
    found = [(checkpoint_step(p), p) for p in folder.iterdir()]
    return [p for step, p in sorted((s, p) for s, p in found if s is not None)]


def latest_checkpoint(checkpoints_dir: str | os.PathLike) -> Path | None:
    checkpoints = list_checkpoints(checkpoints_dir)
    return checkpoints[-1] if checkpoints else None


def temporary_checkpoint_dir(checkpoints_dir: str | os.PathLike, step: int) -> Path:
    return Path(checkpoints_dir) / f"{TEMPORARY_PREFIX}{step}"


def commit_checkpoint(temporary: Path, checkpoints_dir: str | os.PathLike, step: int) -> Path:
    """
    Rename a fully written temporary folder to `checkpoint-<step>`: the rename is atomic, so a kill leaves either the
    old set of checkpoints or the new one, never a half-written `checkpoint-<step>`.
    """
    final = Path(checkpoints_dir) / f"{CHECKPOINT_PREFIX}{step}"
    if final.exists():  # the same step saved again (e.g. a rerun): move the old one aside first
        stale = final.with_name(f".stale-{final.name}")
        shutil.rmtree(stale, ignore_errors=True)
        os.replace(final, stale)
        os.replace(temporary, final)
        shutil.rmtree(stale, ignore_errors=True)
    else:
        os.replace(temporary, final)
    _fsync_dir(final.parent)
    return final


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported on every platform / filesystem
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def prune_checkpoints(checkpoints_dir: str | os.PathLike, total_limit: int | None) -> list[Path]:
    """Delete the oldest checkpoints beyond `total_limit`, and leftovers of interrupted saves; returns the deleted."""
    folder = Path(checkpoints_dir)
    deleted = [p for p in folder.glob(".tmp-*") if p.is_dir()] + [p for p in folder.glob(".stale-*") if p.is_dir()]
    checkpoints = list_checkpoints(folder)
    if total_limit is not None and len(checkpoints) > total_limit:
        deleted += checkpoints[: len(checkpoints) - total_limit]
    for path in deleted:
        shutil.rmtree(path, ignore_errors=True)
    return deleted


def weights_checksum(module: torch.nn.Module) -> str:
    """sha256 of every tensor of the state dict, in key order: equal iff the weights are bit-identical."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
