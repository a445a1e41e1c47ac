"""The variational bound in bits/dim: each term against an independent closed form, the full chain against a direct
re-computation, the strided bound against the full chain where theory says they agree, and `ddpm-hub eval --bpd`."""

import json
import math

import pytest
import torch
from diffusers import DDIMScheduler, ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.unets.unet_2d import UNet2DOutput

from ddpm_hub import DDPMHubPipeline, DDPMHubScheduler, cli
from ddpm_hub.evaluation.likelihood import (
    bits_per_dim,
    likelihood_scheduler,
    likelihood_timesteps,
    stratified_timesteps,
    stratum_edges,
    write_likelihood_report,
)
from ddpm_hub.losses import discretized_gaussian_log_likelihood, prior_bits_per_dim, vb_terms_bits_per_dim
from ddpm_hub.pipelines import Source

LN2 = math.log(2.0)
HALF_BIN = 1.0 / 255.0
PREDICTIONS = ["epsilon", "sample", "v_prediction"]


def Phi(z):
    return 0.5 * torch.erfc(-z / math.sqrt(2.0))


def random_images(n, channels=3, size=8, seed=0):
    return torch.randint(0, 256, (n, channels, size, size), generator=torch.Generator().manual_seed(seed)).to(
        torch.uint8
    )


def unit(images):
    return images.double() / 127.5 - 1


def tiny(num_train_timesteps=1000, **scheduler_overrides):
    learned = scheduler_overrides.get("variance_type") == "learned_range"
    return Source.of(
        "ddpm-tiny-8").build(
        seed=0,
        unet_overrides={"out_channels": 6} if learned else None,
        scheduler_overrides={"num_train_timesteps": num_train_timesteps, **scheduler_overrides},
    )


def true_model_output(scheduler, x_0, noise, t):
    """What a perfect model outputs for each prediction type (written out here, not taken from the scheduler)."""
    alpha_bar = scheduler.alphas_cumprod.double()[t].reshape(-1, 1, 1, 1)
    return {
        "epsilon": noise,
        "sample": x_0,
        "v_prediction": alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x_0,
    }[scheduler.config.prediction_type]


# ---------------------------------------------------------------------------------------------------------------------
# Each term against a closed form


def test_prior_term_closed_form_and_limit():
    x_0 = unit(random_images(3))
    scheduler = DDPMHubScheduler()
    alpha_bar = scheduler.alphas_cumprod.double()[-1]
    # KL(N(sqrt(ab) x, 1 - ab) || N(0, 1)) = (ab x^2 - ab - log(1 - ab)) / 2 per dimension
    expected = (alpha_bar * x_0**2 - alpha_bar - torch.log1p(-alpha_bar)).mean(dim=(1, 2, 3)) / 2 / LN2
    torch.testing.assert_close(prior_bits_per_dim(scheduler, x_0), expected, rtol=1e-9, atol=0)
    # alpha-bar_T -> 0: the prior term vanishes (zero terminal SNR makes it exactly 0)
    values = [
        float(prior_bits_per_dim(DDPMHubScheduler(beta_end=end), x_0).max()) for end in (0.005, 0.01, 0.02, 0.04)
    ]
    assert values == sorted(values, reverse=True) and values[-1] < 1e-9
    zero_snr = DDPMHubScheduler(rescale_betas_zero_snr=True, prediction_type="v_prediction")
    assert float(prior_bits_per_dim(zero_snr, x_0).abs().max()) == 0.0


def test_decoder_closed_forms():
    x = unit(torch.tensor([0, 1, 77, 128, 254, 255], dtype=torch.uint8))
    tiny_scale = torch.full_like(x, math.log(1e-6))
    # a pixel exactly at its bin centre with a tiny variance: all the mass in the bin, 0 bits
    bits = -discretized_gaussian_log_likelihood(x, x, tiny_scale) / LN2
    assert float(bits.abs().max()) < 1e-9
    # sigma = half a bin at the centre: P = Phi(1) - Phi(-1) inside, P = Phi(1) in the open edge bins
    scale = torch.full_like(x, math.log(HALF_BIN))
    one = torch.tensor(1.0, dtype=torch.float64)
    inside, edge = Phi(one) - Phi(-one), Phi(one)
    expected = torch.tensor([edge, inside, inside, inside, inside, edge], dtype=torch.float64)
    torch.testing.assert_close(discretized_gaussian_log_likelihood(x, x, scale).exp(), expected, rtol=1e-12, atol=0)
    # the 256 bins partition the real line: their masses sum to 1 for any mean and scale
    grid = unit(torch.arange(256, dtype=torch.uint8))
    for mean, sigma in ((0.3, 0.05), (-0.97, 0.2), (1.4, 0.5)):
        mass = discretized_gaussian_log_likelihood(
            grid, torch.full_like(grid, mean), torch.full_like(grid, math.log(sigma))
        ).exp()
        assert abs(float(mass.sum()) - 1.0) < 1e-9


@pytest.mark.parametrize("num_steps", [None, 10], ids=["full", "strided"])
@pytest.mark.parametrize("prediction_type", PREDICTIONS)
def test_true_posterior_mean_gives_zero_kl_and_closed_form_variance_terms(prediction_type, num_steps):
    """A model that returns the truth: KL = 0 for the posterior variance; the variance mismatch alone otherwise."""
    n = 2
    for variance_type in ("fixed_small", "fixed_large", "learned_range"):
        scheduler = likelihood_scheduler(
            DDPMHubScheduler(variance_type=variance_type, prediction_type=prediction_type), num_steps
        )
        chain = scheduler.timesteps  # [K], descending; every step of the chain at once, n images each
        timesteps = chain.repeat_interleave(n)  # [K*n]
        x_0 = unit(random_images(n)).repeat(len(chain), 1, 1, 1)
        noise = torch.randn(x_0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        x_t = scheduler.add_noise(x_0, noise, timesteps)
        output = true_model_output(scheduler, x_0, noise, timesteps)
        # learned_range: v = +1 (beta) on even chain steps, v = -1 (beta-tilde) on odd ones
        uses_beta = torch.full((len(chain),), variance_type == "fixed_large")
        if variance_type == "learned_range":
            uses_beta = torch.arange(len(chain)) % 2 == 0
            v = (2.0 * uses_beta - 1).double().repeat_interleave(n).reshape(-1, 1, 1, 1)
            output = torch.cat([output, v.expand_as(output)], dim=1)
        terms = vb_terms_bits_per_dim(scheduler, output, x_0, x_t, timesteps).reshape(len(chain), n)

        alpha_bar = scheduler.alphas_cumprod.double()[chain]
        alpha_bar_prev = torch.cat([scheduler.alphas_cumprod.double()[chain[1:]], torch.ones(1, dtype=torch.float64)])
        beta = 1 - alpha_bar / alpha_bar_prev
        beta_tilde = (1 - alpha_bar_prev) / (1 - alpha_bar) * beta
        # KL terms: KL(N(m, bt) || N(m, b)) = (log(b / bt) + bt / b - 1) / 2, and 0 when the variances agree
        kl = 0.5 * (torch.log(beta / beta_tilde) + beta_tilde / beta - 1) / LN2
        expected_kl = torch.where(uses_beta, kl, 0.0)[:-1, None].expand(-1, n)
        torch.testing.assert_close(terms[:-1], expected_kl, rtol=1e-4, atol=1e-9)
        # the decoder at t_0: mean x_0, variance beta-tilde of the step before (also for fixed_large, as in
        # Improved DDPM; beta_0 for learned_range's v = +1); mass in the bin
        # of half-width 1/255 is 2 Phi(z) - 1 inside, Phi(z) in the open edge bins
        variance = beta[-1] if variance_type == "learned_range" and uses_beta[-1] else beta_tilde[-2]
        z = HALF_BIN / variance.sqrt()
        pixels = x_0[-n:]
        mass = torch.where(pixels.abs() == 1, Phi(z), Phi(z) - Phi(-z))
        expected_decoder = -torch.log(mass).mean(dim=(1, 2, 3)) / LN2
        # rtol: the scheduler keeps log beta-tilde in a float32 table (diffusers parity); at t = 1 that is ~1e-4
        # relative in the variance, 5e-5 relative in these bits
        torch.testing.assert_close(terms[-1], expected_decoder, rtol=2e-4, atol=0)


# ---------------------------------------------------------------------------------------------------------------------
# The full chain against a direct re-computation


def direct_bound(pipeline, images, seed):
    """improved-diffusion's calc_bpd_loop written out with the DDPM formulas, one UNet call per timestep."""
    scheduler = pipeline.scheduler
    config = scheduler.config
    alpha_bars = scheduler.alphas_cumprod.double()
    x_0 = unit(images)
    generator = torch.Generator().manual_seed(seed)

    def step_values(t):
        alpha_bar = alpha_bars[t]
        alpha_bar_prev = alpha_bars[t - 1] if t > 0 else torch.tensor(1.0, dtype=torch.float64)
        beta = 1 - alpha_bar / alpha_bar_prev
        return alpha_bar, alpha_bar_prev, beta, (1 - alpha_bar_prev) / (1 - alpha_bar) * beta

    total = torch.zeros(len(images), dtype=torch.float64)
    for t in range(config.num_train_timesteps - 1, -1, -1):
        noise = torch.randn(x_0.shape, generator=generator, dtype=torch.float64)  # the documented noise order
        alpha_bar, alpha_bar_prev, beta, beta_tilde = step_values(t)
        x_t = alpha_bar.sqrt() * x_0 + (1 - alpha_bar).sqrt() * noise
        out = pipeline.unet(x_t.float(), torch.full((len(images),), t)).sample.double()
        out, v = out[:, :3], out[:, 3:]
        pred_x0 = {
            "epsilon": (x_t - (1 - alpha_bar).sqrt() * out) / alpha_bar.sqrt(),
            "sample": out,
            "v_prediction": alpha_bar.sqrt() * x_t - (1 - alpha_bar).sqrt() * out,
        }[config.prediction_type].clamp(-1, 1)

        def posterior_mean(x0, alpha_bar=alpha_bar, alpha_bar_prev=alpha_bar_prev, beta=beta, x_t=x_t):
            return (alpha_bar_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - alpha_bar_prev) * x_t) / (
                1 - alpha_bar
            )

        log_small = torch.log(step_values(1)[3] if t == 0 else beta_tilde)
        log_large = log_small if t == 0 else torch.log(beta)
        log_variance = {
            "fixed_small": log_small,
            "fixed_large": log_large,
            "learned_range": (v + 1) / 2 * torch.log(beta) + (1 - v) / 2 * log_small,
        }[config.variance_type]
        mean = posterior_mean(pred_x0)
        if t > 0:
            kl = 0.5 * (
                log_variance - log_small + torch.exp(log_small - log_variance)
                + (posterior_mean(x_0) - mean) ** 2 * torch.exp(-log_variance) - 1
            )  # fmt: skip
            total += kl.mean(dim=(1, 2, 3)) / LN2
        else:
            sigma = torch.exp(0.5 * log_variance)
            upper = torch.where(x_0 > 1 - HALF_BIN, torch.ones_like(x_0), Phi((x_0 + HALF_BIN - mean) / sigma))
            lower = torch.where(x_0 < -1 + HALF_BIN, torch.zeros_like(x_0), Phi((x_0 - HALF_BIN - mean) / sigma))
            total -= (
                torch.log((upper - lower).clamp(min=1e-12)).mean(dim=(1, 2, 3)) / LN2
            )  # improved-diffusion's floor
    alpha_bar_T = alpha_bars[-1]
    prior = 0.5 * (alpha_bar_T * x_0**2 - alpha_bar_T - torch.log1p(-alpha_bar_T))
    return total + prior.mean(dim=(1, 2, 3)) / LN2


@pytest.mark.parametrize(
    "variance_type, prediction_type",
    [("fixed_small", "epsilon"), ("fixed_large", "sample"), ("learned_range", "v_prediction")],
)
@torch.no_grad()
def test_full_chain_matches_direct_recomputation(variance_type, prediction_type):
    pipeline = tiny(num_train_timesteps=30, variance_type=variance_type, prediction_type=prediction_type)
    images = random_images(3, seed=2)
    result = bits_per_dim(pipeline, images, generator=torch.Generator().manual_seed(5), batch_size=30)
    expected = direct_bound(pipeline, images, seed=5)
    # rtol: beta-tilde comes from the scheduler's float32 log-variance table (~2e-5 relative at T = 30); with that
    # table in float64 the two agree to 1e-15 (checked by hand), so this is the table's rounding, not the bound's
    torch.testing.assert_close(result.bits_per_dim, expected, rtol=1e-4, atol=0)
    assert result.label == "full chain (30 steps)" and result.full_chain
    assert result.terms_bpd.shape == (3, 30) and result.timesteps.tolist() == list(range(30))
    torch.testing.assert_close(result.bits_per_dim, result.prior_bpd + result.terms_bpd.sum(1))


# ---------------------------------------------------------------------------------------------------------------------
# Strided against full, on a model whose answer is known


class GaussianOracle(ModelMixin, ConfigMixin):
    """
    The exact denoiser for pixels i.i.d. N(0, std^2): E[x_0 | x_t] = sqrt(ab) std^2 / (ab std^2 + 1 - ab) x_t, as an
    epsilon prediction; with `learned_variance`, also the exact reverse variance
    Var[x_{t'} | x_t] = beta-tilde + c_0^2 Var[x_0 | x_t] on the chain of `self.chain`, as learned_range's v.
    """

    @register_to_config
    def __init__(self, std: float = 0.25, sample_size: int = 8, in_channels: int = 1, learned_variance: bool = False):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))  # gives the module a dtype/device
        self.chain = None

    def forward(self, x_t, timesteps):
        chain, std2 = self.chain, self.config.std**2
        alpha_bar = chain.alphas_cumprod.double()[timesteps].reshape(-1, 1, 1, 1)
        x0_variance = std2 * (1 - alpha_bar) / (alpha_bar * std2 + 1 - alpha_bar)
        x0 = alpha_bar.sqrt() * std2 / (alpha_bar * std2 + 1 - alpha_bar) * x_t
        epsilon = (x_t - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()
        if not self.config.learned_variance:
            return UNet2DOutput(sample=epsilon)
        prev = chain.previous_timestep(timesteps)
        alpha_bar_prev = torch.where(prev >= 0, chain.alphas_cumprod.double()[prev.clamp(min=0)], 1.0)
        alpha_bar_prev = alpha_bar_prev.reshape(-1, 1, 1, 1)
        beta = 1 - alpha_bar / alpha_bar_prev
        c_0 = alpha_bar_prev.sqrt() * beta / (1 - alpha_bar)
        log_small = chain._log_variance_small(timesteps).double().reshape(-1, 1, 1, 1)
        variance = (1 - alpha_bar_prev) / (1 - alpha_bar) * beta + c_0**2 * x0_variance
        frac = ((variance.log() - log_small) / (beta.log() - log_small)).clamp(0, 1)
        return UNet2DOutput(sample=torch.cat([epsilon, (2 * frac - 1).expand_as(epsilon)], dim=1))


def gaussian_data_nll(images, std):
    """-log2 P(pixel bin) under the discretized N(0, std^2), averaged: what a perfect model would score."""
    x = unit(images)
    upper = torch.where(x > 1 - HALF_BIN, torch.ones_like(x), Phi((x + HALF_BIN) / std))
    lower = torch.where(x < -1 + HALF_BIN, torch.zeros_like(x), Phi((x - HALF_BIN) / std))
    return float(-(upper - lower).log().mean() / LN2)


@pytest.mark.parametrize("variance_type", ["learned_range", "fixed_large", "fixed_small"])
def test_strided_bound_and_sampled_estimate_against_full_chain(variance_type):
    """
    With the exact reverse kernels (Gaussian data, learned_range oracle) every chain's bound is the data's NLL, so
    the strided bound (50 of 1000 steps) and the full chain agree (0.3% here); with fixed_large (the DDPM paper's
    CIFAR-10 choice) too (0.2%). With fixed_small the variance beta-tilde ignores Var[x_0 | x_t], each KL term grows
    like (SNR_{t'} - SNR_t) E[(x_0 - x0_hat)^2] / 2, and long strides near t = 0 cost many bits: the strided bound is
    then a valid but much looser bound (5.8x here), not an estimate of the full chain. The sampled estimate (50 UNet
    calls, stratified) is unbiased for the full chain in every case (within 0.2% here).
    """
    std = 0.25
    images = ((torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * std + 1) * 127.5).round()
    images = images.clamp(0, 255).to(torch.uint8)
    scheduler = DDPMHubScheduler(beta_schedule="linear", variance_type=variance_type)
    oracle = GaussianOracle(std=std, learned_variance=variance_type == "learned_range")
    pipeline = DDPMHubPipeline(unet=oracle, scheduler=scheduler)
    results = {}
    for num_steps, estimator in ((None, "strided"), (50, "strided"), (50, "sampled")):
        oracle.chain = likelihood_scheduler(scheduler, None if estimator == "sampled" else num_steps)
        generator = torch.Generator().manual_seed(1)
        results[num_steps, estimator] = bits_per_dim(
            pipeline, images, num_steps=num_steps, generator=generator, batch_size=4096, estimator=estimator
        )
    full, strided, sampled = (results[key] for key in ((None, "strided"), (50, "strided"), (50, "sampled")))
    assert strided.label == "strided bound (50 of 1000 steps)" and not strided.full_chain
    assert sampled.label == "sampled estimate of the full chain (50 of 1000 steps, stratified)"
    assert sampled.mean() == pytest.approx(full.mean(), rel=0.01)
    assert abs(sampled.mean() - full.mean()) < 3 * math.hypot(sampled.standard_error(), full.standard_error())
    if variance_type == "fixed_small":
        assert full.mean() == pytest.approx(gaussian_data_nll(images, std), rel=0.15)
        assert strided.mean() > 3 * full.mean()
        return
    assert strided.mean() == pytest.approx(full.mean(), rel=0.01)
    assert full.mean() == pytest.approx(gaussian_data_nll(images, std), rel=0.03)


def test_stratified_timesteps_cover_the_chain():
    edges = stratum_edges(1000, 50)
    assert len(edges) == 50 and edges[0] == 1 and edges[-1] == 1000 and (edges[1:] > edges[:-1]).all()
    assert edges[1] - edges[0] < edges[-1] - edges[-2]  # short strata near t = 0
    assert stratum_edges(20, 20).tolist() == list(range(1, 21))
    timesteps, weights, starts = stratified_timesteps(1000, 50, 3, torch.Generator().manual_seed(0))
    assert timesteps.shape == (3, 50) and (timesteps[:, -1] == 0).all() and float(weights.sum()) == 1000
    ends = torch.cat([torch.tensor([1000]), starts[:-1]])  # descending strata [start, end)
    assert ((timesteps >= starts) & (timesteps < ends.clamp(min=1))).all()
    everything, weights, _ = stratified_timesteps(20, 20, 2, torch.Generator().manual_seed(0))
    assert everything.tolist() == [list(range(19, -1, -1))] * 2 and (weights == 1).all()


# ---------------------------------------------------------------------------------------------------------------------
# API behaviour


def test_strided_chain_keeps_both_ends():
    assert likelihood_timesteps(1000).tolist() == list(range(999, -1, -1))
    chain = likelihood_timesteps(1000, 50).tolist()
    assert len(chain) == 50 and chain[0] == 999 and chain[-1] == 0 and chain == sorted(chain, reverse=True)
    for bad in (1, 0, 1001, 2.5):
        with pytest.raises(ValueError, match="num_steps"):
            likelihood_timesteps(1000, bad)


@torch.no_grad()
def test_seeded_batched_and_pipeline_untouched():
    pipeline = tiny(num_train_timesteps=20, variance_type="fixed_large")
    pipeline.scheduler.set_timesteps(7)
    before = pipeline.scheduler.timesteps.clone()
    images = random_images(4, seed=3)

    def run(seed, batch_size, num_steps=None, estimator="strided"):
        generator = torch.Generator().manual_seed(seed)
        return bits_per_dim(pipeline, images, num_steps, generator, batch_size, estimator)

    one_step_per_call, many_steps_per_call = run(0, 4), run(0, 4096)
    torch.testing.assert_close(one_step_per_call.terms_bpd, many_steps_per_call.terms_bpd, rtol=1e-5, atol=1e-7)
    assert torch.equal(run(0, 4096).bits_per_dim, many_steps_per_call.bits_per_dim)
    assert not torch.allclose(run(1, 4096).bits_per_dim, many_steps_per_call.bits_per_dim)
    split = run(0, 3)  # two image batches (3 + 1): same shapes, their own noise
    assert split.terms_bpd.shape == (4, 20) and torch.isfinite(split.bits_per_dim).all()
    strided = run(0, 4096, num_steps=10)
    assert strided.terms_bpd.shape == (4, 10) and strided.timesteps[[0, -1]].tolist() == [0, 19]
    sampled = run(0, 4096, num_steps=6, estimator="sampled")
    torch.testing.assert_close(run(0, 4, 6, "sampled").bits_per_dim, sampled.bits_per_dim, rtol=1e-5, atol=1e-7)
    assert sampled.terms_bpd.shape == (4, 6) and sampled.timesteps.tolist() == [0, *stratum_edges(20, 6)[:-1]]
    assert torch.equal(pipeline.scheduler.timesteps, before) and pipeline.scheduler.num_inference_steps == 7
    modes = []
    pipeline.unet.register_forward_pre_hook(lambda module, _: modes.append(module.training))
    pipeline.unet.train()
    run(0, 4096, num_steps=3)
    assert modes == [False] and pipeline.unet.training  # evaluated without dropout, mode restored


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large", "learned_range"])
@pytest.mark.parametrize("prediction_type", PREDICTIONS)
def test_every_variance_and_prediction_type_gives_a_finite_bound(variance_type, prediction_type):
    pipeline = tiny(num_train_timesteps=20, variance_type=variance_type, prediction_type=prediction_type)
    result = bits_per_dim(pipeline, random_images(2), num_steps=5, generator=torch.Generator().manual_seed(0))
    assert result.bits_per_dim.shape == (2,) and torch.isfinite(result.bits_per_dim).all()
    assert (result.terms_bpd >= -1e-9).all() and (result.bits_per_dim > 0).all()


def test_bad_inputs_are_clear_errors():
    pipeline = tiny(num_train_timesteps=20)
    with pytest.raises(ValueError, match="uint8"):
        bits_per_dim(pipeline, unit(random_images(1)))
    with pytest.raises(ValueError, match=r"\[N x 3 x 8 x 8\]"):
        bits_per_dim(pipeline, random_images(1, channels=1))
    with pytest.raises(ValueError, match="num_steps"):
        bits_per_dim(pipeline, random_images(1), num_steps=21)
    swapped = DDPMHubPipeline(unet=pipeline.unet, scheduler=DDIMScheduler.from_config(pipeline.scheduler.config))
    with pytest.raises(ValueError, match="DDIMScheduler"):
        bits_per_dim(swapped, random_images(1))


def test_report_writes_json_and_plot(tmp_path):
    pipeline = tiny(num_train_timesteps=20)
    result = bits_per_dim(pipeline, random_images(3), generator=torch.Generator().manual_seed(0))
    summary = write_likelihood_report(result, tmp_path)
    assert (tmp_path / "bits_per_timestep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "bpd.json").read_text())
    assert saved["bits_per_dim"] == pytest.approx(result.mean()) and saved["num_images"] == 3
    assert len(saved["mean_terms_bpd"]) == 20 and saved["timesteps"] == list(range(20))
    assert summary["standard_error"] == pytest.approx(float(result.bits_per_dim.std() / math.sqrt(3)))


def test_cli_eval_bpd_on_a_saved_pipeline(tmp_path, capsys):
    folder = tmp_path / "tiny"
    tiny().save_pretrained(folder)  # T = 1000, the full chain
    argv = ["eval", str(folder), "--bpd", "--max_images", "4", "--device", "cpu"]
    assert cli.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    bpd = report["bpd"]
    assert bpd["num_images"] == 4 and bpd["bound"] == "full chain (1000 steps)"
    assert math.isfinite(bpd["bits_per_dim"]) and bpd["standard_error"] > 0
    # by default the results go into the trained folder, where the model card finds metrics.json
    assert report["output_dir"] == str(folder) and report["metrics"] == str(folder / "metrics.json")
    assert (folder / "bits_per_timestep.png").is_file() and (folder / "bpd.json").is_file()
    metrics = json.loads((folder / "metrics.json").read_text())["bpd"]
    assert metrics["bits_per_dim"] == bpd["bits_per_dim"] and metrics["dataset"] == "builtin:digits"
    assert cli.main([*argv, "--bpd_steps", "1"]) == 2
    assert "--bpd_steps: must be at least 2" in capsys.readouterr().err  # before loading anything
