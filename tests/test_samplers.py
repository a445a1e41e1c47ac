"""The sampler a trained pixel model ships with (diffusers' UniPC on trailing timesteps, x_0 clipped, 20 calls by
default), the DDPM chain still under it (the likelihood, RePaint, training on), the models that keep their chain's
scheduler, and the warning before a scheduler set to a chain known to draw noise."""

import warnings

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    UniPCMultistepScheduler,
)
from helpers import TINY, check, check_ok, run_script, tiny_latent_pipeline

from ddpm_hub import DDPMHubInpaintPipeline, DDPMHubPipeline, DDPMHubScheduler
from ddpm_hub.hub.model_card import render_model_card
from ddpm_hub.pipelines import Source
from ddpm_hub.pipelines.sampling import DEFAULT_SAMPLER_STEPS, default_sampler, with_sampler
from ddpm_hub.shipped.samplers_ddpm_hub import ddpm_chain, warn_if_noise


def calls_of(pipeline) -> list[int]:
    """The batch size of every UNet call the pipeline makes from now on."""
    calls = []
    pipeline.unet.register_forward_pre_hook(lambda module, inputs: calls.append(len(inputs[0])))
    return calls


@pytest.mark.slow
def test_a_trained_pixel_model_ships_its_fast_sampler_and_keeps_its_chain(tmp_path):
    """
    The saved scheduler is UniPC on trailing timesteps clipping x_0, 20 calls by default, installed and through
    plain diffusers alike; the chain it carries gives the same bits/dim and the same RePaint completion as the chain's
    own scheduler, and the folder trains on; its card names the sampler.
    """
    out = tmp_path / "run"
    check_ok(run_script([*TINY, "--max_train_steps", "2", "--output_dir", str(out)]))
    pipeline = DDPMHubPipeline.from_pretrained(out)
    pipeline.set_progress_bar_config(disable=True)
    config = pipeline.scheduler.config
    assert isinstance(pipeline.scheduler, UniPCMultistepScheduler)
    assert (config.timestep_spacing, config.thresholding, config.sample_max_value) == ("trailing", True, 1.0)
    assert pipeline.default_num_inference_steps == DEFAULT_SAMPLER_STEPS == 20
    calls = calls_of(pipeline)
    ours = pipeline(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert calls == [2] * 20
    plain = DiffusionPipeline.from_pretrained(out, trust_remote_code=True)
    plain.set_progress_bar_config(disable=True)
    theirs = plain(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    np.testing.assert_array_equal(ours, theirs)

    trained_chain = Source.of("ddpm-tiny-8").build().scheduler
    chain = ddpm_chain(pipeline.scheduler)
    assert isinstance(chain, DDPMScheduler) and torch.equal(chain.alphas_cumprod, trained_chain.alphas_cumprod)
    assert (chain.config.variance_type, chain.config.clip_sample) == (trained_chain.config.variance_type, True)
    assert (chain.config.timestep_spacing, chain.config.thresholding) == ("leading", False)
    own = DDPMHubPipeline.from_pipe(pipeline, scheduler=DDPMHubScheduler.from_config(trained_chain.config))
    own.set_progress_bar_config(disable=True)
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    bpd = [p.likelihood(images, num_steps=10, generator=torch.Generator().manual_seed(2)) for p in (pipeline, own)]
    torch.testing.assert_close(bpd[0].bits_per_dim, bpd[1].bits_per_dim, rtol=0, atol=0)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 4:] = 1
    repaint = dict(image=images[:1], mask_image=mask, num_inference_steps=6, jump_length=2, jump_n_sample=2)
    completed = [
        DDPMHubInpaintPipeline.from_pipe(p)(**repaint, generator=torch.Generator().manual_seed(3), output_type="np")
        for p in (pipeline, own)
    ]
    np.testing.assert_allclose(completed[0].images, completed[1].images, atol=1e-6)
    assert isinstance(pipeline.scheduler, UniPCMultistepScheduler)  # RePaint borrowed the chain, left the pipeline's
    options, _ = check([*TINY, "--pipeline", str(out), "--max_train_steps", "2"])  # it trains on, on its chain
    assert options.model.pipeline == str(out)
    ddpm = with_sampler(pipeline, "ddpm")  # `ddpm-hub sample --sampler ddpm`: the chain's own settings
    assert isinstance(ddpm.scheduler, DDPMHubScheduler) and ddpm.scheduler.config.timestep_spacing == "leading"
    card = str(render_model_card(out, "you/tiny"))
    assert (
        "| default sampler | `UniPCMultistepScheduler` on trailing timesteps, x_0 clipped, 20 calls by default" in card
    )
    assert "num_inference_steps=" not in card.split("```python")[1].split("```")[0]


def test_models_the_fast_sampler_was_not_measured_on_keep_their_chains_scheduler():
    """A pixel model whose chain clips gets UniPC; a latent model, a learned variance, a chain that does not clip and
    a schedule of ddpm_hub's own keep theirs."""
    pixel = Source.of("ddpm-tiny-8").build()
    sampler = default_sampler(pixel)
    assert isinstance(sampler, UniPCMultistepScheduler) and torch.equal(
        sampler.alphas_cumprod, pixel.scheduler.alphas_cumprod
    )
    assert default_sampler(tiny_latent_pipeline()) is None
    for change in ({"variance_type": "learned_range"}, {"clip_sample": False}, {"beta_schedule": "sigmoid"}):
        other = DDPMHubPipeline.from_pipe(
            pixel, scheduler=DDPMHubScheduler.from_config(pixel.scheduler.config, **change)
        )
        assert default_sampler(other) is None, change


def test_a_scheduler_set_to_a_chain_known_to_draw_noise_warns_before_sampling():
    """
    An epsilon model's first x_0 read at t = 999 of the cosine schedule divides by alpha = 4.9e-5: unclipped,
    DPM-Solver++ drew noise there (65.7 of the floor). It warns; clipped, or from t = 950, or DDIM (which clips), not.
    """

    def warned(scheduler) -> list[str]:
        scheduler.set_timesteps(20)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warn_if_noise(scheduler)
        return [str(w.message) for w in caught]

    cosine = {"beta_schedule": "squaredcos_cap_v2"}
    (message,) = warned(DPMSolverMultistepScheduler(**cosine, timestep_spacing="trailing"))
    assert "starts at t = 999" in message and "20,291" in message and "thresholding=True" in message
    assert warned(DPMSolverMultistepScheduler(**cosine, timestep_spacing="trailing", thresholding=True)) == []
    assert warned(DPMSolverMultistepScheduler(**cosine, timestep_spacing="leading")) == []
    assert warned(DDIMScheduler(**cosine, timestep_spacing="trailing")) == []
    assert (
        warned(DPMSolverMultistepScheduler(**cosine, timestep_spacing="trailing", prediction_type="v_prediction"))
        == []
    )
    pipeline = Source.of("ddpm-tiny-8").build()
    pipeline.scheduler = UniPCMultistepScheduler.from_config(
        {**pipeline.scheduler.config, **cosine}, timestep_spacing="trailing"
    )
    pipeline.set_progress_bar_config(disable=True)
    with pytest.warns(UserWarning, match="expect noise"):
        pipeline(num_inference_steps=2)
