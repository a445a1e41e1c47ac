"""DDPMHubScheduler: parity with diffusers' DDPMScheduler, the papers' closed forms, and bad-option errors."""

import itertools
import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

from ddpm_hub import DDPMHubScheduler

SCHEDULES = ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"]
VARIANCES = ["fixed_small", "fixed_large", "learned_range"]
PREDICTIONS = ["epsilon", "sample", "v_prediction"]
ALL_CONFIGS = [
    dict(beta_schedule=b, variance_type=v, prediction_type=p)
    for b, v, p in itertools.product(SCHEDULES, VARIANCES, PREDICTIONS)
]
FLAG_CONFIGS = [
    dict(clip_sample=False),
    dict(thresholding=True, sample_max_value=1.5, prediction_type="sample"),
    dict(clip_sample_range=0.5),
    dict(rescale_betas_zero_snr=True, prediction_type="v_prediction"),
    dict(timestep_spacing="linspace"),
    dict(timestep_spacing="trailing"),
    dict(steps_offset=1),
    dict(trained_betas=torch.linspace(1e-4, 0.02, 1000).tolist()),
]


def pair(**config):
    return DDPMHubScheduler(**config), DDPMScheduler(**config)


def fake_model(x: torch.Tensor, t, channels: int) -> torch.Tensor:
    """A deterministic stand-in for a UNet: depends on x and t, bounded (so learned variances stay in [-1, 1])."""
    out = torch.tanh(0.7 * x + 0.001 * float(t))
    return torch.cat([out, torch.tanh(x.mean(dim=1, keepdim=True) - 0.3).expand_as(out)], dim=1)[:, :channels]


def run_chain(scheduler, x_T, channels, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = x_T.clone()
    for t in scheduler.timesteps:
        x = scheduler.step(fake_model(x, t, channels), t, x, generator=generator).prev_sample
    return x


def out_channels(config):
    return 6 if config.get("variance_type") == "learned_range" else 3


@pytest.mark.parametrize("config", ALL_CONFIGS + FLAG_CONFIGS, ids=str)
def test_schedule_forward_process_and_one_step_match_diffusers(config):
    ours, ref = pair(**config)
    torch.testing.assert_close(ours.betas, ref.betas, rtol=0, atol=0)
    torch.testing.assert_close(ours.alphas_cumprod, ref.alphas_cumprod, rtol=0, atol=0)
    x_0, noise = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)).chunk(2)
    t = torch.tensor([0, 999])
    torch.testing.assert_close(ours.add_noise(x_0, noise, t), ref.add_noise(x_0, noise, t), rtol=0, atol=1e-6)
    torch.testing.assert_close(ours.get_velocity(x_0, noise, t), ref.get_velocity(x_0, noise, t), rtol=0, atol=1e-6)
    for step_t in [999, 500, 1]:
        output = fake_model(x_0, step_t, out_channels(config))
        a = ours.step(output, step_t, x_0, generator=torch.Generator().manual_seed(2))
        b = ref.step(output, step_t, x_0, generator=torch.Generator().manual_seed(2))
        torch.testing.assert_close(a.prev_sample, b.prev_sample, rtol=0, atol=1e-6)
        torch.testing.assert_close(a.pred_original_sample, b.pred_original_sample, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "config", [c for c in ALL_CONFIGS if c["beta_schedule"] in ("linear", "squaredcos_cap_v2")], ids=str
)
def test_posterior_and_model_variance_match_diffusers(config):
    ours, ref = pair(**config)
    for t in [1, 10, 500, 999]:
        predicted = torch.full((1, 3, 1, 1), 0.3)
        variance, log_variance = ours.model_variance(t, predicted, predicted)
        expected = ref._get_variance(t, predicted_variance=predicted)
        if config["variance_type"] == "learned_range":  # diffusers returns the log-variance for learned_range
            torch.testing.assert_close(log_variance, expected.expand_as(log_variance), rtol=1e-6, atol=1e-6)
        else:
            torch.testing.assert_close(variance.flatten()[0], expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    "config,steps",
    [
        (dict(), None),
        (dict(beta_schedule="squaredcos_cap_v2", variance_type="fixed_large"), None),
        (dict(variance_type="learned_range", prediction_type="v_prediction"), None),
        (dict(), 250),
        (dict(beta_schedule="squaredcos_cap_v2", variance_type="learned_range"), 50),
        (dict(timestep_spacing="linspace", prediction_type="sample"), 50),
        (dict(timestep_spacing="trailing"), 7),
        (dict(), [999, 700, 300, 120, 5, 0]),
    ],
    ids=str,
)
def test_full_and_respaced_chains_match_diffusers(config, steps):
    ours, ref = pair(**config)
    if isinstance(steps, list):
        ours.set_timesteps(timesteps=steps)
        ref.set_timesteps(timesteps=steps)
    elif steps is not None:
        ours.set_timesteps(steps)
        ref.set_timesteps(steps)
    torch.testing.assert_close(ours.timesteps, ref.timesteps)
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    channels = out_channels(config)
    torch.testing.assert_close(run_chain(ours, x_T, channels), run_chain(ref, x_T, channels), rtol=0, atol=1e-6)


def test_cosine_schedule_matches_improved_ddpm_closed_form():
    """alpha-bar_t = f(t) / f(0), f(t) = cos((t/T + s) / (1 + s) * pi / 2)^2, s = 0.008 (iDDPM eq. 17)."""
    T, s = 1000, 0.008
    scheduler = DDPMHubScheduler(beta_schedule="cosine")
    assert scheduler.config.beta_schedule == "squaredcos_cap_v2"  # stored under diffusers' name

    def f(t):
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    for index in [0, 1, 99, 499, 899]:  # our 0-based index i is the paper's t = i + 1
        assert scheduler.alphas_cumprod[index].item() == pytest.approx(f(index + 1) / f(0), rel=1e-5)
    assert scheduler.betas.max().item() == pytest.approx(0.999)  # the cap binds at the very end
    assert scheduler.betas[0].item() == pytest.approx(1 - f(1) / f(0), rel=1e-5)


def test_linear_schedule_is_the_papers():
    scheduler = DDPMHubScheduler()
    assert scheduler.betas[0].item() == pytest.approx(1e-4)
    assert scheduler.betas[-1].item() == pytest.approx(0.02)
    # alpha-bar_T is ~4e-5: x_T is almost pure noise (DDPM section 4)
    assert scheduler.alphas_cumprod[-1].item() == pytest.approx(
        math.prod(1 - b for b in scheduler.betas.tolist()), rel=1e-4
    )
    assert scheduler.alphas_cumprod[-1].item() < 1e-4


def test_learned_range_interpolates_between_beta_tilde_and_beta():
    """iDDPM eq. 15: v = 1 gives beta_t, v = -1 gives beta-tilde_t, v = 0 their geometric mean."""
    scheduler = DDPMHubScheduler(variance_type="learned_range")
    t = 300
    beta = scheduler.betas[t].item()
    ab, ab_prev = scheduler.alphas_cumprod[t].item(), scheduler.alphas_cumprod[t - 1].item()
    beta_tilde = (1 - ab_prev) / (1 - ab) * beta
    like = torch.zeros(1, 1, 1, 1)
    for v, expected in [(1.0, beta), (-1.0, beta_tilde), (0.0, math.sqrt(beta * beta_tilde))]:
        variance, _ = scheduler.model_variance(t, torch.full((1, 1, 1, 1), v), like)
        assert variance.item() == pytest.approx(expected, rel=1e-4)  # float32 schedule arithmetic


def test_fixed_large_uses_beta_tilde_1_at_the_last_step():
    scheduler = DDPMHubScheduler(variance_type="fixed_large")
    like = torch.zeros(1, 1, 1, 1)
    # beta_t is recovered as 1 - alpha-bar_t / alpha-bar_{t-1} (the respacing formula, as diffusers does): in float32
    # that costs ~2e-4 relative precision at small t.
    assert scheduler.model_variance(5, None, like)[0].item() == pytest.approx(scheduler.betas[5].item(), rel=1e-3)
    beta_0, beta_1 = scheduler.betas[0].item(), scheduler.betas[1].item()
    beta_tilde_1 = beta_0 / (1 - (1 - beta_0) * (1 - beta_1)) * beta_1  # (1 - ab_0) / (1 - ab_1) * beta_1
    # 1 - alpha-bar_0 = 1e-4 is computed from float32 alpha-bar: 6e-4 relative error from cancellation.
    assert scheduler.model_variance(0, None, like)[0].item() == pytest.approx(beta_tilde_1, rel=1e-3)


def test_respaced_chain_recomputes_betas_from_alpha_bar():
    """On a respaced chain, beta'_t = 1 - ab_t / ab_t' and the posterior is eqs. 6-7 with those betas."""
    scheduler = DDPMHubScheduler()
    scheduler.set_timesteps(50)
    chain = scheduler.timesteps.tolist()
    assert len(chain) == 50 and chain[0] == 980 and chain[-1] == 0
    x_0, x_t = torch.randn(2, 1, 3, 3, generator=torch.Generator().manual_seed(0)).chunk(2)
    t, t_prev = chain[10], chain[11]
    ab, ab_prev = scheduler.alphas_cumprod[t].double(), scheduler.alphas_cumprod[t_prev].double()
    beta = 1 - ab / ab_prev
    mean, variance, _ = scheduler.q_posterior_mean_variance(x_0.double(), x_t.double(), t)
    expected_mean = (
        ab_prev.sqrt() * beta / (1 - ab) * x_0.double() + (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab) * x_t
    )
    torch.testing.assert_close(mean, expected_mean)
    assert variance.item() == pytest.approx(((1 - ab_prev) / (1 - ab) * beta).item(), rel=1e-6)
    assert int(scheduler.previous_timestep(t)) == t_prev


def gaussian_data_oracle(scheduler, mu: float, sigma: float):
    """The exact epsilon-predictor for data x_0 ~ N(mu, sigma^2) per pixel: E[eps | x_t] in closed form."""

    def model(x_t, t):
        ab = scheduler.alphas_cumprod[int(t)]
        return (1 - ab).sqrt() * (x_t - ab.sqrt() * mu) / (ab * sigma**2 + 1 - ab)

    return model


@pytest.mark.parametrize(
    "scheduler_class,steps",
    [
        (DDPMHubScheduler, 1000),
        (DDPMHubScheduler, 50),
        (DDIMScheduler, 50),
        (DPMSolverMultistepScheduler, 20),
        (UniPCMultistepScheduler, 20),
    ],
)
def test_samplers_with_the_exact_model_reproduce_the_data_distribution(scheduler_class, steps):
    """
    Gaussian data has a closed-form denoiser; every sampler built from our config must recover N(mu, sigma^2). The
    deterministic samplers converge to sigma from below as steps grow (0.29 at these step counts, 0.24-0.27 at 10).
    """
    mu, sigma = 0.2, 0.3
    ours = DDPMHubScheduler(beta_schedule="cosine", clip_sample=False)
    scheduler = ours if scheduler_class is DDPMHubScheduler else scheduler_class.from_config(ours.config)
    torch.testing.assert_close(scheduler.alphas_cumprod, ours.alphas_cumprod)
    model = gaussian_data_oracle(ours, mu, sigma)
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, 64, 64, generator=generator) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        kwargs = {"generator": generator} if scheduler_class in (DDPMHubScheduler, DDIMScheduler) else {}
        x = scheduler.step(model(scheduler.scale_model_input(x, t), t), t, x, **kwargs).prev_sample
    assert x.mean().item() == pytest.approx(mu, abs=0.03)
    assert x.std().item() == pytest.approx(sigma, abs=0.03)


def test_from_diffusers_ddpm_config_and_back():
    ref = DDPMScheduler(beta_schedule="squaredcos_cap_v2", variance_type="fixed_large", prediction_type="v_prediction")
    ours = DDPMHubScheduler.from_config(ref.config)
    assert ours.config.variance_type == "fixed_large" and ours.config.prediction_type == "v_prediction"
    torch.testing.assert_close(ours.alphas_cumprod, ref.alphas_cumprod)
    back = DDPMScheduler.from_config(ours.config)
    torch.testing.assert_close(back.alphas_cumprod, ref.alphas_cumprod)
    assert set(DDPMHubScheduler().compatibles) >= {DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler}


def test_save_and_load_config(tmp_path):
    scheduler = DDPMHubScheduler(beta_schedule="cosine", variance_type="learned_range", thresholding=True)
    scheduler.save_pretrained(tmp_path)
    loaded = DDPMHubScheduler.from_pretrained(tmp_path)
    assert {k: v for k, v in loaded.config.items() if not k.startswith("_")} == {
        k: v for k, v in scheduler.config.items() if not k.startswith("_")
    }
    torch.testing.assert_close(loaded.alphas_cumprod, scheduler.alphas_cumprod)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(beta_schedule="quadratic"), "valid choices are: linear, scaled_linear, cosine, sigmoid"),
        (dict(prediction_type="noise"), "valid choices are: epsilon, sample, v_prediction"),
        (
            dict(variance_type="learnt"),
            "valid choices are: fixed_small, fixed_large, learned_range, fixed_small_log, fixed_large_log, learned",
        ),
        (dict(timestep_spacing="even"), "valid choices are: leading, linspace, trailing"),
        (dict(num_train_timesteps=0), "positive integer"),
        (dict(rescale_betas_zero_snr=True), "v_prediction"),
        (dict(trained_betas=[0.1, 0.2]), "num_train_timesteps=1000"),
        (dict(beta_end=1.5), "(0, 1]"),
    ],
)
def test_bad_options_are_rejected_with_the_valid_ones(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("]", r"\]")):
        DDPMHubScheduler(**kwargs)


def test_bad_chains_are_rejected():
    scheduler = DDPMHubScheduler(num_train_timesteps=100)
    with pytest.raises(ValueError, match="between 1 and num_train_timesteps=100"):
        scheduler.set_timesteps(101)
    with pytest.raises(ValueError, match="strictly descending"):
        scheduler.set_timesteps(timesteps=[50, 60, 0])
    with pytest.raises(ValueError, match=r"\[0, 99\]"):
        scheduler.set_timesteps(timesteps=[100, 0])
    with pytest.raises(ValueError, match="exactly one"):
        scheduler.set_timesteps(10, timesteps=[5, 0])
    scheduler.set_timesteps(10)
    with pytest.raises(ValueError, match="not on the current chain"):
        scheduler.step(torch.zeros(1, 1, 2, 2), 55, torch.zeros(1, 1, 2, 2))


def test_output_channel_mismatch_is_explained():
    learned = DDPMHubScheduler(variance_type="learned_range")
    with pytest.raises(ValueError, match="2 x 3 = 6 output channels"):
        learned.step(torch.zeros(1, 3, 2, 2), 10, torch.zeros(1, 3, 2, 2))
    fixed = DDPMHubScheduler()
    with pytest.raises(ValueError, match="learned_range"):
        fixed.step(torch.zeros(1, 6, 2, 2), 10, torch.zeros(1, 3, 2, 2))


def test_last_step_adds_no_noise_and_others_do():
    scheduler = DDPMHubScheduler(variance_type="fixed_large")
    scheduler.set_timesteps(10)
    x, out = torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    first, last = scheduler.timesteps[0], scheduler.timesteps[-1]
    a = scheduler.step(out, last, x, generator=torch.Generator().manual_seed(0)).prev_sample
    b = scheduler.step(out, last, x, generator=torch.Generator().manual_seed(1)).prev_sample
    assert torch.equal(a, b)
    c = scheduler.step(out, first, x, generator=torch.Generator().manual_seed(0)).prev_sample
    d = scheduler.step(out, first, x, generator=torch.Generator().manual_seed(1)).prev_sample
    assert not torch.equal(c, d)


def test_a_chain_ending_above_zero_adds_no_noise_on_its_last_step():
    """
    A trailing 7-step chain ends at t=142. Its last step goes to x_0 (alpha-bar = 1), where the posterior variance is
    0. diffusers' DDPMScheduler adds noise whenever t > 0, so with fixed_large it adds N(0, 1 - alpha-bar_142) to the
    final image; we add none (Algorithm 2: z = 0 on the last step). Everything before the last step agrees.
    """
    ours, ref = pair(timestep_spacing="trailing", variance_type="fixed_large")
    ours.set_timesteps(7)
    ref.set_timesteps(7)
    assert ours.timesteps[-1].item() == 142
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    ours_x0 = run_chain(ours, x_T, 3)
    ref_x0 = run_chain(ref, x_T, 3)
    ref_generator = torch.Generator().manual_seed(0)
    x = x_T.clone()
    for t in ref.timesteps[:-1]:
        x = ref.step(fake_model(x, t, 3), t, x, generator=ref_generator).prev_sample
    last = ref.timesteps[-1]
    ref_mean = ref.step(fake_model(x, last, 3), last, x, generator=ref_generator).pred_original_sample
    torch.testing.assert_close(ours_x0, ours.step(fake_model(x, last, 3), last, x).prev_sample)
    torch.testing.assert_close(ours_x0, ref_mean, rtol=0, atol=1e-6)  # the mean is x_0-hat on the last step
    assert (ours_x0 - ref_x0).abs().max() > 0.1
