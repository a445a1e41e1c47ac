"""The diffusion prior's objective (unCLIP, Ramesh et al. 2022, section 2.2): the x_0 target. The prior sees
x_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps (DDPM eq. 4) of a normalised CLIP image embedding z_0 `[N x D]` and
predicts z_0 itself, scored by the mean squared error ("we train a decoder-only Transformer ... to predict the unnoised
z_i directly, and use a mean-squared error loss on this prediction"), as Kandinsky 2.2's prior training does."""

from collections.abc import Callable

import torch
import torch.nn.functional as F


def prior_loss(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    scheduler,
    x_0: torch.Tensor,
    timesteps: torch.Tensor,
    noise: torch.Tensor,
    reduce: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    `(loss, target)`: ||model(x_t, t) - x_0||^2 averaged over the D dimensions of each embedding (per sample `[N]`
    with `reduce=False`, else their mean), x_t from `scheduler.add_noise(x_0, noise, t)`; the target is x_0.
    """
    x_t = scheduler.add_noise(x_0, noise, timesteps)
    target = x_0
    losses = F.mse_loss(model(x_t, timesteps).float(), target.float(), reduction="none").mean(dim=1)
    return (losses.mean() if reduce else losses), target
