"""The option groups of the objectives besides the DDPM's own: distillation from a teacher (`DistillOptions`) and an
autoencoder's training (`AutoencoderOptions`); parts of `ddpm_hub.training.options.TrainingOptions`."""

from dataclasses import dataclass

from ..options import option
from .option_values import parse_calls, parse_guidance_range

DISTILL_METHODS = ("progressive", "consistency")


@dataclass(frozen=True)
class DistillOptions:
    """Progressive or consistency distillation of a trained model (`ddpm_hub.training.distillation`)."""

    distill_from: str | None = option(
        None,
        "distil this trained model (a folder or Hub repo id) into a few-step student that starts from its weights: "
        "one step where it took two, stage by stage (progressive distillation, Salimans & Ho 2022), or a "
        "consistency model (--distill_method consistency)",
        "distillation",
    )
    distill_calls: tuple[int, ...] = option(
        (32, 16, 8, 4),
        "the student's calls, stage by stage, each half the one before: the first stage's teacher takes twice the "
        "first (DDIM); the last is what the student samples with",
        "distillation",
        parse=parse_calls,
    )
    distill_steps_per_stage: int = option(
        500, "optimizer steps of each stage (the run has stages x this many)", "distillation", at_least=1
    )
    distill_method: str = option(
        "progressive",
        "progressive: stages of halving calls (--distill_calls); consistency: consistency distillation (Song et al. "
        "2023, in DDPM time as LCM), a student that samples with diffusers' LCMScheduler in --consistency_calls "
        "calls, trained for --max_train_steps (default 2000)",
        "distillation",
        choices=DISTILL_METHODS,
    )
    consistency_skip: int = option(
        20,
        "consistency: k, the teacher's DDIM step on its timesteps k - 1, 2k - 1, ..., T - 1 (T / k points; k must "
        "divide T); the student's LCMScheduler samples on them",
        "distillation",
        at_least=1,
    )
    consistency_target_decay: float = option(
        0.95, "consistency: the target network's decay, an EMA of the student", "distillation", at_least=0, below=1
    )
    consistency_calls: int = option(
        4, "consistency: the calls the saved student and the run's grids sample in", "distillation", at_least=1
    )
    consistency_huber_c: float | None = option(
        None, "consistency: the pseudo-Huber loss's c (default: 0.001 sqrt(values per image))", "distillation", above=0
    )
    distill_guidance: tuple[float, float] | None = option(
        None,
        "consistency: distil classifier-free guidance in (Meng et al. 2023; LCM): the student reads the guidance "
        "scale w as an input, drawn uniformly in LOW,HIGH for each example, and learns the teacher's guided step, so "
        "a guided image costs one UNet call per step, not two (e.g. 1,5; a text model's teacher)",
        "distillation",
        parse=parse_guidance_range,
    )


@dataclass(frozen=True)
class AutoencoderOptions:
    """The objective of an autoencoder run (`--pipeline` an `AutoencoderKL` configuration; `training.autoencoder`)."""

    reconstruction_loss: str = option(
        "l1",
        "an autoencoder's reconstruction loss per pixel: l1 (|x - x_hat|) or l2 (squared)",
        "autoencoder",
        choices=("l1", "l2"),
    )
    kl_weight: float = option(
        1e-6,
        "an autoencoder: the weight of KL(q(z | x) || N(0, I)) per pixel, beside the reconstruction loss per pixel "
        "(CompVis' ratio; small, so that the latents keep the detail)",
        "autoencoder",
        at_least=0,
    )
    ssim_weight: float = option(
        0.0,
        "an autoencoder: the weight of 1 - SSIM (Gaussian window 11, sigma 1.5) in the loss (0: off)",
        "autoencoder",
        at_least=0,
    )
    disc_weight: float = option(
        0.0,
        "an autoencoder: the weight of a patch discriminator's hinge loss on the reconstructions (PatchGAN, Isola et "
        "al. 2017, as CompVis' autoencoders; 0: no discriminator)",
        "autoencoder",
        at_least=0,
    )
    disc_start: int = option(
        0,
        "an autoencoder with --disc_weight: optimizer steps on reconstruction alone before the discriminator trains "
        "and its loss counts",
        "autoencoder",
        at_least=0,
    )
