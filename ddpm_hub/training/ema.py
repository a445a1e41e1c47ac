"""Exponential moving average of the weights, with a warmup of the decay."""

import contextlib
import copy
import os
from pathlib import Path

import torch

from ..errors import InputNotFoundError


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
        current = [p.detach().to(a.device, a.dtype) for a, p in zip(averaged, model.parameters(), strict=True)]
        torch._foreach_lerp_(averaged, current, weight)
        for mine, theirs in zip(self.model.buffers(), model.buffers(), strict=True):
            mine.copy_(theirs)
        self.num_updates += 1

    @contextlib.contextmanager
    def visiting(self, device: str | torch.device):
        """The averaged model on `device` inside the block, back where it lives after (an EMA kept on the CPU)."""
        home = next(self.model.parameters()).device
        self.model.to(device)
        try:
            yield self.model
        finally:
            self.model.to(home)

    def save(self, folder: str | os.PathLike) -> None:
        """The averaged UNet as a diffusers model folder (config + safetensors)."""
        self.model.save_pretrained(folder, safe_serialization=True)

    def load(self, folder: str | os.PathLike, num_updates: int) -> None:
        """
        The averaged weights saved by `save`. safetensors' `load_model` (strict) accepts a file without the copies of
        tied weights that `save_pretrained` leaves out (a T5 encoder's `encoder.embed_tokens`, which is `shared`).
        """
        from safetensors.torch import load_model

        files = sorted(Path(folder).glob("*.safetensors"))
        if not files:
            raise InputNotFoundError(f"No EMA weights (*.safetensors) in {folder}; was the checkpoint saved with EMA?")
        load_model(self.model, files[0], strict=True, device=str(next(self.model.parameters()).device))
        self.num_updates = num_updates
