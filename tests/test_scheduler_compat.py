"""
Every configuration diffusers' `DDPMScheduler` saves loads into DDPMHubScheduler and steps as diffusers steps it:
the six variance types, the keys besides, `_get_variance`; and the configurations refused on purpose, with what
diffusers does with them (docs/from-diffusers.md, "The scheduler against diffusers' DDPMScheduler").
"""

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler

from ddpm_hub import DDPMHubPipeline, DDPMHubScheduler
from ddpm_hub.pipelines import Source

ALL_VARIANCE_TYPES = ["fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"]
LEARNED = ("learned", "learned_range")
# (config besides the variance type, steps): the full 1000-step chain, and a respaced cosine v-prediction one
BASES = [
    (dict(), None),
    (dict(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", clip_sample=False), 25),
]


def fake_model(x: torch.Tensor, t, variance_type: str) -> torch.Tensor:
    """
    A deterministic stand-in for a UNet, 2C channels for a learned variance: v in [-1, 1] for `learned_range`, a
    positive variance for `learned` (which diffusers takes as the variance itself), between beta-tilde and beta.
    """
    prediction = torch.tanh(0.7 * x + 0.001 * float(t))
    if variance_type == "learned_range":
        return torch.cat([prediction, torch.tanh(x.mean(dim=1, keepdim=True) - 0.3).expand_as(x)], dim=1)
    if variance_type == "learned":
        return torch.cat([prediction, 1e-4 + 0.01 * torch.sigmoid(x)], dim=1)
    return prediction


def run_chain(scheduler, variance_type: str, steps=None, seed: int = 0) -> torch.Tensor:
    if steps is not None:
        scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    for t in scheduler.timesteps:
        x = scheduler.step(fake_model(x, t, variance_type), t, x, generator=generator).prev_sample
    return x


def user_config(scheduler) -> dict:
    return {key: value for key, value in scheduler.config.items() if not key.startswith("_")}


@pytest.mark.parametrize("base,steps", BASES, ids=["full-chain", "cosine-v-25-steps"])
@pytest.mark.parametrize("variance_type", ALL_VARIANCE_TYPES)
def test_a_config_diffusers_saves_loads_and_its_chain_steps_as_diffusers(variance_type, base, steps, tmp_path):
    DDPMScheduler(variance_type=variance_type, **base).save_config(tmp_path)
    ours = DDPMHubScheduler.from_pretrained(tmp_path)
    from_config = DDPMHubScheduler.from_config(DDPMScheduler.load_config(tmp_path))
    ref = DDPMScheduler.from_pretrained(tmp_path)
    assert user_config(ours) == user_config(from_config) == user_config(ref)
    assert ours.config.variance_type == variance_type
    if variance_type == "fixed_large_log":
        # diffusers' own step takes the square root of log beta_t < 0: NaN. If this fails, diffusers fixed it:
        # compare with its fixed_large_log step again (and update docs/from-diffusers.md).
        assert run_chain(ref, variance_type, steps).isnan().all()
        ref = DDPMScheduler.from_pretrained(tmp_path, variance_type="fixed_large")
    expected = run_chain(ref, variance_type, steps)
    assert torch.isfinite(expected).all()
    torch.testing.assert_close(run_chain(ours, variance_type, steps), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(run_chain(from_config, variance_type, steps), expected, rtol=0, atol=1e-6)


def test_the_six_variance_types_step_differently_where_diffusers_does():
    """The comparison above can tell the types apart: only the `_log` types share their plain type's chain."""
    chains = {v: run_chain(DDPMHubScheduler(variance_type=v), v, steps=50) for v in ALL_VARIANCE_TYPES}
    torch.testing.assert_close(chains["fixed_small_log"], chains["fixed_small"], rtol=0, atol=1e-6)
    torch.testing.assert_close(chains["fixed_large_log"], chains["fixed_large"], rtol=0, atol=1e-6)
    distinct = ["fixed_small", "fixed_large", "learned", "learned_range"]
    for i, a in enumerate(distinct):
        for b in distinct[i + 1 :]:
            assert (chains[a] - chains[b]).abs().max() > 1e-2, (a, b)


@pytest.mark.parametrize("variance_type", ALL_VARIANCE_TYPES)
def test_get_variance_is_diffusers_value_for_value(variance_type):
    """diffusers' `_get_variance`: a variance, a std (fixed_small_log) or a log-variance, by type; every t."""
    ours, ref = DDPMHubScheduler(variance_type=variance_type), DDPMScheduler(variance_type=variance_type)
    generator = torch.Generator().manual_seed(0)
    v = torch.rand(2, 3, 1, 1, generator=generator) * 2 - 1  # learned_range: v in [-1, 1]
    variance = torch.rand(2, 3, 1, 1, generator=generator) * 0.02 + 1e-4  # learned: the variance itself
    predicted = variance if variance_type == "learned" else v
    for t in [999, 500, 10, 1, 0]:
        expected = ref._get_variance(t, predicted_variance=predicted)
        torch.testing.assert_close(ours._get_variance(t, predicted), expected, rtol=1e-6, atol=0)
        for other in ALL_VARIANCE_TYPES:  # the variance_type argument overrides the config's, as in diffusers
            other_predicted = variance if other == "learned" else v
            torch.testing.assert_close(
                ours._get_variance(t, other_predicted, variance_type=other),
                ref._get_variance(t, predicted_variance=other_predicted, variance_type=other),
                rtol=1e-6,
                atol=0,
            )
    ours.set_timesteps(10)
    ref.set_timesteps(10)
    for t in ours.timesteps.tolist():  # on a respaced chain: the respaced betas
        expected = ref._get_variance(t, predicted_variance=predicted)
        torch.testing.assert_close(ours._get_variance(t, predicted), expected, rtol=1e-6, atol=0)


def test_get_variance_returns_what_its_type_names():
    """Not the same quantity for every type: variance, std, log-variance (diffusers' semantics, kept)."""
    scheduler = DDPMHubScheduler()
    t = 500
    small, large = scheduler._get_variance(t), scheduler._get_variance(t, variance_type="fixed_large")
    assert small.item() == pytest.approx(scheduler.model_variance(t, None, torch.zeros(1, 1, 1, 1))[0].item())
    assert scheduler._get_variance(t, variance_type="fixed_small_log").item() == pytest.approx(small.sqrt().item())
    assert scheduler._get_variance(t, variance_type="fixed_large_log").item() == pytest.approx(large.log().item())
    ones = torch.ones(1, 1, 1, 1)
    assert scheduler._get_variance(t, ones, variance_type="learned_range").item() == pytest.approx(large.log().item())
    assert scheduler._get_variance(t, 0.5 * ones, variance_type="learned").item() == 0.5
    with pytest.raises(ValueError, match="variance_type='learned_range' needs the model's predicted_variance"):
        scheduler._get_variance(t, variance_type="learned_range")
    with pytest.raises(
        ValueError, match="valid choices are: fixed_small, fixed_large, learned_range, fixed_small_log"
    ):
        scheduler._get_variance(t, variance_type="large")


@pytest.mark.parametrize(
    "config,steps",
    [
        (dict(clip_sample_range=2.0, prediction_type="sample", timestep_spacing="linspace"), 10),
        (
            dict(
                thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=1.5, prediction_type="v_prediction"
            ),
            20,
        ),
        (dict(steps_offset=1, variance_type="fixed_small_log"), 10),
        (dict(timestep_spacing="trailing", clip_sample=False), 8),
        (dict(beta_schedule="laplace", variance_type="fixed_large"), 20),
        (dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="v_prediction"), 20),
        (dict(beta_schedule="sigmoid", variance_type="fixed_small_log"), None),
        (dict(rescale_betas_zero_snr=True, prediction_type="v_prediction", timestep_spacing="trailing"), 10),
        (
            dict(num_train_timesteps=100, trained_betas=np.linspace(1e-3, 0.2, 100).tolist(), variance_type="learned"),
            10,
        ),
    ],
    ids=str,
)
def test_the_other_keys_diffusers_saves_load_and_step_as_diffusers(config, steps, tmp_path):
    """
    Chains that end above t = 0 (trailing, steps_offset=1) use fixed_small(_log): there the noise diffusers adds on
    the last step has std 1e-10 (test_scheduler.py shows the fixed_large case, where it is the whole beta_t).
    """
    DDPMScheduler(**config).save_config(tmp_path)
    ours, ref = DDPMHubScheduler.from_pretrained(tmp_path), DDPMScheduler.from_pretrained(tmp_path)
    assert user_config(ours) == user_config(ref)
    torch.testing.assert_close(ours.alphas_cumprod, ref.alphas_cumprod, rtol=0, atol=0)
    variance_type = config.get("variance_type", "fixed_small")
    expected = run_chain(ref, variance_type, steps)
    assert torch.isfinite(expected).all()
    torch.testing.assert_close(run_chain(ours, variance_type, steps), expected, rtol=0, atol=1e-6)


def test_a_learned_variance_needs_2c_channels_where_diffusers_fails_with_a_type_error():
    ref = DDPMScheduler(variance_type="learned")
    with pytest.raises(TypeError):  # its _get_variance returns None, then None ** 0.5
        ref.step(torch.zeros(1, 3, 2, 2), 10, torch.zeros(1, 3, 2, 2))
    ours = DDPMHubScheduler(variance_type="learned")
    with pytest.raises(ValueError, match="variance_type='learned' needs a model with 2 x 3 = 6 output channels"):
        ours.step(torch.zeros(1, 3, 2, 2), 10, torch.zeros(1, 3, 2, 2))


# ----------------------------------------------------------------------------------------------------------------
# Refused on purpose: what diffusers does with each, measured, and our message.


def diffusers_chain_is_nan(**config) -> bool:
    return bool(run_chain(DDPMScheduler(**config), config.get("variance_type", "fixed_small")).isnan().any())


@pytest.mark.parametrize(
    "betas,what",
    [
        ([0.01] * 999 + [1.2], "min 0.01, max 1.2"),
        ([0.0] + [0.01] * 999, "min 0, max 0.01"),
        ([-0.01] + [0.01] * 999, "min -0.01, max 0.01"),
    ],
    ids=["above-1", "zero-at-t0", "negative"],
)
def test_betas_outside_0_1_are_refused_where_diffusers_returns_nan(betas, what):
    assert diffusers_chain_is_nan(trained_betas=betas)
    with pytest.raises(ValueError, match=rf"every beta must lie in \(0, 1\]; got {what}.*its chains return NaN"):
        DDPMHubScheduler(trained_betas=betas)


def test_a_schedule_that_reaches_betas_above_1_is_refused():
    assert diffusers_chain_is_nan(beta_end=1.5)
    with pytest.raises(ValueError, match=r"every beta must lie in \(0, 1\]; got min 0.0001, max 1.5"):
        DDPMHubScheduler(beta_end=1.5)
    DDPMHubScheduler(trained_betas=[0.01] * 999 + [1.0])  # a beta of exactly 1 (alpha-bar_T = 0) is a valid chain


def test_trained_betas_of_another_length_are_refused_naming_the_fix():
    few = np.linspace(1e-4, 0.02, 10).tolist()
    ref = DDPMScheduler(trained_betas=few)  # keeps num_train_timesteps=1000 and its 1000-step chain
    assert ref.config.num_train_timesteps == 1000 and len(ref.alphas_cumprod) == 10
    with pytest.raises(IndexError):
        run_chain(ref, "fixed_small")
    many = DDPMScheduler(trained_betas=np.linspace(1e-4, 0.02, 2000).tolist())
    assert len(many.alphas_cumprod) == 2000 and many.timesteps.max() == 999  # the last 1000 betas never used
    for betas in (few, np.linspace(1e-4, 0.02, 2000).tolist()):
        with pytest.raises(
            ValueError,
            match=rf"has {len(betas)} values but num_train_timesteps=1000.*"
            rf"pass num_train_timesteps={len(betas)}",
        ):
            DDPMHubScheduler(trained_betas=betas)
    ours = DDPMHubScheduler(trained_betas=few, num_train_timesteps=10)  # what the message says works
    torch.testing.assert_close(
        ours.alphas_cumprod, DDPMScheduler(trained_betas=few, num_train_timesteps=10).alphas_cumprod
    )
    with pytest.raises(ValueError, match=r"flat list of betas, got shape \(2, 5\)"):
        DDPMHubScheduler(trained_betas=[few[:5], few[5:]], num_train_timesteps=10)


def test_zero_terminal_snr_with_epsilon_is_refused_where_diffusers_returns_a_sign_image_or_nan():
    ref = DDPMScheduler(rescale_betas_zero_snr=True)
    x_T = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    first = ref.step(torch.tanh(x_T), 999, x_T, generator=torch.Generator().manual_seed(0))
    assert set(first.pred_original_sample.unique().tolist()) <= {-1.0, 1.0}  # (x_T - eps) / 0, clipped
    assert diffusers_chain_is_nan(rescale_betas_zero_snr=True, clip_sample=False)
    with pytest.raises(ValueError, match=r"alpha-bar_T = 0.*Use prediction_type='v_prediction' or 'sample'"):
        DDPMHubScheduler(rescale_betas_zero_snr=True)


# ----------------------------------------------------------------------------------------------------------------
# Pipelines: a diffusers DDPMPipeline with diffusers' other variance types loads with DDPMHubScheduler.


@pytest.mark.parametrize(
    "variance_type,reference_type", [("fixed_small_log", None), ("fixed_large_log", "fixed_large")]
)
def test_a_diffusers_pipeline_with_a_log_variance_type_loads_with_ddpm_hub_scheduler(
    variance_type, reference_type, tmp_path
):
    unet = Source.of("ddpm-tiny-8").build(seed=0).unet
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(variance_type=variance_type)).save_pretrained(tmp_path)
    loaded = DDPMHubPipeline.from_pretrained(tmp_path)
    assert type(loaded.scheduler) is DDPMHubScheduler and loaded.scheduler.config.variance_type == variance_type
    reference = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(variance_type=reference_type or variance_type))
    for pipeline in (loaded, reference):
        pipeline.set_progress_bar_config(disable=True)
    images = [
        p(batch_size=2, num_inference_steps=4, generator=torch.manual_seed(0), output_type="np").images
        for p in (loaded, reference)
    ]
    assert np.isfinite(images[0]).all()
    np.testing.assert_array_equal(*images)


def test_the_likelihood_of_a_log_variance_type_is_its_plain_types():
    """bits/dim reads `model_variance`: fixed_small_log is fixed_small's variance, fixed_large_log fixed_large's."""
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    bits = {}
    for variance_type in ALL_VARIANCE_TYPES[:4]:
        pipeline = Source.of("ddpm-tiny-8").build(seed=0, scheduler_overrides={"variance_type": variance_type})
        likelihood = pipeline.likelihood(images, num_steps=5, generator=torch.Generator().manual_seed(1))
        bits[variance_type] = torch.as_tensor(likelihood.bits_per_dim)
    torch.testing.assert_close(bits["fixed_small_log"], bits["fixed_small"])
    torch.testing.assert_close(bits["fixed_large_log"], bits["fixed_large"])
    assert not torch.allclose(bits["fixed_small"], bits["fixed_large"])
