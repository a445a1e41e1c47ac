"""Exact likelihood of a trained DDPM in bits per dimension: the variational bound (DDPM eq. 5, section 3.3).

    L_vlb = L_T + sum_{t=2..T} L_{t-1} + L_0
    L_T     = KL(q(x_T | x_0) || N(0, I))                        the prior term, independent of the model
    L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))  one UNet evaluation per t
    L_0     = -log p_theta(x_0 | x_1)                              discretized Gaussian decoder, bins of width 2/255

Every term is per dimension and in bits (nats / ln 2), as Improved DDPM reports it (`calc_bpd_loop`). The terms are
computed by `ddpm_hub.losses` (`prior_bits_per_dim`, `vb_terms_bits_per_dim`); this module walks the chain.

Three ways to sum the chain, each labelled as such in every result (`LikelihoodResult.label`):
- the full chain: T terms, T UNet evaluations per image (T = 1000: 1000 UNet calls for each image);
- a strided bound over K < T steps: the respaced chain of Improved DDPM section 4 on K timesteps evenly spaced from
  T-1 down to 0. It is the exact variational bound of the respaced K-step model (which is what respaced sampling
  draws from), so it is a valid upper bound on that model's NLL. How close it is to the full chain depends on the
  variance type (tests/test_likelihood.py, exact denoiser for Gaussian data, 50 of 1000 steps): learned_range and
  fixed_large within 0.5%, but fixed_small 5.8 times larger: beta-tilde ignores the uncertainty Var[x_0 | x_t],
  and each KL term grows like (SNR_{t'} - SNR_t) E[(x_0 - x0_hat)^2] / 2, which long strides near t = 0 make large.
  For a fixed_small model the strided bound tracks training progress but is not an estimate of the full-chain value;
- a sampled estimate of the full chain (`estimator="sampled"`): K UNet calls per image too, the decoder term plus one
  timestep drawn uniformly from each of K - 1 strata of 1..T-1 (short near t = 0), weighted by the stratum size.
  Unbiased for the full-chain bound whatever the variance type (an estimate, not a bound); its standard error over
  images includes the sampling of t (same test: within 0.5% of the full chain for all three variance types).

A latent diffusion model (a pipeline with a `vae`) is refused: its bound is on -log p(z) of the autoencoder's
latents, not of the image's pixels, and bits/dim of an image would need the decoder's likelihood -log p(x | z), which
an `AutoencoderKL` does not define (its decoder gives one image, not a distribution over pixels); a bound on latents
divided by the pixels' dimensions would be a number with no meaning.

The decoder's bin probabilities are floored at 1e-12 (improved-diffusion's clamp), so a pixel costs at most
log2(1e12) ~ 39.9 bits in L_0: irrelevant for a trained model, a cap for a random one.

Example::

    from ddpm_hub.evaluation.likelihood import bits_per_dim

    generator = torch.Generator().manual_seed(0)
    result = bits_per_dim(pipeline, images_uint8, num_steps=50, generator=generator, estimator="sampled")
    print(result.label, result.mean(), "+-", result.standard_error())  # sampled estimate of the full chain (50 ...
"""

import copy
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..data import to_model_range
from ..errors import UsageError
from ..losses import prior_bits_per_dim, vb_terms_bits_per_dim
from ..run_folder import BPD_FILE, BPD_PLOT_FILE
from ..shipped.conditioning_ddpm_hub import ConditionBatch
from ..shipped.samplers_ddpm_hub import ddpm_chain
from ..shipped.scheduling_ddpm_hub import DDPMHubScheduler

ESTIMATORS = ("strided", "sampled")


@dataclass
class LikelihoodResult:
    """
    The variational bound per image, and where its bits go.

    Attributes:
        bits_per_dim (`torch.Tensor` float64 `[N]`): the bound, `prior_bpd + terms_bpd.sum(1)`.
        prior_bpd (`torch.Tensor` float64 `[N]`): L_T.
        terms_bpd (`torch.Tensor` float64 `[N x K]`): column k is the term whose x_t is at `timesteps[k]`; column 0
            is the decoder L_0 = -log p(x_0 | x_{t_0}), column k > 0 is KL(q(x_{t_{k-1}} | x_{t_k}, x_0) || p(...)).
            For the sampled estimate, column k > 0 is the estimate of the sum of the terms in stratum k.
        timesteps (`torch.Tensor` long `[K]`): the chain's timesteps, ascending (0-based; the paper's t - 1); for the
            sampled estimate, the first timestep of each stratum.
        num_train_timesteps (`int`): T.
        estimator (`"strided"` or `"sampled"`): how K < T steps were used (irrelevant for the full chain).
    """

    bits_per_dim: torch.Tensor
    prior_bpd: torch.Tensor
    terms_bpd: torch.Tensor
    timesteps: torch.Tensor
    num_train_timesteps: int
    estimator: str = "strided"

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    @property
    def full_chain(self) -> bool:
        return self.num_steps == self.num_train_timesteps

    @property
    def label(self) -> str:
        steps = f"{self.num_steps} of {self.num_train_timesteps} steps"
        if self.full_chain:
            return f"full chain ({self.num_train_timesteps} steps)"
        if self.estimator == "sampled":
            return f"sampled estimate of the full chain ({steps}, stratified)"
        return f"strided bound ({steps})"

    def mean(self) -> float:
        return float(self.bits_per_dim.mean())

    def standard_error(self) -> float:
        """Standard error of the mean over images (0 for a single image)."""
        n = len(self.bits_per_dim)
        return float(self.bits_per_dim.std(unbiased=True) / math.sqrt(n)) if n > 1 else 0.0

    def summary(self) -> dict:
        """JSON-ready numbers: the mean, its standard error, the number of images and the split by term."""
        return {
            "bits_per_dim": self.mean(),
            "standard_error": self.standard_error(),
            "num_images": len(self.bits_per_dim),
            "bound": self.label,
            "num_steps": self.num_steps,
            "num_train_timesteps": self.num_train_timesteps,
            "prior_bpd": float(self.prior_bpd.mean()),
            "decoder_bpd": float(self.terms_bpd[:, 0].mean()),
            "kl_terms_bpd": float(self.terms_bpd[:, 1:].sum(1).mean()),
        }


def check_pixel_space(model, name: str = "this pipeline") -> None:
    """
    Refuse the likelihood of a latent diffusion model (see the module docstring) before any work; a pixel model
    passes. `model` is a pipeline (its `vae`) or a `ddpm_hub.pipelines.Source` (its configs: nothing loaded yet).
    """
    if hasattr(model, "model_index"):  # a Source: the index names a vae, the UNet config gives the latents' shape
        if (model.components.get("vae") or [None])[0] is None:
            return
        size = model.unet_config["sample_size"]
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        latent_shape = (model.conditioning().image_channels(model.unet_config["in_channels"]), height, width)
    elif getattr(model, "vae", None) is None:
        return
    else:
        latent_shape = model.latent_shape(1)[1:]
    raise UsageError(
        f"bits/dim of {name}: it is a latent diffusion model, whose variational bound is over its autoencoder's "
        f"{'×'.join(map(str, latent_shape))} latents, not the image's pixels. Bits/dim of an image would need the "
        "decoder's likelihood p(x | z), which an AutoencoderKL does not define (its decoder gives one image, not a "
        "distribution), so none is reported. Measure its samples instead (ddpm-hub eval --fid)."
    )


def likelihood_timesteps(num_train_timesteps: int, num_steps: int | None = None) -> torch.Tensor:
    """
    The chain the bound is summed over, descending, `[K]`: all T timesteps, or K evenly spaced from T-1 down to 0.

    Both ends are always kept: T-1 because the prior term L_T is taken at T-1, and 0 for the decoder.
    """
    if num_steps is None or num_steps == num_train_timesteps:
        return torch.arange(num_train_timesteps - 1, -1, -1)
    if not isinstance(num_steps, (int, np.integer)) or not 2 <= num_steps <= num_train_timesteps:
        raise UsageError(
            f"num_steps must be an integer between 2 and num_train_timesteps={num_train_timesteps} (a strided bound "
            f"keeps timesteps 0 and {num_train_timesteps - 1}), or None for the full chain; got {num_steps!r}."
        )
    chain = np.unique(np.linspace(0, num_train_timesteps - 1, int(num_steps)).round().astype(np.int64))
    return torch.from_numpy(chain[::-1].copy())


def likelihood_scheduler(scheduler, num_steps: int | None = None) -> DDPMHubScheduler:
    """
    A copy of `scheduler` set to the likelihood chain; the pipeline's own scheduler is never changed.

    diffusers' `DDPMScheduler` is converted (same chain); any other class is refused, because the bound is a property
    of the DDPM chain and its variance type, which a DDIM or DPM-Solver config does not carry.
    """
    # diffusers' DDPMScheduler, the shipped copy of ours, or a trained model's fast default sampler: the same chain
    chain = ddpm_chain(scheduler)
    if isinstance(scheduler, DDPMHubScheduler):
        chain_scheduler = copy.deepcopy(scheduler)
    elif chain is not None:
        chain_scheduler = DDPMHubScheduler.from_config(chain.config)
    else:
        raise UsageError(
            f"The likelihood needs the DDPM chain, but the pipeline's scheduler is {type(scheduler).__name__}. Load "
            "the pipeline with its DDPMHubScheduler (as saved), not a sampler swapped in for speed."
        )
    chain = likelihood_timesteps(chain_scheduler.config.num_train_timesteps, num_steps)
    chain_scheduler.set_timesteps(timesteps=chain.tolist())
    return chain_scheduler


def stratum_edges(num_train_timesteps: int, num_steps: int) -> np.ndarray:
    """
    K strictly increasing edges from 1 to T: K - 1 strata [e_k, e_{k+1}) covering 1..T-1, quadratically spaced
    (1 + (T - 1) u^2 for u evenly spaced in [0, 1]) so that the strata are short near t = 0, where the terms are
    large and change fastest (the variance of the estimate), and long at high noise, where they are small and flat.
    """
    edges = np.round(1 + (num_train_timesteps - 1) * np.linspace(0, 1, num_steps) ** 2).astype(np.int64)
    for k in range(1, num_steps):  # rounding can merge the first edges: keep every stratum at least one step
        edges[k] = max(edges[k], edges[k - 1] + 1)
    return edges


def stratified_timesteps(
    num_train_timesteps: int, num_steps: int, num_images: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """
    The sampled estimate's timesteps: 0 (the decoder) and one timestep per image drawn uniformly in each of K - 1
    strata covering 1..T-1 (`stratum_edges`), descending. Draws `torch.rand([N, K - 1], dtype=float64)` from
    `generator`.

    Returns `(timesteps [N x K], weights [K], starts [K])`, columns descending: the weight of a column is its
    stratum size (1 for the decoder), so that `sum_k weight_k L_{t_k}` is an unbiased estimate of `sum_t L_t`;
    `starts` are the strata's first timesteps.
    """
    likelihood_timesteps(num_train_timesteps, num_steps)  # validates num_steps
    edges = torch.from_numpy(stratum_edges(num_train_timesteps, num_steps))  # [K]
    starts, sizes = edges[:-1], edges[1:] - edges[:-1]  # K - 1 strata [start, start + size)
    device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand((num_images, num_steps - 1), generator=generator, dtype=torch.float64, device=device).cpu()
    drawn = starts + (u * sizes).long().clamp(max=sizes - 1)  # [N x K-1], ascending strata
    zero = torch.zeros(1, dtype=torch.long)
    timesteps = torch.cat([drawn.flip(1), zero.expand(num_images, 1)], dim=1)  # descending, like a chain
    weights = torch.cat([sizes.flip(0), torch.ones(1, dtype=torch.long)]).double()
    return timesteps, weights, torch.cat([starts.flip(0), zero])


def vb_terms_loop(
    unet: torch.nn.Module,
    scheduler: DDPMHubScheduler,
    x_0: torch.Tensor,
    timesteps: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
    on_call: Callable[[], None] | None = None,
    condition: ConditionBatch | None = None,
) -> torch.Tensor:
    """
    Terms of the bound on `scheduler`'s current chain for one batch of images (improved-diffusion's
    `calc_bpd_loop`, without the prior), `[N x K]` float64, one column per column of `timesteps`.

    For each column, in order, the noise is drawn as `torch.randn(x_0.shape, generator=generator,
    dtype=torch.float64)` on the generator's device, and x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) noise. Several columns
    share one UNet call, up to `batch_size` samples (N x columns) per call; that changes the number of calls, not
    the noise.

    Args:
        unet: the model; called through `condition` (`ConditionBatch.__call__`) with x_t in the UNet's dtype.
        scheduler: a `DDPMHubScheduler` set to the chain (see `likelihood_scheduler`).
        x_0: `[N x C x H x W]` float64 in [-1, 1] on the 8-bit grid, on the UNet's device.
        timesteps: `[N x K]` timesteps on the chain, one row per image; default: the whole chain (descending t)
            for every image.
        on_call: called after every UNet call (progress reporting).
        condition: what the UNet is called with for the N images (class ids, ...); the bound is then on
            -log p(x_0 | condition). None for an unconditional UNet.
    """
    n = x_0.shape[0]
    condition = condition or ConditionBatch()
    if timesteps is None:
        timesteps = scheduler.timesteps.cpu().expand(n, -1)
    columns_per_call = max(1, batch_size // n)
    noise_device = generator.device if generator is not None else torch.device("cpu")
    columns = []
    for start in range(0, timesteps.shape[1], columns_per_call):
        t_chunk = timesteps[:, start : start + columns_per_call]  # [N x k]
        k = t_chunk.shape[1]
        noise = torch.cat(
            [torch.randn(x_0.shape, generator=generator, dtype=torch.float64, device=noise_device) for _ in range(k)]
        ).to(x_0.device)  # [k*N x C x H x W], column-major
        t_flat = t_chunk.T.reshape(-1)  # [k*N], column-major
        repeated = condition.repeat(k)
        x_0_rep = repeated.to_model(x_0.repeat(k, 1, 1, 1))  # a model of a residual: the bound is on it
        x_t = scheduler.add_noise(x_0_rep, noise, t_flat)
        model_output = repeated(unet, x_t.to(unet.dtype), t_flat.to(x_0.device)).to(torch.float64)
        terms = vb_terms_bits_per_dim(scheduler, model_output, x_0_rep, x_t, t_flat, repeated)  # [k*N]
        columns.append(terms.reshape(k, n).T)
        if on_call is not None:
            on_call()
    return torch.cat(columns, dim=1).cpu()


@torch.no_grad()
def bits_per_dim(
    pipeline,
    images: torch.Tensor,
    num_steps: int | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
    estimator: Literal["strided", "sampled"] = "strided",
    progress: bool = False,
    **condition_inputs,
) -> LikelihoodResult:
    """
    The variational bound on -log p(x_0) in bits per dimension for each image (DDPM eq. 5 with the discretized
    decoder of section 3.3), with every term returned.

    Cost: one UNet evaluation per image and per chain step: the full chain of T = 1000 steps is 1000 UNet calls per
    image (cheap for the test models; hours for CIFAR-10 on a CPU). `num_steps=K` costs K UNet calls per image and
    gives the strided bound over K steps, or with `estimator="sampled"` the stratified estimate of the full chain
    (see the module docstring for when each is close to the full chain); the result's `label` says which.

    Args:
        pipeline: a `DDPMHubPipeline` (its `unet` and its `DDPMHubScheduler`; the scheduler is copied, not changed).
        images (`torch.Tensor` uint8 `[N x C x H x W]`): the data, C/H/W as the UNet expects.
        num_steps (`int`, *optional*): K, between 2 and T; `None` (default) for the full chain of T steps.
        generator (`torch.Generator`, *optional*): the source of every random draw (seed it for reproducible numbers).
        batch_size (`int`, defaults to 256): at most this many (image, timestep) pairs per UNet call; images are
            processed `batch_size` at a time, each batch drawing its own noise (see `vb_terms_loop`).
        estimator (`"strided"` or `"sampled"`, defaults to `"strided"`): what to do with K < T steps.
        progress (`bool`): show a progress bar counting UNet calls.
        **condition_inputs: the condition of each image, as the pipeline call takes it (`class_labels` `[N]` for a
            class-conditional model): the bound is then on -log p(x_0 | condition). Without it a conditional model is
            evaluated with its null branch (the "no label" model of classifier-free guidance).

    The UNet runs in eval mode (dropout off) and is put back in its previous mode afterwards.

    A latent diffusion model (a `vae`) is refused with a `UsageError` before any work (`check_pixel_space`).

    Returns:
        [`LikelihoodResult`]: `bits_per_dim` `[N]`, `prior_bpd` `[N]`, `terms_bpd` `[N x K]` over ascending
        `timesteps`, and `label` ("full chain (T steps)", "strided bound (K of T steps)" or "sampled estimate ...").
    """
    check_pixel_space(pipeline)
    condition = _condition(pipeline, condition_inputs, len(images))
    _check_images(images, pipeline.unet, pipeline.image_channels, any_size=condition.concat is not None)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if estimator not in ESTIMATORS:
        raise UsageError(f"Unknown estimator {estimator!r}; valid choices are: {', '.join(ESTIMATORS)}.")
    sampled = estimator == "sampled" and num_steps is not None
    scheduler = likelihood_scheduler(pipeline.scheduler, None if sampled else num_steps)
    num_train_timesteps = scheduler.config.num_train_timesteps
    chain = scheduler.timesteps.cpu()  # descending
    num_columns = num_steps if sampled else len(chain)
    unet, device = pipeline.unet, pipeline.unet.device
    bar = _progress_bar(images.shape[0], num_columns, batch_size) if progress else None
    was_training = unet.training
    unet.eval()  # dropout off: the bound is a property of the trained model, not of a dropout sample
    try:
        priors, terms = [], []
        for start in range(0, images.shape[0], batch_size):
            x_0 = to_model_range(images[start : start + batch_size], torch.float64).to(device)
            if sampled:
                timesteps, weights, columns = stratified_timesteps(num_train_timesteps, num_steps, len(x_0), generator)
            else:
                timesteps, weights, columns = chain.expand(len(x_0), -1), torch.ones(len(chain)).double(), chain
            batch_condition = condition.select(slice(start, start + batch_size))
            priors.append(prior_bits_per_dim(scheduler, batch_condition.to_model(x_0)).cpu())
            on_call = bar.update if bar is not None else None
            terms.append(
                vb_terms_loop(unet, scheduler, x_0, timesteps, generator, batch_size, on_call, batch_condition)
                * weights
            )
    finally:
        unet.train(was_training)
        if bar is not None:
            bar.close()
    prior_bpd = torch.cat(priors)
    terms_bpd = torch.cat(terms).flip(1)  # descending t -> ascending t
    return LikelihoodResult(
        bits_per_dim=prior_bpd + terms_bpd.sum(dim=1),
        prior_bpd=prior_bpd,
        terms_bpd=terms_bpd,
        timesteps=columns.flip(0),
        num_train_timesteps=num_train_timesteps,
        estimator=estimator,
    )


def _condition(pipeline, inputs: dict, num_images: int) -> ConditionBatch:
    """
    What the bound is conditioned on, for each image, from the pipeline call's condition arguments (`class_labels`
    `[N]`, ...): none for an unconditional model; for a conditional one the given condition, else its null branch.
    """
    try:
        guided, _ = pipeline.prepare_condition(num_images, 1.0, **inputs)
    except ValueError as error:
        raise UsageError(f"the likelihood's condition: {error}") from None
    return guided.condition


def _progress_bar(num_images: int, num_steps: int, batch_size: int):
    from tqdm.auto import tqdm

    sizes = [min(batch_size, num_images - start) for start in range(0, num_images, batch_size)]
    total = sum(math.ceil(num_steps / max(1, batch_size // size)) for size in sizes)
    return tqdm(total=total, desc=f"bits/dim, {num_images} images x {num_steps} steps", unit="UNet call")


def _check_images(images: torch.Tensor, unet: torch.nn.Module, channels: int, any_size: bool = False) -> None:
    """uint8 `[N x C x H x W]` of the images' channels (the UNet's, less what a condition concatenates) and size."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        kind = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
        raise UsageError(f"images must be a uint8 tensor [N x C x H x W] with values 0..255, got {kind}.")
    size = unet.config.sample_size
    height, width = (size, size) if isinstance(size, int) else size
    if any_size:  # a super-resolution UNet is fully convolutional: any size of the images is its output's
        height, width = images.shape[-2:]
    expected = (channels, height, width)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected or images.shape[0] == 0:
        raise UsageError(
            f"images must have shape [N x {' x '.join(map(str, expected))}] (N >= 1) for this UNet, "
            f"got {list(images.shape)}."
        )


def plot_bits_per_timestep(result: LikelihoodResult, path: str | os.PathLike) -> Path:
    """
    A PNG of where the bits of the bound go: the mean bits/dim of each term against its timestep (log scale, left
    axis), and the cumulative share of the bound from t = 0 upwards (right axis); prior and decoder in the legend.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result.summary()
    terms = result.terms_bpd.mean(dim=0).numpy()
    timesteps = result.timesteps.numpy()
    cumulative = np.cumsum(terms) / summary["bits_per_dim"]
    figure, axes = plt.subplots(figsize=(8, 4.4), dpi=120)
    marker = "." if result.num_steps <= 100 else None
    axes.plot(timesteps[1:], terms[1:], marker=marker, label=r"KL terms $L_{t-1}$")
    axes.scatter(timesteps[:1], terms[:1], color="C3", zorder=3, label=rf"decoder $L_0$: {terms[0]:.3f}")
    axes.axhline(summary["prior_bpd"], color="C2", linestyle=":", label=rf"prior $L_T$: {summary['prior_bpd']:.2e}")
    axes.set_yscale("log")
    axes.set_xlabel("timestep t (0-based)")
    axes.set_ylabel("bits per dimension, per term")
    axes.grid(alpha=0.3, which="both")
    share = axes.twinx()
    share.plot(timesteps, cumulative, color="C7", linewidth=1, label="cumulative share (right)")
    share.set_ylim(0, 1.02)
    share.set_ylabel("share of the bound, t' <= t")
    lines = axes.get_legend_handles_labels()
    more = share.get_legend_handles_labels()
    figure.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="lower center", ncol=4, frameon=False)
    axes.set_title(
        f"{result.label}: {summary['bits_per_dim']:.3f} ± {summary['standard_error']:.3f} bits/dim "
        f"({summary['num_images']} images)",
        fontsize=9,
    )
    figure.tight_layout(rect=(0, 0.06, 1, 1))  # room for the legend underneath
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def write_likelihood_report(result: LikelihoodResult, output_dir: str | os.PathLike) -> dict:
    """`bpd.json` (the summary plus mean bits per timestep) and `bits_per_timestep.png` in `output_dir`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    plot = plot_bits_per_timestep(result, output_dir / BPD_PLOT_FILE)
    summary = {**result.summary(), "plot": str(plot)}
    per_timestep = {
        "timesteps": result.timesteps.tolist(),
        "mean_terms_bpd": result.terms_bpd.mean(dim=0).tolist(),
    }
    (output_dir / BPD_FILE).write_text(json.dumps({**summary, **per_timestep}, indent=2) + "\n")
    return summary
