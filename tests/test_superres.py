"""Super-resolution and cascades: the low-resolution kind of the carrier, the pipeline, builtin:photos, training,
the Hub round trip (tiny configurations built in the test)."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import LAUNCHER, ROOT, TINY, assert_bit_identical, check, check_ok, run_script, unet_weights
from PIL import Image

from ddpm_hub import (
    DDPMHubImg2ImgPipeline,
    DDPMHubInpaintPipeline,
    DDPMHubPipeline,
    DDPMHubSuperResolutionPipeline,
    cli,
)
from ddpm_hub.data import load_images
from ddpm_hub.data.photos import SCALES, photographs, rescaled
from ddpm_hub.errors import UsageError
from ddpm_hub.pipelines import Source
from ddpm_hub.pipelines.cascade import DDPMHubCascadePipeline
from ddpm_hub.shipped.conditioning_ddpm_hub import LowResCondition


def sr_config(tmp_path, channels: int = 3):
    """ddpm-sr-16-to-64 made tiny: widths (8, 16), one downsampling."""
    config = tmp_path / f"tiny-sr-{channels}"
    if config.exists():
        return config
    shutil.copytree(ROOT / "pipelines" / "ddpm-sr-16-to-64", config)
    unet = json.loads((config / "unet" / "config.json").read_text())
    unet.update(block_out_channels=[8, 16], down_block_types=["DownBlock2D"] * 2, up_block_types=["UpBlock2D"] * 2)
    unet.update(norm_num_groups=4, in_channels=2 * channels, out_channels=channels, sample_size=16)
    (config / "unet" / "config.json").write_text(json.dumps(unet))
    return config


DEEP = {
    "block_out_channels": [8, 8, 8, 8], "down_block_types": ["DownBlock2D"] * 4, "up_block_types": ["UpBlock2D"] * 4,
}  # fmt: skip


def tiny_sr(tmp_path, channels: int = 3) -> DDPMHubSuperResolutionPipeline:
    pipeline = Source.of(sr_config(tmp_path, channels)).build(seed=0)
    with torch.no_grad():  # the low-resolution channels matter: a random model barely reads them otherwise
        pipeline.unet.conv_in.weight[:, channels:] *= 20
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def low_res_image(seed: int = 0, size: int = 4) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def unet_calls(pipeline) -> list:
    """A list that grows by one at every call of the pipeline's UNet."""
    calls = []
    pipeline.unet.register_forward_pre_hook(lambda *args: calls.append(1))
    return calls


def tiny_base(**unet_overrides) -> DDPMHubPipeline:
    base = Source.of("ddpm-tiny-8").build(seed=0, unet_overrides=unet_overrides)
    base.set_progress_bar_config(disable=True)
    return base


def run(pipeline, image, seeds=(0,), steps: int = 3, **kwargs) -> torch.Tensor:
    generator = [torch.Generator().manual_seed(s) for s in seeds]
    return pipeline(image=image, num_inference_steps=steps, generator=generator, output_type="pt", **kwargs).images


# ----------------------------------------------------------------------------------------------------------------
# The kind


def test_noise_level_zero_leaves_the_condition_unchanged_and_higher_levels_follow_eq_4():
    from ddpm_hub.shipped.scheduling_ddpm_hub import DDPMHubScheduler

    scheduler = DDPMHubScheduler(beta_schedule="cosine")
    z_0 = torch.rand(3, 3, 4, 4) * 2 - 1
    noise = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    levels = torch.tensor([0, 1, 500])
    z = LowResCondition.augment(z_0, levels, noise, scheduler.alphas_cumprod)
    assert torch.equal(z[0], z_0[0])  # level 0: the image itself
    for i in (1, 2):
        alpha_bar = scheduler.alphas_cumprod[levels[i] - 1]
        torch.testing.assert_close(z[i], alpha_bar.sqrt() * z_0[i] + (1 - alpha_bar).sqrt() * noise[i])
    batch = LowResCondition(4).condition(z, levels)
    assert batch.concat.shape == (3, 3, 16, 16) and batch.kwargs["class_labels"].tolist() == [0, 1, 500]
    # the upsampling is bicubic, and a box filter of it gives the input back where the input is constant
    flat = torch.full((1, 3, 4, 4), 0.3)
    torch.testing.assert_close(LowResCondition.downsample(LowResCondition.upsample(flat, (16, 16)), 4), flat)


def test_training_inputs_are_8_bit_and_a_share_of_them_is_left_clean(tmp_path):
    from ddpm_hub.pipelines.conditioning import TrainingLowResCondition
    from ddpm_hub.shipped.scheduling_ddpm_hub import DDPMHubScheduler

    kind = TrainingLowResCondition(4)
    kind.alphas_cumprod, kind.clean_prob = DDPMHubScheduler(beta_schedule="cosine").alphas_cumprod, 0.5
    images = torch.rand(400, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    z_s, levels, z_0 = kind.drop(images, torch.Generator().manual_seed(1))
    box = LowResCondition.downsample(images, 4)
    grey = (z_0 + 1) * 127.5  # what an 8-bit file of the box filter holds
    torch.testing.assert_close(grey, grey.round(), atol=1e-4, rtol=0)
    assert 0.2 < (grey - (box + 1) * 127.5).abs().max() <= 0.5 + 1e-4  # rounded, not left as the filter's mean
    clean = levels == 0
    assert 0.4 < clean.float().mean() < 0.6  # the share asked for
    assert torch.equal(z_s[clean], z_0[clean]) and not torch.isclose(z_s[~clean], z_0[~clean]).all()
    assert levels[~clean].min() >= 1 and levels.max() <= kind.max_noise_level
    kind.clean_prob = 0.0
    assert (kind.drop(images, torch.Generator().manual_seed(1))[1] > 0).all()  # uniform in 1 .. max: none clean

    with pytest.raises(ValueError, match="--clean_low_res_prob 0.5 applies to super-resolution models"):
        check(["--pipeline", "ddpm-tiny-8", "--clean_low_res_prob", "0.5"])
    options, _ = check(["--pipeline", str(sr_config(tmp_path)), "--dataset_name", "builtin:photos"])
    assert options.conditioning.clean_low_res_prob == 0.8  # the default for a super-resolution model


def test_the_output_depends_on_the_input_and_is_four_times_its_size(tmp_path):
    pipeline = tiny_sr(tmp_path)
    a, b = run(pipeline, low_res_image(0)), run(pipeline, low_res_image(1))
    assert a.shape == (1, 3, 16, 16) and not torch.allclose(a, b, atol=1e-3)  # a changed input changes the samples
    assert torch.equal(run(pipeline, low_res_image(0)), a)  # seeded
    larger = run(pipeline, low_res_image(0, size=8))  # fully convolutional: trained at 16, upsamples 8 -> 32
    assert larger.shape == (1, 3, 32, 32)
    pil = Image.fromarray((low_res_image(0)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    torch.testing.assert_close(run(pipeline, pil), a, atol=0.02, rtol=0)  # PIL: the same input at 8 bits
    levels = [run(pipeline, low_res_image(0), noise_level=level) for level in (0, 200)]
    assert not torch.equal(levels[0], levels[1])


class ZeroModel(torch.nn.Module):
    """A UNet stand-in that outputs zeros of x_t's channels: a model of the residual that has learnt no detail."""

    def forward(self, x, t, **kwargs):
        return type("Output", (), {"sample": torch.zeros_like(x[:, : x.shape[1] // 2])})()


def test_a_model_of_the_residual_learns_and_samples_the_detail_over_the_bicubic_input(tmp_path):
    from ddpm_hub.losses import DiffusionObjective

    pipeline = tiny_sr(tmp_path)
    assert pipeline.config.residual_scale == 4.0
    pipeline.scheduler = type(pipeline.scheduler).from_config(pipeline.scheduler.config, prediction_type="sample")
    image = low_res_image(5)
    bicubic = torch.nn.functional.interpolate(image * 2 - 1, size=(16, 16), mode="bicubic", align_corners=False)
    kind = pipeline.conditioning.get("low_res")
    with torch.no_grad():  # x_0 = 0 at every step: no detail, so the last step gives the base itself
        pipeline.unet.conv_out.weight.zero_(), pipeline.unet.conv_out.bias.zero_()
    out = pipeline(image=image, num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type="pt")
    torch.testing.assert_close(out.images * 2 - 1, bicubic.clamp(-1, 1), atol=1e-5, rtol=0)
    # training: the target is residual_scale * (x - bicubic(z_0)), here the model's squared error on it
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    z_0 = LowResCondition.downsample(x, 4)
    batch = kind.condition(z_0, torch.zeros(2, dtype=torch.long), z_0)
    loss = DiffusionObjective(pipeline.scheduler)(ZeroModel(), x, torch.Generator().manual_seed(0), condition=batch)
    residual = 4.0 * (x - LowResCondition.upsample(z_0, (16, 16)))
    torch.testing.assert_close(loss, (residual**2).mean(dim=(1, 2, 3)))
    torch.testing.assert_close(batch.to_image(batch.to_model(x)), x)


def test_the_decoder_of_a_residual_model_is_a_distribution_over_the_images_8_bit_values():
    from ddpm_hub.losses import vb_terms_bits_per_dim
    from ddpm_hub.shipped.conditioning_ddpm_hub import ConditionBatch
    from ddpm_hub.shipped.scheduling_ddpm_hub import DDPMHubScheduler

    scheduler = DDPMHubScheduler(beta_schedule="cosine", prediction_type="sample", clip_sample=False)
    scheduler.set_timesteps(1000)
    values = torch.arange(256, dtype=torch.float64).view(256, 1, 1, 1) / 127.5 - 1  # every 8-bit value of a pixel
    condition = ConditionBatch(base=torch.full((256, 1, 1, 1), 0.1), residual_scale=4.0)
    x_0 = condition.to_model(values)
    x_t = torch.full_like(x_0, 0.3)
    output = torch.full_like(x_0, 0.2)  # the decoder's mean, the same for every value
    t = torch.zeros(256, dtype=torch.long)  # the last step: the decoder
    bits = vb_terms_bits_per_dim(scheduler, output, x_0, x_t, t, condition)
    total = (2.0**-bits).sum().item()  # the probabilities of the 256 values of one pixel
    assert abs(total - 1) < 1e-6, total  # bins in the residual's units would give about 1 / 4


@pytest.mark.parametrize("prediction", ["v_prediction", "epsilon"])
def test_consistency_projects_each_steps_x_0_onto_the_input(tmp_path, prediction):
    pipeline = tiny_sr(tmp_path)  # the configuration predicts v; epsilon through the same UNet's output
    pipeline.scheduler = type(pipeline.scheduler).from_config(pipeline.scheduler.config, prediction_type=prediction)
    target = low_res_image(3) * 2 - 1  # the input, in [-1, 1]
    x_t = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    guided, _ = pipeline.prepare_condition(1, 1.0, low_res=target, noise_level=torch.zeros(1, dtype=torch.long))
    t = torch.tensor(500)  # mid-chain: x_0 from the output amplifies rounding little
    alpha_bar = pipeline.scheduler.alphas_cumprod[int(t)]
    if prediction == "v_prediction":
        x_0 = lambda v: alpha_bar.sqrt() * x_t - (1 - alpha_bar).sqrt() * v  # noqa: E731 - x_0 from v
    else:
        x_0 = lambda eps: (x_t - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()  # noqa: E731 - eq. 4 for x_0
    with torch.no_grad():
        plain = pipeline.model_output(x_t, t, guided)
        pipeline._consistency_target = target
        projected = pipeline.model_output(x_t, t, guided)
        pipeline._consistency_target = None
    assert guided.condition.base is not None  # the configuration diffuses the residual: x_0 is the image's
    model_x_0 = x_0
    x_0 = lambda output: guided.condition.to_image(model_x_0(output))  # noqa: E731 - the image of a residual
    torch.testing.assert_close(LowResCondition.downsample(x_0(projected), 4), target, atol=1e-5, rtol=0)
    assert (LowResCondition.downsample(x_0(plain), 4) - target).abs().max() > 0.1
    # what the box filter does not see is the model's own
    detail = x_0(projected) - torch.nn.functional.interpolate(
        LowResCondition.downsample(x_0(projected), 4), scale_factor=4
    )
    plain_detail = x_0(plain) - torch.nn.functional.interpolate(
        LowResCondition.downsample(x_0(plain), 4), scale_factor=4
    )
    torch.testing.assert_close(detail, plain_detail, atol=1e-4, rtol=0)
    assert run(pipeline, low_res_image(3), consistency=True).shape == (1, 3, 16, 16)


def test_bad_inputs_are_refused_or_warned_of(tmp_path):
    pipeline = tiny_sr(tmp_path)
    with pytest.raises(ValueError, match=r"noise_level must be an integer in 0..250"):
        run(pipeline, low_res_image(), noise_level=300)
    deep = Source.of(sr_config(tmp_path)).build(seed=0, unet_overrides=DEEP)  # halves 3 times: sides of 8
    with pytest.raises(ValueError, match="upsamples to 12x12, which this UNet cannot take: its output sides must be"):
        run(deep, torch.rand(1, 3, 3, 3))
    with pytest.warns(UserWarning, match="The input is grayscale and the model RGB: it was converted"):
        run(pipeline, Image.fromarray(np.zeros((4, 4), dtype=np.uint8)))
    with pytest.raises(ValueError, match="This is a super-resolution model"):
        DDPMHubPipeline.__call__(pipeline, num_inference_steps=2)
    with pytest.raises(ValueError, match="not a super-resolution model"):
        DDPMHubSuperResolutionPipeline.__call__(Source.of("ddpm-tiny-8").build(), image=low_res_image())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_size=0), "batch_size must be a positive integer, got 0"),
        (
            dict(image=low_res_image() * 2 - 1),
            r"image holds values in \[-0.\d+, 0.\d+\]; float images are taken in \[0, 1\]",
        ),
        (dict(image=low_res_image() * 255), r"float images are taken in \[0, 1\] \(uint8 in 0..255\)"),
        (dict(image=low_res_image() * float("nan")), "image holds NaN or infinite values"),
        (dict(image=np.full((4, 4, 3), np.inf, dtype=np.float32)), "image holds NaN or infinite values"),
        (
            dict(image=torch.rand(1, 3, 0, 4)),
            r"image is empty \(shape \(1, 3, 0, 4\)\); pass an image of at least 1x1",
        ),
        (
            dict(image=torch.zeros(1, 3, 1100, 1100, dtype=torch.uint8)),
            "upsamples to 4400x4400; this pipeline makes outputs of at most 4096 pixels a side, so it takes inputs of "
            "at most 1024 pixels a side",
        ),
        (dict(num_inference_steps=0), "num_inference_steps must be an integer between 1 and num_train_timesteps"),
        (dict(generator=42), "generator must be a torch.Generator or a list of them"),
        (dict(noise=torch.full((1, 3, 16, 16), float("nan"))), "noise holds NaN or infinite values"),
        (dict(noise=torch.zeros(1, 3, 8, 8)), r"noise must have shape \(1, 3, 16, 16\)"),
    ],
    ids=[
        "batch-0",
        "minus-one-to-one",
        "0-255-floats",
        "nan",
        "inf-numpy",
        "height-0",
        "too-large",
        "steps-0",
        "int-seed",
        "nan-noise",
        "noise-shape",
    ],
)
def test_super_resolution_inputs_are_checked_before_any_unet_call(tmp_path, kwargs, message):
    # issue 28: batch_size=0 gave one image; floats outside [0, 1] were clamped and NaN gave NaN images; a 4000x4000
    # input failed in the allocator and one of height 0 or generator=42 gave tracebacks
    pipeline = tiny_sr(tmp_path)
    calls = unet_calls(pipeline)
    with pytest.raises(ValueError, match=message):
        pipeline(**{"image": low_res_image(), "num_inference_steps": 2, "output_type": "pt", **kwargs})
    assert calls == []


def test_from_pipe_does_not_cross_between_upsampling_and_sampling_from_noise(tmp_path):
    # issue 28: from_pipe across task pipelines (SR from a base, a base, inpainting or img2img from SR) was accepted
    base, sr = tiny_base(), tiny_sr(tmp_path)
    with pytest.raises(UsageError, match=r"DDPMHubSuperResolutionPipeline.from_pipe\(DDPMHubPipeline\): .* samples"):
        DDPMHubSuperResolutionPipeline.from_pipe(base)
    for klass in (DDPMHubPipeline, DDPMHubInpaintPipeline, DDPMHubImg2ImgPipeline):
        message = rf"{klass.__name__}.from_pipe\(DDPMHubSuperResolutionPipeline\): .* holds a super-resolution model"
        with pytest.raises(UsageError, match=message):
            klass.from_pipe(sr)
    assert DDPMHubSuperResolutionPipeline.from_pipe(sr).unet is sr.unet  # within a kind it shares the components
    assert DDPMHubImg2ImgPipeline.from_pipe(base).unet is base.unet


def test_the_likelihood_is_conditioned_on_the_low_resolution_image(tmp_path):
    pipeline = tiny_sr(tmp_path)
    images = (torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 255).round().to(torch.uint8)
    inputs = pipeline.conditioning.inputs_of({"images": images})
    own = pipeline.likelihood(images, num_steps=3, generator=torch.Generator().manual_seed(0), **inputs)
    other = pipeline.conditioning.inputs_of({"images": images.flip(0)})
    swapped = pipeline.likelihood(images, num_steps=3, generator=torch.Generator().manual_seed(0), **other)
    assert np.isfinite(own.mean()) and own.mean() != swapped.mean()


# ----------------------------------------------------------------------------------------------------------------
# Data, cascades, commands


def test_builtin_photos_are_crops_of_the_two_sample_photographs_only_at_three_scales():
    decoded = load_images("builtin:photos", resolution=16, channels=3, max_images=10)
    originals = photographs()
    for i, crop in enumerate(decoded.images):
        scale = SCALES[(i // 2) % len(SCALES)]
        photo, window = rescaled(originals[i % 2], scale), crop.permute(1, 2, 0).numpy()
        assert photo.shape[0] == round(427 * scale)  # the photograph itself, halved or enlarged
        tops, lefts = np.nonzero((photo[:-15, :-15] == window[0, 0]).all(-1))  # where its first pixel could sit
        assert any((photo[y : y + 16, x : x + 16] == window).all() for y, x in zip(tops, lefts))  # a window of it
    assert decoded.images.shape == (10, 3, 16, 16) and sorted(SCALES) == [0.5, 1.0, 8.0]
    # the enlarged photographs are flat at the pixel scale: what teaches a model that a flat input may stay flat
    detail = [float((torch.from_numpy(rescaled(originals[0], s)).float().diff(dim=1) ** 2).mean()) for s in (1, 8)]
    assert detail[1] < detail[0] / 20


def test_a_cascade_upsamples_the_base_models_own_samples(tmp_path):
    base = Source.of("ddpm-tiny-8").build(seed=0)
    base.set_progress_bar_config(disable=True)
    cascade = DDPMHubCascadePipeline(base, [tiny_sr(tmp_path)])
    generator = [torch.Generator().manual_seed(s) for s in (0, 1)]
    output = cascade(batch_size=2, generator=generator, num_inference_steps=[3, 2], output_type="pt")
    alone = base(
        batch_size=2,
        generator=[torch.Generator().manual_seed(s) for s in (0, 1)],
        num_inference_steps=3,
        output_type="pt",
    )
    assert torch.equal(output.stages[0], alone.images) and output.images.shape == (2, 3, 32, 32)
    deep = Source.of(sr_config(tmp_path)).build(seed=0, unet_overrides=DEEP)
    with pytest.raises(ValueError, match="cannot take"):  # a 5x5 base upsampled to 20x20: not sides of 8
        DDPMHubCascadePipeline(Source.of("ddpm-tiny-8").build(seed=0, unet_overrides={"sample_size": 5}), [deep])
    with pytest.raises(ValueError, match="needs at least one super-resolution stage"):
        DDPMHubCascadePipeline(base, [])


def test_the_cascade_is_exported_where_the_readme_imports_it():
    # issue 28: `from ddpm_hub import DDPMHubCascadePipeline` (the README's import) was an ImportError
    import ddpm_hub

    assert ddpm_hub.DDPMHubCascadePipeline is DDPMHubCascadePipeline and "DDPMHubCascadePipeline" in ddpm_hub.__all__


def test_a_cascade_refuses_stages_that_do_not_fit_when_it_is_built(tmp_path):
    # issue 28: an RGB base into a grayscale SR stage crashed after sampling; DDPMHubCascadePipeline(base, [base])
    # gave a traceback
    base, sr = tiny_base(), tiny_sr(tmp_path)
    with pytest.raises(
        UsageError, match="Stage 1 takes 1-channel images and stage 0 gives 3: a cascade does not drop"
    ):
        DDPMHubCascadePipeline(base, [tiny_sr(tmp_path, channels=1)])
    with pytest.raises(
        UsageError, match="Stage 1 of the cascade is a DDPMHubPipeline, not a super-resolution pipeline"
    ):
        DDPMHubCascadePipeline(base, [base])
    with pytest.raises(UsageError, match="The base of a cascade samples images from noise .*not a DDPMHubSuper"):
        DDPMHubCascadePipeline(sr, [sr])
    with pytest.raises(UsageError, match="stages must be a list of super-resolution pipelines, .* got DDPMHubSuper"):
        DDPMHubCascadePipeline(base, sr)  # the probe: one stage, not in a list
    gray = tiny_base(in_channels=1, out_channels=1)
    with pytest.warns(UserWarning, match="Stage 1 takes 3 channels and stage 0 gives 1: its input is converted"):
        DDPMHubCascadePipeline(gray, [sr])  # gray into RGB: converted, and said


def test_a_cascade_takes_exactly_the_arguments_its_stages_honour(tmp_path):
    # issue 28: the cascade dropped prompt=, class_labels=, guidance_scale= and misspelled keywords silently
    base = tiny_base()
    calls = unet_calls(base)
    cascade = DDPMHubCascadePipeline(base, [tiny_sr(tmp_path)])
    accepted = (
        "the cascade takes batch_size, generator, num_inference_steps, noise_level, output_type, guidance_scale."
    )
    for kwargs, message in [
        (dict(prompt="a seven"), "prompt: no stage of this cascade takes it; " + accepted),
        (dict(class_labels=3), "class_labels: no stage of this cascade takes it; " + accepted),
        (dict(num_inference_step=2), "num_inference_step: no stage of this cascade takes it; " + accepted),
        (dict(guidance_scale=3.0), r"guidance_scale=3.0: no stage of this cascade takes a condition to guide"),
    ]:
        with pytest.raises(UsageError, match=message):
            cascade(batch_size=1, num_inference_steps=[2, 1], output_type="pt", **kwargs)
    assert calls == []
    # a class-conditional base: the labels and the guidance reach it, and the cascade lists them
    conditional = Source.of("ddpm-tiny-8").build(seed=0, unet_overrides={"num_class_embeds": 11})
    with torch.no_grad():
        conditional.unet.class_embedding.weight.normal_(0, 1, generator=torch.Generator().manual_seed(1))
    conditional = DDPMHubPipeline(conditional.unet, conditional.scheduler, null_class_label=10)
    conditional.set_progress_bar_config(disable=True)
    cascade = DDPMHubCascadePipeline(conditional, [tiny_sr(tmp_path)])
    kwargs = dict(batch_size=2, num_inference_steps=2, output_type="pt", guidance_scale=2.0)
    output = cascade(generator=[torch.Generator().manual_seed(s) for s in (0, 1)], class_labels=[3, 7], **kwargs)
    alone = conditional(generator=[torch.Generator().manual_seed(s) for s in (0, 1)], class_labels=[3, 7], **kwargs)
    other = conditional(generator=[torch.Generator().manual_seed(s) for s in (0, 1)], class_labels=[1, 2], **kwargs)
    assert torch.equal(output.stages[0], alone.images) and not torch.equal(alone.images, other.images)
    with pytest.raises(UsageError, match=r"clas_labels: no stage .*output_type, guidance_scale, class_labels\."):
        cascade(batch_size=1, clas_labels=3)
    with pytest.raises(UsageError, match="The conditions describe 3 images and the cascade makes 2"):
        cascade(generator=[torch.Generator().manual_seed(s) for s in (0, 1)], class_labels=[3, 7, 1])


def test_every_stages_arguments_are_checked_before_the_base_samples(tmp_path, capsys):
    # issue 28: `ddpm-hub sample --upscale SR --noise_level 999` crashed after the base stage had sampled
    base = tiny_base()
    calls = unet_calls(base)
    cascade = DDPMHubCascadePipeline(base, [tiny_sr(tmp_path)])
    for kwargs, message in [
        (
            dict(noise_level=999),
            r"Stage 1 of the cascade \(super-resolution\): noise_level must be an integer in 0..250",
        ),
        (dict(num_inference_steps=[2, 0]), r"Stage 1 .*: num_inference_steps must be an integer between 1 and"),
        (dict(num_inference_steps=[0, 2]), r"Stage 0 of the cascade \(the base\): num_inference_steps must be"),
        (dict(noise_level=[5, 0]), r"noise_level\[0\] is the base's, which takes none: pass None there, got 5"),
        (dict(num_inference_steps=[2]), "num_inference_steps: one value, or a list of one per stage"),
        (dict(output_type="jpg"), "Unknown output_type 'jpg'"),
    ]:
        with pytest.raises(UsageError, match=message):
            cascade(batch_size=1, **{"num_inference_steps": 2, **kwargs})
    assert calls == []
    tiny_sr(tmp_path).save_pretrained(tmp_path / "sr")
    command = ["sample", "ddpm-tiny-8", "--num_images", "1", "--steps", "2", "--upscale", str(tmp_path / "sr")]
    assert cli.main([*command, "--noise_level", "999", "--output", str(tmp_path / "cascade.png")]) == 2
    assert "noise_level must be an integer in 0..250" in capsys.readouterr().err
    assert not (tmp_path / "cascade.png").exists()


def test_the_commands_upscale_and_sample_a_cascade(tmp_path, capsys):
    tiny_sr(tmp_path).save_pretrained(tmp_path / "sr")
    Image.fromarray(np.full((4, 4, 3), 128, dtype=np.uint8)).save(tmp_path / "small.png")
    assert cli.main(["upscale", str(tmp_path / "sr"), str(tmp_path / "small.png"), "--steps", "2",
                     "--output_dir", str(tmp_path / "out"), "--num_samples", "2"]) == 0  # fmt: skip
    written = json.loads(capsys.readouterr().out.splitlines()[-1])["written"]
    assert [Image.open(path).size for path in written] == [(16, 16), (16, 16)]
    assert cli.main(["upscale", str(tmp_path / "sr"), str(tmp_path / "small.png"), "--steps", "2",
                     "--output_dir", str(tmp_path / "projected"), "--consistency"]) == 0  # fmt: skip
    upscaled = np.asarray(Image.open(json.loads(capsys.readouterr().out.splitlines()[-1])["written"][0]), float)
    assert np.abs(upscaled.reshape(4, 4, 4, 4, 3).mean(axis=(1, 3)) - 128).max() <= 1  # its box average: the input
    assert cli.main(["upscale", "ddpm-tiny-8", str(tmp_path / "small.png")]) == 2
    assert "is not a super-resolution model" in capsys.readouterr().err
    command = ["sample", "ddpm-tiny-8", "--num_images", "2", "--steps", "2", "--upscale", str(tmp_path / "sr")]
    assert cli.main([*command, "--upscale_steps", "2", "--output", str(tmp_path / "cascade.png"), "--scale", "1"]) == 0
    assert Image.open(tmp_path / "cascade.png").size == (2 + 2 * (32 + 2), 2 + 2 * (32 + 2))  # 2 rows of 2


# ----------------------------------------------------------------------------------------------------------------
# Training and the Hub (launched runs)


def sr_run(tmp_path, *extra, name="run"):
    args = [*TINY, "--pipeline", str(sr_config(tmp_path)), "--dataset_name", "builtin:photos", "--resolution", "16"]
    return [*args, "--output_dir", str(tmp_path / name), *extra]


@pytest.mark.slow
def test_training_resumes_bit_identically_after_sigkill(tmp_path):
    common = ["--max_train_steps", "6", "--checkpointing_steps", "2", "--use_ema", "--validation_holdout", "4"]
    check_ok(run_script(sr_run(tmp_path, *common, name="a")))
    killed = run_script(sr_run(tmp_path, *common, name="b"), script=LAUNCHER, env={"FAULT_KILL_AFTER_CHECKPOINT": "4"})
    assert killed.returncode == -9
    check_ok(run_script(sr_run(tmp_path, *common, "--resume_from_checkpoint", "latest", name="b")))
    assert_bit_identical(unet_weights(tmp_path / "a"), unet_weights(tmp_path / "b"))
    loaded = DDPMHubPipeline.from_pretrained(tmp_path / "a")
    assert type(loaded) is DDPMHubSuperResolutionPipeline and loaded.config.low_res_scale == 4


@pytest.mark.slow
def test_training_on_two_ranks_with_random_crops(tmp_path):
    args = sr_run(tmp_path, "--max_train_steps", "3", "--resolution", "32", "--random_crop", "16")
    check_ok(run_script(args, processes=2))
    summary = json.loads((tmp_path / "run" / "training_summary.json").read_text())
    assert summary["num_processes"] == 2 and len(set(summary["weights_sha256_per_rank"])) == 1
    assert DDPMHubPipeline.from_pretrained(tmp_path / "run").unet.config.sample_size == 16  # the crops' size


@pytest.mark.slow
def test_a_super_resolution_model_round_trips_through_the_hub_both_ways(hub_server, tmp_path, hub_cache):
    from ddpm_hub.hub.publishing import publish

    pipeline = tiny_sr(tmp_path)
    pipeline.save_pretrained(tmp_path / "folder")
    assert sorted(p.name for p in (tmp_path / "folder").glob("*.py")) == [
        "call_arguments_ddpm_hub.py", "condition_batch_ddpm_hub.py", "conditioning_ddpm_hub.py",
        "image_embeds_ddpm_hub.py", "image_processing_ddpm_hub.py", "latents_ddpm_hub.py", "pipeline_ddpm_hub.py",
        "pipeline_ddpm_hub_superres.py", "samplers_ddpm_hub.py",
    ]  # fmt: skip
    repo_id = "alice/tiny-sr-round-trip"
    publish(tmp_path / "folder", repo_id, token="hf_alice_write")
    loaded = DDPMHubSuperResolutionPipeline.from_pretrained(repo_id, cache_dir=hub_cache, token="hf_alice_write")
    loaded.set_progress_bar_config(disable=True)
    expected = run(pipeline, low_res_image(0), seeds=(0,), noise_level=20)
    torch.testing.assert_close(run(loaded, low_res_image(0), seeds=(0,), noise_level=20), expected)
    np.save(tmp_path / "input.npy", low_res_image(0).numpy())
    script = (
        "import sys, numpy as np, torch\n"
        "sys.modules['ddpm_hub'] = None\n"
        "torch.set_num_threads(1)\n"
        "from diffusers import DiffusionPipeline\n"
        f"p = DiffusionPipeline.from_pretrained({repo_id!r}, trust_remote_code=True, token='hf_alice_write')\n"
        "p.set_progress_bar_config(disable=True)\n"
        "g = [torch.Generator().manual_seed(0)]\n"
        "image = torch.from_numpy(np.load(sys.argv[2]))\n"
        "out = p(image=image, noise_level=20, num_inference_steps=3, generator=g, output_type='pt')\n"
        "np.save(sys.argv[1], out.images.numpy())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "plain.npy"), str(tmp_path / "input.npy")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    torch.testing.assert_close(torch.from_numpy(np.load(tmp_path / "plain.npy")), expected)
