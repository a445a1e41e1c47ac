# Copyright 2026 The ddpm_hub authors. Apache License 2.0.
"""DDPMHubScheduler: the DDPM forward and reverse processes (Ho et al. 2020) with the Improved DDPM additions
(Nichol & Dhariwal 2021): cosine schedule, learned interpolated variance and timestep respacing.

This file is self-contained on purpose: it imports only the standard library, numpy, torch and diffusers, because the
same file is shipped inside every published pipeline repo (`scheduler/scheduling_ddpm_hub.py`) so that plain diffusers
can load it with `trust_remote_code=True`.

Notation follows the papers: `betas[t]` is beta_t, `alphas_cumprod[t]` is alpha-bar_t, `x_t` the noisy sample,
`pred_original_sample` the model's estimate of x_0. Timesteps are 0-based as in diffusers (the paper's t=1 is our 0).
"""

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch
from diffusers import DDPMScheduler
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_ddpm import betas_for_alpha_bar
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

BETA_SCHEDULES = ("linear", "scaled_linear", "cosine", "sigmoid")
# The cosine schedule is stored in the config under diffusers' name, so that every diffusers scheduler built with
# `from_config(scheduler.config)` (DDIM, DPM-Solver++, UniPC...) understands it.
_DIFFUSERS_SCHEDULE_NAMES = {"cosine": "squaredcos_cap_v2"}
_SCHEDULE_ALIASES = {"squaredcos_cap_v2": "cosine"}
# Accepted so that every config diffusers' DDPMScheduler saves loads: a schedule only its code knows (not its docs).
DIFFUSERS_BETA_SCHEDULES = ("laplace",)
VARIANCE_TYPES = ("fixed_small", "fixed_large", "learned_range")
# diffusers' other three variance types: accepted so that its configs load, stepped as its DDPMScheduler steps them
# (except fixed_large_log, where its step returns NaN: see `step`). ddpm_hub trains and documents the three above.
DIFFUSERS_VARIANCE_TYPES = ("fixed_small_log", "fixed_large_log", "learned")
_LOG_DOMAIN_VARIANCES = ("fixed_small_log", "learned_range")  # the step's std is exp(log-variance / 2)
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
TIMESTEP_SPACINGS = ("leading", "linspace", "trailing")


@dataclass
class DDPMHubSchedulerOutput(BaseOutput):
    """
    Output of [`DDPMHubScheduler.step`].

    Args:
        prev_sample (`torch.Tensor` of shape `[N x C x H x W]`):
            x_{t-1}, the sample at the previous timestep of the chain; the next model input.
        pred_original_sample (`torch.Tensor` of shape `[N x C x H x W]`):
            The model's estimate of x_0 at this step (after clipping or thresholding).
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class PosteriorMeanVariance(NamedTuple):
    """Mean, variance and log-variance of a Gaussian over x_{t-1}, each broadcastable to `[N x C x H x W]`."""

    mean: torch.Tensor
    variance: torch.Tensor
    log_variance: torch.Tensor


class ModelMeanVariance(NamedTuple):
    """p(x_{t-1} | x_t) as the model defines it, plus the x_0 estimate it was built from."""

    mean: torch.Tensor
    variance: torch.Tensor
    log_variance: torch.Tensor
    pred_original_sample: torch.Tensor


def cosine_betas(num_train_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Improved DDPM eq. 17: alpha-bar(t) = f(t)/f(0), f(t) = cos((t/T + s) / (1 + s) * pi/2)^2, betas capped."""

    def alpha_bar(step: int) -> float:
        return math.cos((step / num_train_timesteps + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar(i + 1) / alpha_bar(i), max_beta) for i in range(num_train_timesteps)]
    return torch.tensor(betas, dtype=torch.float32)


def zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2024, Algorithm 1: shift and scale sqrt(alpha-bar) so the last SNR is 0 and the first unchanged."""
    sqrt_alpha_bar = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = sqrt_alpha_bar[0].clone(), sqrt_alpha_bar[-1].clone()
    sqrt_alpha_bar = (sqrt_alpha_bar - last) * (first / (first - last))
    alpha_bar = sqrt_alpha_bar**2
    alphas = torch.cat([alpha_bar[0:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1 - alphas


def _broadcast(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-sample values `[N]` (or a scalar) -> `[N x 1 x 1 x 1]` in `like`'s dtype and device."""
    values = values.to(device=like.device, dtype=like.dtype)
    return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))


class DDPMHubScheduler(SchedulerMixin, ConfigMixin):
    """
    Denoising diffusion probabilistic model scheduler: the forward process q(x_t | x_0) (`add_noise`, eq. 4) and the
    ancestral reverse step (`step`, Algorithm 2 with eqs. 6-7), on the full chain or on a respaced subset of it.

    Respacing (Improved DDPM, section 4): `set_timesteps(50)` keeps 50 of the training timesteps and rebuilds the
    chain on them, beta'_t = 1 - alpha-bar_t / alpha-bar_{t'} where t' is the previous kept timestep. Every step is a
    correct DDPM step of that shorter chain, so sampling with 50 or 250 steps needs no retraining.

    Args:
        num_train_timesteps (`int`, defaults to 1000): T, the length of the training chain.
        beta_start (`float`, defaults to 1e-4), beta_end (`float`, defaults to 0.02):
            Endpoints of the `linear`, `scaled_linear` and `sigmoid` schedules (DDPM paper: 1e-4 .. 0.02).
        beta_schedule (`"linear"`, `"scaled_linear"`, `"cosine"` or `"sigmoid"`, defaults to `"linear"`):
            `cosine` is Improved DDPM's (s=0.008, betas capped at 0.999); diffusers' name `squaredcos_cap_v2` is
            accepted too and is what the saved config records. diffusers' `laplace` loads too (its betas exactly).
        trained_betas (`list[float]`, *optional*): explicit betas, one per training timestep, each in (0, 1];
            overrides `beta_schedule`.
        variance_type (`"fixed_small"`, `"fixed_large"` or `"learned_range"`, defaults to `"fixed_small"`):
            `fixed_small` is the posterior variance beta-tilde_t (eq. 7), `fixed_large` is beta_t (with beta-tilde_1
            at the last step, as Improved DDPM does), `learned_range` interpolates between the two in the log domain
            with a model output v in [-1, 1] (Improved DDPM eq. 15); the model then outputs 2C channels.
            diffusers' other three load and step as its `DDPMScheduler` steps them: `fixed_small_log` as
            `fixed_small`, `fixed_large_log` as `fixed_large` (diffusers' own step returns NaN there), `learned` with
            the model's second C channels taken as the variance itself (the step's std is their square root).
        clip_sample (`bool`, defaults to `True`): clip the x_0 estimate to `[-clip_sample_range, clip_sample_range]`.
        prediction_type (`"epsilon"`, `"sample"` or `"v_prediction"`, defaults to `"epsilon"`): what the model outputs.
        thresholding (`bool`, defaults to `False`): Imagen's dynamic thresholding of the x_0 estimate, with
            `dynamic_thresholding_ratio` and `sample_max_value`.
        timestep_spacing (`"leading"`, `"linspace"` or `"trailing"`, defaults to `"leading"`):
            which timesteps `set_timesteps(n)` keeps; `leading` matches diffusers' `DDPMScheduler`, `linspace` is
            Improved DDPM's evenly spaced respacing including both ends.
        steps_offset (`int`, defaults to 0): added to `leading` timesteps.
        rescale_betas_zero_snr (`bool`, defaults to `False`): rescale betas to zero terminal SNR (Lin et al. 2024).
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]
    order = 1
    ddpm_family = True  # `is_ddpm_family`: the DDPM chain and its variance, stateless steps

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: Literal[
            "linear", "scaled_linear", "cosine", "sigmoid", "squaredcos_cap_v2", "laplace"
        ] = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        variance_type: Literal[
            "fixed_small", "fixed_large", "learned_range", "fixed_small_log", "fixed_large_log", "learned"
        ] = "fixed_small",
        clip_sample: bool = True,
        prediction_type: Literal["epsilon", "sample", "v_prediction"] = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: Literal["leading", "linspace", "trailing"] = "leading",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
    ):
        schedule = _SCHEDULE_ALIASES.get(beta_schedule, beta_schedule)
        _check_choice("beta_schedule", schedule, BETA_SCHEDULES + tuple(_SCHEDULE_ALIASES) + DIFFUSERS_BETA_SCHEDULES)
        _check_choice("variance_type", variance_type, VARIANCE_TYPES + DIFFUSERS_VARIANCE_TYPES)
        _check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        _check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
        if not isinstance(num_train_timesteps, int) or num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be a positive integer, got {num_train_timesteps!r}.")
        if rescale_betas_zero_snr and prediction_type == "epsilon":
            raise ValueError(
                "rescale_betas_zero_snr=True makes alpha-bar_T = 0, where x_0 cannot be recovered from an epsilon "
                "prediction: x_0 = (x_T - eps) / 0 (diffusers' DDPMScheduler clips that to a sign image of +-1, or "
                "returns NaN without clip_sample). Use prediction_type='v_prediction' or 'sample' with zero "
                "terminal SNR."
            )
        if schedule in _DIFFUSERS_SCHEDULE_NAMES:
            self.register_to_config(beta_schedule=_DIFFUSERS_SCHEDULE_NAMES[schedule])

        self.betas = self._make_betas(schedule, num_train_timesteps, beta_start, beta_end, trained_betas)
        if rescale_betas_zero_snr:
            self.betas = zero_terminal_snr(self.betas)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.one = torch.tensor(1.0)
        self.init_noise_sigma = 1.0

        self.variance_type = variance_type
        self.custom_timesteps = False
        self.num_inference_steps = None
        self._set_chain(np.arange(num_train_timesteps)[::-1].copy())

    @staticmethod
    def _make_betas(schedule, num_train_timesteps, beta_start, beta_end, trained_betas) -> torch.Tensor:
        if trained_betas is not None:
            betas = torch.tensor(trained_betas, dtype=torch.float32)
            if betas.ndim != 1:
                raise ValueError(f"trained_betas must be a flat list of betas, got shape {tuple(betas.shape)}.")
            if len(betas) != num_train_timesteps:
                raise ValueError(
                    f"trained_betas has {len(betas)} values but num_train_timesteps={num_train_timesteps}: the chain "
                    f"needs one beta per training timestep; pass num_train_timesteps={len(betas)} with these betas. "
                    "(diffusers' DDPMScheduler does not infer it: with fewer betas its first step fails with an "
                    "IndexError, with more it never uses the extra ones.)"
                )
        elif schedule == "linear":
            betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
        elif schedule == "scaled_linear":
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2
        elif schedule == "cosine":
            betas = cosine_betas(num_train_timesteps)
        elif schedule == "laplace":
            betas = betas_for_alpha_bar(num_train_timesteps, alpha_transform_type="laplace")
        else:  # sigmoid (GeoDiff)
            betas = torch.sigmoid(torch.linspace(-6, 6, num_train_timesteps)) * (beta_end - beta_start) + beta_start
        if not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError(
                f"every beta must lie in (0, 1]; got min {betas.min():.3g}, max {betas.max():.3g}. beta_t is the "
                "variance step t adds (x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) z): above 1 or below 0 one of "
                "the square roots is of a negative number, and a beta of 0 is a step without noise (at t = 0 the "
                "last step then divides by 1 - alpha-bar_0 = 0). diffusers' DDPMScheduler accepts such betas; its "
                "chains return NaN for a beta above 1, below 0, or of 0 at t = 0."
            )
        return betas

    # ----------------------------------------------------------------------------------------------------------------
    # The chain: which timesteps are visited, and for each one the previous kept timestep.

    def _set_chain(self, timesteps: np.ndarray, device: str | torch.device | None = None) -> None:
        """Record the descending `timesteps` and, for each, the previous kept timestep (-1 after the last one)."""
        self.timesteps = torch.from_numpy(timesteps.astype(np.int64)).to(device)
        prev = torch.full((self.config.num_train_timesteps,), -2, dtype=torch.long)  # -2: not on the chain
        kept = torch.from_numpy(timesteps.astype(np.int64))
        prev[kept] = torch.cat([kept[1:], torch.tensor([-1])])
        self._prev_timestep = prev
        self._log_posterior_variance_clipped = self._clipped_log_variance_table()

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list[int] | None = None,
    ) -> None:
        """
        Choose the chain to sample with: `num_inference_steps` evenly placed timesteps (see `timestep_spacing`), or an
        explicit descending list of `timesteps`. The chain is respaced: each step goes from one kept timestep to the
        next with the betas recomputed from alpha-bar, so any subset is a valid (shorter) DDPM chain.
        """
        num_train = self.config.num_train_timesteps
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("Pass exactly one of `num_inference_steps` or `timesteps` to set_timesteps.")
        if timesteps is not None:
            chain = np.asarray(list(timesteps), dtype=np.int64)
            if chain.ndim != 1 or len(chain) == 0:
                raise ValueError(f"`timesteps` must be a non-empty list of integers, got {timesteps!r}.")
            if (np.diff(chain) >= 0).any():
                raise ValueError(f"`timesteps` must be strictly descending, got {chain.tolist()}.")
            if chain[0] >= num_train or chain[-1] < 0:
                raise ValueError(f"`timesteps` must lie in [0, {num_train - 1}], got {chain.tolist()}.")
            self.custom_timesteps = True
        else:
            if not isinstance(num_inference_steps, (int, np.integer)) or not 1 <= num_inference_steps <= num_train:
                raise ValueError(
                    f"num_inference_steps must be an integer between 1 and num_train_timesteps={num_train} (the "
                    f"model was trained on {num_train} timesteps; more steps than that do not exist), "
                    f"got {num_inference_steps!r}."
                )
            chain = self._spaced_timesteps(int(num_inference_steps))
            self.custom_timesteps = False
        self.num_inference_steps = len(chain)
        self._set_chain(chain, device)

    def _spaced_timesteps(self, n: int) -> np.ndarray:
        """Descending timesteps for n steps; the three spacings of Lin et al. 2024, Table 2."""
        num_train = self.config.num_train_timesteps
        spacing = self.config.timestep_spacing
        if spacing == "linspace":
            chain = np.linspace(0, num_train - 1, n).round()[::-1]
        elif spacing == "leading":
            chain = (np.arange(n) * (num_train // n))[::-1] + self.config.steps_offset
        else:  # trailing
            chain = np.round(np.arange(num_train, 0, -num_train / n)) - 1
        if len(np.unique(chain)) != len(chain) or chain.max() >= num_train:
            raise ValueError(
                f"timestep_spacing={spacing!r} with steps_offset={self.config.steps_offset} gives invalid timesteps "
                f"for {n} steps: {chain.astype(int).tolist()}"
            )
        return chain.copy().astype(np.int64)

    def previous_timestep(self, timestep: int | torch.Tensor) -> torch.Tensor:
        """The kept timestep before `timestep` on the current chain (-1 after the last). `timestep`: int or `[N]`."""
        t = torch.as_tensor(timestep, dtype=torch.long).cpu()
        if bool(((t < 0) | (t >= self.config.num_train_timesteps)).any()):
            raise ValueError(f"timestep {t.tolist()} is outside [0, {self.config.num_train_timesteps - 1}].")
        prev = self._prev_timestep[t]
        if bool((prev == -2).any()):
            raise ValueError(
                f"timestep {t.tolist()} is not on the current chain; call set_timesteps first and step through "
                "scheduler.timesteps."
            )
        return prev

    def _alpha_bars(self, timestep: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """alpha-bar_t and alpha-bar_{t'} for the previous kept timestep t' (1 after the last step), float32."""
        t = torch.as_tensor(timestep, dtype=torch.long).cpu()
        prev = self.previous_timestep(t)
        alpha_bar_prev = torch.where(prev >= 0, self.alphas_cumprod[prev.clamp(min=0)], self.one)
        return self.alphas_cumprod[t], alpha_bar_prev

    def _clipped_log_variance_table(self) -> torch.Tensor:
        """
        log beta-tilde_t (eq. 7) for every timestep on the chain, float32 `[T]`. At the last step, where beta-tilde
        is 0, it takes the value of the step before it (Improved DDPM's `posterior_log_variance_clipped`).
        """
        chain = self.timesteps.cpu()
        alpha_bar, alpha_bar_prev = self._alpha_bars(chain)
        table = torch.zeros(self.config.num_train_timesteps)
        table[chain] = (1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)
        if len(chain) > 1:
            table[chain[-1]] = table[chain[-2]]
        return table.clamp(min=1e-20).log()

    # ----------------------------------------------------------------------------------------------------------------
    # The forward process.

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.IntTensor
    ) -> torch.Tensor:
        """q(x_t | x_0) (eq. 4): x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) noise. `timesteps`: `[N]`."""
        alpha_bar = _broadcast(self.alphas_cumprod[torch.as_tensor(timesteps).cpu()], original_samples)
        return alpha_bar.sqrt() * original_samples + (1 - alpha_bar).sqrt() * noise

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.IntTensor) -> torch.Tensor:
        """The v-prediction target (Salimans & Ho 2022): v = sqrt(alpha-bar_t) noise - sqrt(1 - alpha-bar_t) x_0."""
        alpha_bar = _broadcast(self.alphas_cumprod[torch.as_tensor(timesteps).cpu()], sample)
        return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * sample

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """DDPM feeds x_t to the model unscaled; present so pipelines can treat all schedulers alike."""
        return sample

    # ----------------------------------------------------------------------------------------------------------------
    # Posterior and model distributions over x_{t-1}: used by `step`, by L_vlb in training and by the likelihood.

    def q_posterior_mean_variance(
        self, x_0: torch.Tensor, x_t: torch.Tensor, timesteps: int | torch.Tensor
    ) -> PosteriorMeanVariance:
        """
        q(x_{t'} | x_t, x_0) on the current chain (eqs. 6-7 with respaced betas), for x_0, x_t `[N x C x H x W]`.

        The log-variance is clipped as in Improved DDPM: at the last step, where beta-tilde is 0, it takes the
        value of the step before it.
        """
        alpha_bar, alpha_bar_prev = (_broadcast(a, x_t) for a in self._alpha_bars(timesteps))
        alpha = alpha_bar / alpha_bar_prev  # the respaced alpha_t
        beta = 1 - alpha
        coef_x0 = alpha_bar_prev.sqrt() * beta / (1 - alpha_bar)
        coef_xt = alpha.sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar)
        mean = coef_x0 * x_0 + coef_xt * x_t
        variance = (1 - alpha_bar_prev) / (1 - alpha_bar) * beta
        return PosteriorMeanVariance(mean, variance, _broadcast(self._log_variance_small(timesteps), x_t))

    def _log_variance_small(self, timesteps: int | torch.Tensor) -> torch.Tensor:
        return self._log_posterior_variance_clipped[torch.as_tensor(timesteps, dtype=torch.long).cpu()]

    def predict_original_sample(
        self, model_output: torch.Tensor, x_t: torch.Tensor, timesteps: int | torch.Tensor
    ) -> torch.Tensor:
        """x_0 from the model output: eq. 15 for epsilon, identity for sample, x_0 = sqrt(ab) x_t - sqrt(1-ab) v."""
        alpha_bar = _broadcast(self.alphas_cumprod[torch.as_tensor(timesteps, dtype=torch.long).cpu()], x_t)
        if self.config.prediction_type == "epsilon":
            return (x_t - (1 - alpha_bar).sqrt() * model_output) / alpha_bar.sqrt()
        if self.config.prediction_type == "sample":
            return model_output
        return alpha_bar.sqrt() * x_t - (1 - alpha_bar).sqrt() * model_output

    def split_model_output(
        self, model_output: torch.Tensor, sample: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Split a learned-variance model's 2C-channel output into (prediction, variance output): v in [-1, 1] for
        `learned_range`, the variance itself for diffusers' `learned`. A fixed variance type takes C channels.
        """
        channels = sample.shape[1]
        if self.variance_type in ("learned", "learned_range"):
            if model_output.shape[1] != 2 * channels:
                raise ValueError(
                    f"variance_type={self.variance_type!r} needs a model with 2 x {channels} = {2 * channels} output "
                    f"channels (prediction and variance), got {model_output.shape[1]}. Set the UNet's out_channels to "
                    f"{2 * channels} or use variance_type 'fixed_small' / 'fixed_large'."
                )
            return model_output[:, :channels], model_output[:, channels:]
        if model_output.shape[1] != channels:
            raise ValueError(
                f"model output has {model_output.shape[1]} channels but the sample has {channels}; a 2C-channel "
                "output needs variance_type='learned_range' (or diffusers' 'learned')."
            )
        return model_output, None

    def model_variance(
        self, timesteps: int | torch.Tensor, predicted_variance: torch.Tensor | None, like: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        (variance, log-variance) of the reverse process Sigma_theta(x_t, t) for the configured `variance_type`; the
        `_log` types are the same variances as `fixed_small` and `fixed_large`, which their steps take in the log
        domain.
        """
        log_small = _broadcast(self._log_variance_small(timesteps), like)
        alpha_bar, alpha_bar_prev = self._alpha_bars(timesteps)
        beta = 1 - alpha_bar / alpha_bar_prev
        if self.variance_type in ("fixed_small", "fixed_small_log"):
            return _broadcast((1 - alpha_bar_prev) / (1 - alpha_bar) * beta, like), log_small
        beta = _broadcast(beta, like)
        if self.variance_type == "learned":  # diffusers' meaning: the model outputs the variance itself
            return predicted_variance, predicted_variance.log()
        if self.variance_type in ("fixed_large", "fixed_large_log"):
            # beta_t, except at the last step where beta-tilde of the step before it is used (iDDPM).
            last = _broadcast(torch.as_tensor(timesteps).cpu() == self.timesteps.cpu()[-1], like).bool()
            variance = torch.where(last, log_small.exp(), beta)
            return variance, variance.log()
        # learned_range, Improved DDPM eq. 15: Sigma = exp(v log beta + (1 - v) log beta-tilde), v = (out + 1) / 2
        frac = (predicted_variance + 1) / 2
        log_variance = frac * beta.log() + (1 - frac) * log_small
        return log_variance.exp(), log_variance

    def _get_variance(
        self,
        t: int,
        predicted_variance: torch.Tensor | None = None,
        variance_type: Literal[
            "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"
        ]
        | None = None,
    ) -> torch.Tensor:
        """
        diffusers' `DDPMScheduler._get_variance`, value for value, for code written against it. What it returns
        depends on the type: the variance for `fixed_small` (beta-tilde_t clamped at 1e-20), `fixed_large` (beta_t)
        and `learned` (`predicted_variance` itself); the standard deviation for `fixed_small_log`; the log-variance
        for `fixed_large_log` and `learned_range` (eq. 15 with the unclipped log beta-tilde_t). `model_variance` is
        what this scheduler steps and bounds the likelihood with: the same variances on every step but the last of a
        chain, where no noise is added and it takes Improved DDPM's clipped values instead.

        Args:
            t (`int`): a timestep of the current chain.
            predicted_variance (`torch.Tensor`, *optional*): the model's variance channels (`learned`,
                `learned_range`).
            variance_type (`str`, *optional*): defaults to the config's.
        """
        variance_type = self.config.variance_type if variance_type is None else variance_type
        _check_choice("variance_type", variance_type, VARIANCE_TYPES + DIFFUSERS_VARIANCE_TYPES)
        if variance_type in ("learned", "learned_range") and predicted_variance is None:
            raise ValueError(f"variance_type={variance_type!r} needs the model's predicted_variance.")
        alpha_bar, alpha_bar_prev = self._alpha_bars(t)
        beta = 1 - alpha_bar / alpha_bar_prev
        variance = torch.clamp((1 - alpha_bar_prev) / (1 - alpha_bar) * beta, min=1e-20)  # beta-tilde_t, eq. 7
        if variance_type == "fixed_small":
            return variance
        if variance_type == "fixed_small_log":
            return torch.exp(0.5 * torch.log(variance))
        if variance_type == "fixed_large":
            return beta
        if variance_type == "fixed_large_log":
            return torch.log(beta)
        if variance_type == "learned":
            return predicted_variance
        frac = (predicted_variance + 1) / 2
        return frac * torch.log(beta) + (1 - frac) * torch.log(variance)

    def p_mean_variance(
        self, model_output: torch.Tensor, x_t: torch.Tensor, timesteps: int | torch.Tensor
    ) -> ModelMeanVariance:
        """
        p_theta(x_{t'} | x_t): the posterior mean evaluated at the model's (clipped) x_0 estimate, and the variance
        chosen by `variance_type`. `model_output` is the raw UNet output (2C channels for `learned_range`).
        """
        model_output, predicted_variance = self.split_model_output(model_output, x_t)
        pred_x0 = self._clip(self.predict_original_sample(model_output, x_t, timesteps))
        mean, _, _ = self.q_posterior_mean_variance(pred_x0, x_t, timesteps)
        variance, log_variance = self.model_variance(timesteps, predicted_variance, x_t)
        return ModelMeanVariance(mean, variance, log_variance, pred_x0)

    def _clip(self, pred_x0: torch.Tensor) -> torch.Tensor:
        if self.config.thresholding:
            return self._threshold_sample(pred_x0)
        if self.config.clip_sample:
            return pred_x0.clamp(-self.config.clip_sample_range, self.config.clip_sample_range)
        return pred_x0

    def _threshold_sample(self, sample: torch.Tensor) -> torch.Tensor:
        """Imagen's dynamic thresholding: s = a quantile of |x_0| per sample (at least 1); clamp to [-s, s], / s."""
        flat = sample.float().reshape(sample.shape[0], -1)
        s = torch.quantile(flat.abs(), self.config.dynamic_thresholding_ratio, dim=1)
        s = s.clamp(min=1, max=self.config.sample_max_value).unsqueeze(1)
        return (flat.clamp(-s, s) / s).reshape(sample.shape).to(sample.dtype)

    # ----------------------------------------------------------------------------------------------------------------
    # The reverse step.

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> DDPMHubSchedulerOutput | tuple:
        """
        One ancestral step x_t -> x_{t'} (Algorithm 2, line 4, on the respaced chain).

        Args:
            model_output (`torch.Tensor` `[N x C x H x W]`, `[N x 2C x H x W]` for `learned_range` and `learned`):
                the UNet output.
            timestep (`int`): t, a member of `self.timesteps`.
            sample (`torch.Tensor` `[N x C x H x W]`): x_t.
            generator (`torch.Generator` or a list of N): the source of the step's noise z.
        """
        t = int(timestep)
        # 1-4. x_0 estimate (eq. 15), clipped; posterior mean at it (eq. 7); the variance of the step.
        mean, variance, log_variance, pred_x0 = self.p_mean_variance(model_output, sample, t)
        prev_sample = mean
        # 5. Add sigma_t z, except on the last step of the chain (Algorithm 2: z = 0 when t = 1).
        if int(self.previous_timestep(t)) >= 0:
            noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
            # fixed_small_log and learned_range take the std from the log-variance, as diffusers does. fixed_large_log
            # is fixed_large's variance used in the log domain (GLIDE), so its step is fixed_large's, sqrt(beta_t) =
            # exp(log beta_t / 2); diffusers' step takes the square root of log beta_t < 0 itself: NaN.
            if self.variance_type in _LOG_DOMAIN_VARIANCES:
                std = (0.5 * log_variance).exp()
            else:
                std = variance.sqrt()
            prev_sample = mean + std * noise
        if not return_dict:
            return (prev_sample, pred_x0)
        return DDPMHubSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_x0)

    def __len__(self) -> int:
        return self.config.num_train_timesteps


def is_ddpm_family(scheduler) -> bool:
    """
    A DDPM-family scheduler (an instance or a class): DDPMHubScheduler (installed, or loaded from a repo's shipped
    file) or diffusers' DDPMScheduler. Their steps are the ancestral steps of the DDPM chain, stateless (any timestep
    in any order: RePaint walks back and forth), and they carry the variance type that the likelihood and a learned
    variance need; DDIM, DPM-Solver and the other samplers do not.
    """
    klass = scheduler if isinstance(scheduler, type) else type(scheduler)
    return bool(getattr(klass, "ddpm_family", False)) or issubclass(klass, DDPMScheduler)


def _check_choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"Unknown {name} {value!r}; valid choices are: {', '.join(valid)}.")
