"""The diffusion objectives: L_simple (DDPM Algorithm 1, eq. 14) and the variational bound terms (eqs. 5, 13); the
distillation objectives: progressive (Salimans & Ho 2022) and consistency (Song et al. 2023, as LCM).

Shapes: images `[N x C x H x W]`, timesteps `[N]`; every loss here is returned per sample, `[N]`, so that callers can
weight, average or sum as they need (training averages, the likelihood sums over timesteps).
"""

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .shipped.conditioning_ddpm_hub import ConditionBatch, Guided, guidance_embedding
from .shipped.scheduling_ddpm_hub import DDPMHubScheduler

LN2 = math.log(2.0)


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the first: `[N x ...]` -> `[N]`."""
    return x.mean(dim=tuple(range(1, x.ndim)))


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) elementwise, in nats."""
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1.0)


def standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, bin_width: float = 2.0 / 255.0
) -> torch.Tensor:
    """
    log p(x_0 | x_1) of the discretized Gaussian decoder (DDPM eq. 13), elementwise, in nats.

    `x` holds 8-bit images scaled to [-1, 1], so pixel values are bin centres spaced `bin_width` = 2/255 apart. The
    probability of a pixel is the Gaussian mass in its bin; the edge bins are open-ended (-inf, -1 + w/2] and
    [1 - w/2, inf). `log_scale` is the log standard deviation.
    """
    half = bin_width / 2
    inv_std = torch.exp(-log_scale)
    cdf_upper = standard_normal_cdf(inv_std * (x - mean + half))
    cdf_lower = standard_normal_cdf(inv_std * (x - mean - half))
    log_cdf_upper = torch.log(cdf_upper.clamp(min=1e-12))  # the lowest bin: P(X <= -1 + w/2)
    log_one_minus_cdf_lower = torch.log((1.0 - cdf_lower).clamp(min=1e-12))  # the highest bin: P(X > 1 - w/2)
    log_bin_mass = torch.log((cdf_upper - cdf_lower).clamp(min=1e-12))
    edge = 1.0 - half / 2  # any x beyond this is in an edge bin (bin centres are at +-1)
    return torch.where(x < -edge, log_cdf_upper, torch.where(x > edge, log_one_minus_cdf_lower, log_bin_mass))


def prior_bits_per_dim(scheduler: DDPMHubScheduler, x_0: torch.Tensor) -> torch.Tensor:
    """L_T = KL(q(x_T | x_0) || N(0, I)) (eq. 5), bits per dimension, `[N]`. Independent of the model."""
    t_last = torch.full((x_0.shape[0],), scheduler.config.num_train_timesteps - 1, dtype=torch.long)
    alpha_bar = scheduler.alphas_cumprod[t_last].to(x_0).reshape(-1, *([1] * (x_0.ndim - 1)))
    mean, log_variance = alpha_bar.sqrt() * x_0, torch.log(1.0 - alpha_bar).expand_as(x_0)
    return mean_flat(normal_kl(mean, log_variance, torch.zeros_like(x_0), torch.zeros_like(x_0))) / LN2


def vb_terms_bits_per_dim(
    scheduler: DDPMHubScheduler,
    model_output: torch.Tensor,
    x_0: torch.Tensor,
    x_t: torch.Tensor,
    timesteps: torch.Tensor,
    condition: ConditionBatch | None = None,
) -> torch.Tensor:
    """
    One term of the variational bound per sample, in bits per dimension, `[N]`, on the scheduler's current chain:

    - L_{t-1} = KL(q(x_{t'} | x_t, x_0) || p(x_{t'} | x_t)) where t' is the previous kept timestep (eq. 5);
    - L_0 = -log p(x_0 | x_t) with the discretized Gaussian decoder on the chain's last step (eq. 13).

    Args:
        model_output: the raw UNet output at (x_t, t), `[N x C x H x W]` or `[N x 2C x H x W]` for `learned_range`.
        x_0: the data as the model diffuses it (`condition.to_model` of images in [-1, 1] on the 8-bit grid); x_t: a
            sample of q(x_t | x_0); timesteps: `[N]` on the chain.
        condition: for a model of a residual (`ConditionBatch.base`), the decoder's bins are the images' 8-bit bins
            (the KL terms do not change under the affine map; the decoder's Gaussian is mapped to image space).
    """
    true_mean, _, true_log_variance = scheduler.q_posterior_mean_variance(x_0, x_t, timesteps)
    model = scheduler.p_mean_variance(model_output, x_t, timesteps)
    kl = mean_flat(normal_kl(true_mean, true_log_variance, model.mean, model.log_variance)) / LN2
    condition = ConditionBatch() if condition is None else condition
    log_scale = 0.5 * model.log_variance - math.log(condition.residual_scale if condition.base is not None else 1.0)
    decoder_nll = (
        -mean_flat(
            discretized_gaussian_log_likelihood(condition.to_image(x_0), condition.to_image(model.mean), log_scale)
        )
        / LN2
    )
    is_last = scheduler.previous_timestep(timesteps).to(x_0.device) < 0
    return torch.where(is_last, decoder_nll, kl)


# For each prediction type (the one place training dispatches on it): the target the UNet learns, and the factor
# f(SNR) by which its squared error exceeds that of x_0: ||x_0 error||^2 = ||target error||^2 / f(SNR).
TARGETS = {
    "epsilon": (lambda scheduler, x_0, noise, t: noise, lambda snr: snr),  # Algorithm 1
    "sample": (lambda scheduler, x_0, noise, t: x_0, lambda snr: torch.ones_like(snr)),
    "v_prediction": (lambda scheduler, x_0, noise, t: scheduler.get_velocity(x_0, noise, t), lambda snr: snr + 1),
}


def training_target(
    scheduler: DDPMHubScheduler, x_0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What the UNet learns to output: epsilon (Algorithm 1), x_0, or v = sqrt(ab) eps - sqrt(1 - ab) x_0."""
    return TARGETS[scheduler.config.prediction_type][0](scheduler, x_0, noise, timesteps)


def min_snr_weight(scheduler: DDPMHubScheduler, timesteps: torch.Tensor, gamma: float = 5.0) -> torch.Tensor:
    """
    Min-SNR-gamma loss weights (Hang et al. 2023) for the configured target, `[N]`: the x_0-error weight
    min(SNR, gamma) over the target's factor, i.e. min(SNR, gamma) / SNR for epsilon, min(SNR, gamma) for x_0,
    min(SNR, gamma) / (SNR + 1) for v.
    """
    snr = signal_to_noise(scheduler, timesteps)
    return snr.clamp(max=gamma) / TARGETS[scheduler.config.prediction_type][1](snr)


def signal_to_noise(scheduler: DDPMHubScheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """SNR_t = ab_t / (1 - ab_t), `[N]` float32 on the timesteps' device."""
    alpha_bar = scheduler.alphas_cumprod[timesteps.cpu()].to(device=timesteps.device, dtype=torch.float32)
    return alpha_bar / (1 - alpha_bar)


@dataclass(frozen=True)
class DiffusionObjective:
    """
    The training objective of a DDPM, per sample (`[N]`), for training, held-out validation and benchmarks alike.

    - L_simple (Algorithm 1, eq. 14): t ~ U{0..T-1}, eps ~ N(0, I), x_t ~ q(x_t | x_0) (eq. 4), and
      w_t || target - model(x_t, t) ||^2 averaged over dimensions, with w_t = 1, or the min-SNR-gamma weight when
      `snr_gamma` is set;
    - with `variance_type="learned_range"`, L_hybrid = L_simple + vlb_weight * T * L_t (Improved DDPM, lambda = 0.001),
      the mean frozen (stop-gradient) inside L_vlb so that it only trains the variance.

    Args (of a call):
        model: called as `model(x_t, t, **condition.kwargs).sample` (a UNet, possibly wrapped by DDP or compiled).
        x_0: `[N x C x H x W]` in [-1, 1].
        generator: draws t and eps on x_0's device, unless `timesteps` `[N]` and `noise` (like x_0) are given.
        condition: what the UNet is called with besides (x_t, t) (`ddpm_hub.pipelines.conditioning.ConditionBatch`:
        class ids,
            the null label where dropped for guidance, ...), passed through untouched; None for an unconditional UNet.
            For a model of a residual (`ConditionBatch.base`) the diffused x_0 is `condition.to_model(x_0)`.
    """

    scheduler: DDPMHubScheduler
    snr_gamma: float | None = None
    vlb_weight: float = 0.001
    channels_last: bool = False  # give the UNet x_t in channels_last memory (a UNet set up that way is faster)

    def __call__(
        self,
        model: torch.nn.Module,
        x_0: torch.Tensor,
        generator: torch.Generator | None = None,
        timesteps: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        condition: ConditionBatch | None = None,
    ) -> torch.Tensor:
        condition = ConditionBatch() if condition is None else condition
        x_0 = condition.to_model(x_0)  # a model of a residual (super-resolution) learns the residual
        if timesteps is None:
            num_timesteps = self.scheduler.config.num_train_timesteps
            timesteps = torch.randint(0, num_timesteps, (x_0.shape[0],), generator=generator, device=x_0.device)
        if noise is None:
            noise = torch.randn(x_0.shape, generator=generator, device=x_0.device, dtype=x_0.dtype)
        x_t = self.scheduler.add_noise(x_0, noise, timesteps)  # q(x_t | x_0), eq. 4
        if self.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        output = condition(model, x_t, timesteps)
        return self.loss(output, x_0, x_t, noise, timesteps, condition)

    def loss(
        self,
        model_output: torch.Tensor,
        x_0: torch.Tensor,
        x_t: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        condition: ConditionBatch | None = None,
    ) -> torch.Tensor:
        """The per-sample loss `[N]` of a model output at (x_t, t); the UNet output may hold 2C channels."""
        prediction, variance_values = self.scheduler.split_model_output(model_output, x_t)
        target = training_target(self.scheduler, x_0, noise, timesteps)
        loss = mean_flat((prediction.float() - target.float()) ** 2)
        if self.snr_gamma is not None:
            loss = loss * min_snr_weight(self.scheduler, timesteps, self.snr_gamma)
        if variance_values is not None:
            frozen = torch.cat([prediction.detach(), variance_values], dim=1).float()
            vb = vb_terms_bits_per_dim(self.scheduler, frozen, x_0.float(), x_t.float(), timesteps, condition)
            loss = loss + self.vlb_weight * self.scheduler.config.num_train_timesteps * vb
        return loss


# ----------------------------------------------------------------------------------------------------------------
# Progressive distillation (Salimans & Ho 2022)


def predicted_x_0(prediction_type: str, output: torch.Tensor, x_t: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """x_0 from a model output of `prediction_type` at x_t = alpha x_0 + sigma eps (alpha, sigma `[N x 1 x 1 x 1]`)."""
    if prediction_type == "epsilon":
        return (x_t - sigma * output) / alpha
    if prediction_type == "v_prediction":  # v = alpha eps - sigma x_0
        return alpha * x_t - sigma * output
    return output


def distillation_timesteps(num_train_timesteps: int, calls: int) -> torch.Tensor:
    """
    The 2 `calls` + 1 points of a teacher's chain of 2 `calls` DDIM steps, ascending from x_0 (-1) to T - 1: point
    j is timestep round(j T / (2 calls)) - 1 (diffusers' "trailing" spacing), so that the student's `calls` steps
    are the even points and the teacher's two steps per student step pass through the odd ones.
    """
    j = torch.arange(2 * calls + 1, dtype=torch.float64)
    return (j * num_train_timesteps / (2 * calls)).round().long() - 1


@dataclass(frozen=True)
class DistillationObjective:
    """
    One stage of progressive distillation (Salimans & Ho 2022, Algorithm 2), per sample (`[N]`): the student learns in
    one DDIM step from t to t'' what the teacher does in two (t to t' to t''), on the student's `calls` steps.

    - t is a student timestep (drawn uniformly among `calls`), z_t = alpha_t x_0 + sigma_t eps (eq. 4);
    - the teacher takes two deterministic DDIM steps, t -> t' -> t'', from its x_0 predictions (clipped to [-1, 1]
      when its scheduler clips, `clip_sample`: a latent model's does not);
    - the target is the x_0 that makes one DDIM step of the student from z_t land on the teacher's z_t'':
      x~ = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t);
    - the loss is max(SNR_t, 1) || x_0(student) - x~ ||^2 averaged over dimensions ("truncated SNR" weighting: the
      x_0 error, weighted as the epsilon error where the noise is small).

    The student predicts v (`scheduler`'s prediction type, v_prediction: stable at few steps, where the epsilon
    parameterisation divides by alpha ~ 0); the teacher's outputs are read in its own `teacher_prediction_type`.
    """

    scheduler: DDPMHubScheduler  # the student's (v_prediction) on the training chain
    teacher: torch.nn.Module
    teacher_prediction_type: str
    calls: int  # the student's number of steps in this stage
    channels_last: bool = False
    teacher_context: Callable = contextlib.nullcontext  # e.g. the accelerator's autocast: the teacher is not prepared
    clip_sample: bool = True  # the teacher's scheduler's

    def __call__(
        self,
        model: torch.nn.Module,
        x_0: torch.Tensor,
        generator: torch.Generator | None = None,
        timesteps: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        condition: ConditionBatch | None = None,
    ) -> torch.Tensor:
        condition = ConditionBatch() if condition is None else condition
        x_0 = condition.to_model(x_0)  # a model of a residual (super-resolution) is distilled on it
        points = distillation_timesteps(self.scheduler.config.num_train_timesteps, self.calls).to(x_0.device)
        if timesteps is None:  # the student step i in 1 .. calls: from point 2i to 2i - 2 through 2i - 1
            steps = torch.randint(1, self.calls + 1, (x_0.shape[0],), generator=generator, device=x_0.device)
        else:  # given: student timesteps, each one of the even points but the first (x_0)
            student = points[2::2]
            found = (timesteps.to(points)[:, None] == student[None]).long()
            if not bool((found.sum(dim=1) == 1).all()):
                raise ValueError(f"timesteps must be the student's {student.tolist()}, got {timesteps.tolist()}.")
            steps = found.argmax(dim=1) + 1
        if noise is None:
            noise = torch.randn(x_0.shape, generator=generator, device=x_0.device, dtype=x_0.dtype)
        t, t_mid, t_end = points[2 * steps], points[2 * steps - 1], points[2 * steps - 2]
        alpha, sigma = self._alpha_sigma(t, x_0)
        x_t = alpha * x_0 + sigma * noise  # q(x_t | x_0), eq. 4
        with torch.no_grad(), self.teacher_context():
            z_mid = self._teacher_step(x_t, t, t_mid, condition)
            z_end = self._teacher_step(z_mid, t_mid, t_end, condition)
            alpha_end, sigma_end = self._alpha_sigma(t_end, x_0)
            ratio = sigma_end / sigma
            target = ((z_end - ratio * x_t) / (alpha_end - ratio * alpha)).float()
        student_input = x_t.contiguous(memory_format=torch.channels_last) if self.channels_last else x_t
        output = condition(model, student_input, t)
        prediction = predicted_x_0(self.scheduler.config.prediction_type, output.float(), x_t, alpha, sigma)
        weight = (alpha**2 / sigma**2).clamp(min=1.0).flatten()
        return weight * mean_flat((prediction - target.float()) ** 2)

    def _alpha_sigma(self, timesteps: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return alpha_sigma(self.scheduler, timesteps, like)

    def _teacher_step(self, z: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, condition) -> torch.Tensor:
        return teacher_ddim_step(self, z, t, t_next, condition, clip=self.clip_sample)


def alpha_sigma(scheduler, timesteps: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha_t = sqrt(ab_t), sigma_t = sqrt(1 - ab_t) `[N x 1 x 1 x 1]`; timestep -1 is x_0 (alpha 1, sigma 0)."""
    alpha_bar = torch.ones(len(timesteps), dtype=torch.float64, device=like.device)
    inside = timesteps >= 0
    table = scheduler.alphas_cumprod.to(device=like.device, dtype=torch.float64)
    alpha_bar[inside] = table[timesteps[inside]]
    shape = (-1, *[1] * (like.ndim - 1))
    return alpha_bar.sqrt().to(like.dtype).view(shape), (1 - alpha_bar).sqrt().to(like.dtype).view(shape)


def teacher_ddim_step(objective, z: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, condition, clip: bool):
    """
    One deterministic DDIM step (eta = 0) of `objective.teacher` from z at t to t_next, its x_0 clipped to [-1, 1]
    when `clip` (DDIM eq. 12): z' = alpha' x_0 + sigma' (z - alpha x_0) / sigma.
    """
    alpha, sigma = alpha_sigma(objective.scheduler, t, z)
    alpha_next, sigma_next = alpha_sigma(objective.scheduler, t_next, z)
    teacher_input = z.contiguous(memory_format=torch.channels_last) if objective.channels_last else z
    output = condition(objective.teacher, teacher_input, t).float()[:, : z.shape[1]]
    x_0 = predicted_x_0(objective.teacher_prediction_type, output, z, alpha, sigma)
    x_0 = x_0.clamp(-1, 1) if clip else x_0
    return alpha_next * x_0 + sigma_next * (z - alpha * x_0) / sigma


# ----------------------------------------------------------------------------------------------------------------
# Consistency distillation (Song et al. 2023), in DDPM time as latent consistency models (Luo et al. 2023)

SIGMA_DATA = 0.5  # LCMScheduler's


def consistency_scalings(
    timesteps: torch.Tensor, timestep_scaling: float = 10.0, sigma_data: float = SIGMA_DATA
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    c_skip(t) = sigma_data^2 / ((s t)^2 + sigma_data^2) and c_out(t) = s t / sqrt((s t)^2 + sigma_data^2) with
    s = `timestep_scaling`, float64 `[N]`: diffusers' `LCMScheduler.get_scalings_for_boundary_condition_discrete`,
    so that the student samples with it as it was trained. At t = 0, c_skip = 1 and c_out = 0: f(x, 0) = x.
    """
    scaled = timesteps.to(torch.float64) * timestep_scaling
    return sigma_data**2 / (scaled**2 + sigma_data**2), scaled / (scaled**2 + sigma_data**2).sqrt()


def consistency_timesteps(num_train_timesteps: int, skip: int) -> torch.Tensor:
    """
    The student's points t_i = (i + 1) k - 1, i = 0 .. T / k - 1, ascending (`LCMScheduler`'s schedule with
    `original_inference_steps` T / k): a training step goes from one to the one below, from t_0 to t = 0.
    """
    return torch.arange(1, num_train_timesteps // skip + 1) * skip - 1


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float | None = None) -> torch.Tensor:
    """d(a, b) = sqrt(||a - b||^2 + c^2) - c per sample, `[N]`; c = 0.001 sqrt(d) for d values per sample."""
    c = 0.001 * math.sqrt(a[0].numel()) if c is None else c
    return ((a - b).flatten(1).pow(2).sum(dim=1) + c**2).sqrt() - c


@dataclass(frozen=True)
class ConsistencyObjective:
    """
    Consistency distillation (Song et al. 2023, Algorithm 2; LCM's discrete form), per sample (`[N]`):

    - n is drawn uniformly, t = t_{n+1} one of the student's points (`consistency_timesteps`) and t' = t - k (0 below
      the first): x_t = alpha_t x_0 + sigma_t eps (eq. 4);
    - the teacher takes one deterministic DDIM step from x_t to x^_t' (its x_0 clipped to [-1, 1] when its
      scheduler clips: `clip_sample`);
    - the student is f(x, t) = c_skip(t) x + c_out(t) x_0(x, t) (`consistency_scalings`, LCMScheduler's), x_0 read
      from the UNet output in the scheduler's prediction type; the target is f at (x^_t', t') with the target
      network's weights (an EMA of the student), without gradient;
    - the loss is the pseudo-Huber distance between f(x_t, t) and the target (`pseudo_huber`).

    With `guidance` (LOW, HIGH), guidance is distilled in (Meng et al. 2023; LCM): w is drawn uniformly in
    [LOW, HIGH] for each example, the teacher's step is guided, eps_null + w (eps_c - eps_null) from one call on the
    condition and its `null` branch together (`Guided`, w per image), and the student and the target read w through
    `timestep_cond` (`guidance_embedding` of `guidance_dim` values).
    """

    scheduler: DDPMHubScheduler  # the student's (its prediction type) on the training chain
    teacher: torch.nn.Module
    teacher_prediction_type: str
    target: torch.nn.Module  # theta^-: the target network
    skip: int  # k: the teacher's DDIM step, in timesteps
    clip_sample: bool = True  # the teacher's scheduler's: a latent model's does not clip
    timestep_scaling: float = 10.0  # the sampler's (LCMScheduler config)
    huber_c: float | None = None
    channels_last: bool = False
    teacher_context: Callable = contextlib.nullcontext
    guidance: tuple[float, float] | None = None  # guidance distilled in: the range of w
    guidance_dim: int = 64

    def __call__(
        self,
        model: torch.nn.Module,
        x_0: torch.Tensor,
        generator: torch.Generator | None = None,
        timesteps: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        condition: ConditionBatch | None = None,
        null: ConditionBatch | None = None,
        scales: torch.Tensor | None = None,
    ) -> torch.Tensor:
        condition = ConditionBatch() if condition is None else condition
        if (self.guidance is None) != (null is None):
            raise ValueError("a guided consistency distillation takes the null condition; an unguided one none.")
        x_0 = condition.to_model(x_0)
        points = consistency_timesteps(self.scheduler.config.num_train_timesteps, self.skip).to(x_0.device)
        if timesteps is None:
            t = points[torch.randint(0, len(points), (x_0.shape[0],), generator=generator, device=x_0.device)]
        elif not bool(torch.isin(timesteps.to(points), points).all()):
            raise ValueError(f"timesteps must be the student's points (k - 1, 2k - 1, ...), got {timesteps.tolist()}.")
        else:
            t = timesteps.to(points)
        if noise is None:
            noise = torch.randn(x_0.shape, generator=generator, device=x_0.device, dtype=x_0.dtype)
        teacher_condition = condition
        if self.guidance is not None:
            if scales is None:
                low, high = self.guidance
                scales = low + (high - low) * torch.rand(len(x_0), generator=generator, device=x_0.device)
            teacher_condition = Guided(condition, null, scales.to(x_0.device))  # w per image
            condition = condition.merge(
                ConditionBatch({"timestep_cond": guidance_embedding(scales, self.guidance_dim)})
            )
        t_prev = (t - self.skip).clamp(min=0)
        alpha, sigma = alpha_sigma(self.scheduler, t, x_0)
        x_t = alpha * x_0 + sigma * noise  # q(x_t | x_0), eq. 4
        with torch.no_grad(), self.teacher_context():
            x_prev = teacher_ddim_step(self, x_t, t, t_prev, teacher_condition, clip=self.clip_sample)
            target = self.consistency_function(self.target, x_prev, t_prev, condition).float()
        prediction = self.consistency_function(model, x_t, t, condition)
        return pseudo_huber(prediction, target, self.huber_c)

    def consistency_function(self, model, x: torch.Tensor, t: torch.Tensor, condition) -> torch.Tensor:
        """f(x, t) = c_skip(t) x + c_out(t) x_0(x, t) of a student-shaped `model`, float32 `[N x C x H x W]`."""
        condition = ConditionBatch() if condition is None else condition
        alpha, sigma = alpha_sigma(self.scheduler, t, x)
        model_input = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        output = condition(model, model_input, t).float()[:, : x.shape[1]]
        x_0 = predicted_x_0(self.scheduler.config.prediction_type, output, x.float(), alpha.float(), sigma.float())
        shape = (-1, *[1] * (x.ndim - 1))
        c_skip, c_out = (c.float().view(shape) for c in consistency_scalings(t, self.timestep_scaling))
        return c_skip * x.float() + c_out * x_0
