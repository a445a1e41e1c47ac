"""The piece the step benchmarks share: one training step (forward under autocast, loss, backward, AdamW) as a
closure, and waiting for the device. Only torch is imported, so that the GPU benchmark runs on machines without the
packages ddpm_hub's training modules need."""

import contextlib
from collections.abc import Callable

import torch


def training_step(
    model, objective, optimizer, x_0: torch.Tensor, generator: torch.Generator, autocast=None
) -> Callable[[], None]:
    """A closure doing one optimizer step of `objective` (`ddpm_hub.losses.DiffusionObjective`) on the batch `x_0`."""
    autocast = autocast or contextlib.nullcontext()

    def step() -> None:
        with autocast:
            loss = objective(model, x_0, generator).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so that a timer measures the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
