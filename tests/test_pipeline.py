"""DDPMHubPipeline: sampling against diffusers' DDPMPipeline, inputs, dtypes, and save/load round trips."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, DPMSolverMultistepScheduler
from helpers import WEIGHTS, check, conditional, trained_folder
from safetensors.torch import load_file

from ddpm_hub import DDPMHubImg2ImgPipeline, DDPMHubInpaintPipeline, DDPMHubPipeline, DDPMHubScheduler, cli
from ddpm_hub.errors import UsageError
from ddpm_hub.pipelines import Source


def tiny(**scheduler_overrides) -> DDPMHubPipeline:
    pipeline = Source.of("ddpm-tiny-8").build(seed=0, scheduler_overrides=scheduler_overrides)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def sample(pipeline, steps=4, seed=0, batch_size=2, **kwargs):
    return pipeline(
        batch_size=batch_size, num_inference_steps=steps, generator=torch.manual_seed(seed), output_type="np", **kwargs
    ).images


def test_samples_equal_diffusers_ddpm_pipeline_with_the_same_unet():
    pipeline = tiny(variance_type="fixed_large")
    config = {k: v for k, v in pipeline.scheduler.config.items() if not k.startswith("_")}
    reference = DDPMPipeline(unet=pipeline.unet, scheduler=DDPMScheduler(**config))
    reference.set_progress_bar_config(disable=True)
    for steps in (50, 3):  # the full 1000-step chain is compared at the scheduler level
        np.testing.assert_array_equal(sample(pipeline, steps), sample(reference, steps))


def test_deterministic_output_slice():
    """A regression pin (torch 2.13.0 CPU, the constraints file) on top of the reference comparison above."""
    images = sample(tiny(), steps=3)
    assert images.shape == (2, 8, 8, 3)
    expected = np.array([0.0, 0.4301, 0.0, 0.2479, 1.0, 0.996, 0.0018, 0.0096, 0.0])
    np.testing.assert_allclose(images[0, -3:, -1, :].flatten(), expected, atol=1e-3)


def test_output_types_and_grayscale_pil():
    pipeline = tiny()
    pt = pipeline(num_inference_steps=2, generator=torch.manual_seed(0), output_type="pt").images
    np_images = pipeline(num_inference_steps=2, generator=torch.manual_seed(0), output_type="np").images
    assert isinstance(pt, torch.Tensor) and pt.shape == (1, 3, 8, 8)
    np.testing.assert_allclose(pt.permute(0, 2, 3, 1).numpy(), np_images)
    assert 0.0 <= np_images.min() and np_images.max() <= 1.0
    (pil,) = pipeline(num_inference_steps=2, output_type="pil", return_dict=False)
    assert pil[0].mode == "RGB" and pil[0].size == (8, 8)
    digits = Source.of("ddpm-digits-16").build()
    digits.set_progress_bar_config(disable=True)
    image = digits(num_inference_steps=2, generator=torch.manual_seed(0)).images[0]
    assert image.mode == "L" and image.size == (16, 16)


def test_a_list_of_generators_makes_each_image_independent_of_the_batch():
    pipeline = tiny()
    pair = pipeline(
        batch_size=2,
        num_inference_steps=3,
        output_type="np",
        generator=[torch.Generator().manual_seed(10), torch.Generator().manual_seed(11)],
    ).images
    single = pipeline(
        batch_size=1, num_inference_steps=3, output_type="np", generator=[torch.Generator().manual_seed(11)]
    ).images
    np.testing.assert_allclose(pair[1], single[0], atol=1e-5)  # batched convolutions round differently
    assert not np.allclose(pair[0], pair[1])


def test_given_noise_is_used_as_x_T():
    pipeline = tiny()
    pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)  # deterministic with eta = 0
    noise = torch.randn(2, 3, 8, 8, generator=torch.manual_seed(5))
    from_noise = sample(pipeline, seed=99, noise=noise)
    from_generator = sample(pipeline, seed=5)
    np.testing.assert_allclose(from_noise, from_generator, atol=1e-6)


def test_eta_reaches_ddim_and_is_refused_where_meaningless():
    pipeline = tiny()
    with pytest.raises(ValueError, match="eta=0.5 has no meaning for DDPMHubScheduler"):
        sample(pipeline, eta=0.5)
    pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)
    assert not np.allclose(sample(pipeline, eta=0.0), sample(pipeline, eta=1.0))


def test_explicit_timesteps_and_respaced_chain():
    pipeline = tiny()
    np.testing.assert_array_equal(sample(pipeline, timesteps=[750, 500, 250, 0]), sample(pipeline, steps=4))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(output_type="jpg"), "valid choices are: pil, np, pt"),
        (dict(batch_size=0), "positive integer"),
        (dict(batch_size=2, generator=[torch.manual_seed(0)]), "1 generators for batch_size=2"),
        (dict(noise=torch.zeros(1, 3, 4, 4)), r"noise must have shape \(1, 3, 8, 8\)"),
        (dict(num_inference_steps=1001), "between 1 and num_train_timesteps=1000"),
    ],
)
def test_bad_call_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny()(**kwargs)


def unet_calls(pipeline) -> list:
    """A list that grows by one at every call of the pipeline's UNet."""
    calls = []
    pipeline.unet.register_forward_pre_hook(lambda *args: calls.append(1))
    return calls


@pytest.mark.parametrize("scheduler_class", [DDPMHubScheduler, DDIMScheduler])
def test_zero_or_fractional_steps_are_refused_before_any_unet_call(scheduler_class):
    # issue 28: num_inference_steps=0 ran the full 1000-step chain
    base = tiny()
    pipeline = DDPMHubPipeline.from_pipe(base, scheduler=scheduler_class.from_config(base.scheduler.config))
    calls = unet_calls(pipeline)
    for steps in (0, -3, 2.5, True, 1001):
        message = f"num_inference_steps must be an integer between 1 and num_train_timesteps=1000 .*got {steps!r}"
        with pytest.raises(ValueError, match=message):
            pipeline(num_inference_steps=steps)
    assert calls == []
    assert sample(pipeline, steps=1, batch_size=1).shape == (1, 8, 8, 3) and len(calls) == 1


def test_a_generator_that_is_not_a_torch_generator_is_refused_by_name():
    # issue 28: generator=42 gave a traceback from inside randn_tensor
    pipeline = tiny()
    calls = unet_calls(pipeline)
    for generator in (42, [torch.manual_seed(0), 7], "seed"):
        with pytest.raises(
            ValueError, match=r"generator must be a torch.Generator or a list of them \(one per image\)"
        ):
            pipeline(generator=generator, num_inference_steps=2)
    assert calls == []


def test_given_noise_must_be_a_finite_float_tensor_of_the_sample_shape():
    # issue 28: every pipeline input is checked for shape, dtype and finiteness before the first UNet call
    pipeline = tiny()
    calls = unet_calls(pipeline)
    for noise, message in [
        (torch.full((1, 3, 8, 8), float("nan")), "noise holds NaN or infinite values"),
        (
            torch.zeros(1, 3, 8, 8, dtype=torch.long),
            r"a float tensor of N\(0, I\) draws, got \(1, 3, 8, 8\) torch.int64",
        ),
        (np.zeros((1, 3, 8, 8), np.float32), "noise must have shape .*got ndarray"),
    ]:
        with pytest.raises(ValueError, match=message):
            pipeline(noise=noise, num_inference_steps=2)
    assert calls == []


def test_learned_range_pipeline_samples_with_ours_and_with_diffusers_schedulers():
    pipeline = Source.of("ddpm-tiny-8").build(
        unet_overrides={"out_channels": 6}, scheduler_overrides={"variance_type": "learned_range"}
    )
    pipeline.set_progress_bar_config(disable=True)
    assert np.isfinite(sample(pipeline, steps=5)).all()
    config = {k: v for k, v in pipeline.scheduler.config.items() if not k.startswith("_")}
    reference = DDPMPipeline(unet=pipeline.unet, scheduler=DDPMScheduler(**config))
    reference.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(sample(pipeline, steps=5), sample(reference, steps=5))
    for scheduler_class in (DDIMScheduler, DPMSolverMultistepScheduler):  # they get the first 3 channels
        pipeline.scheduler = scheduler_class.from_config(config)
        assert np.isfinite(sample(pipeline, steps=5)).all()


def test_bfloat16_sampling_on_cpu():
    pipeline = tiny()
    reference = sample(pipeline, steps=3)
    pipeline.to(torch_dtype=torch.bfloat16)
    images = sample(pipeline, steps=3)
    assert images.dtype == np.float32 and np.isfinite(images).all()
    assert np.abs(images - reference).mean() < 0.1


def test_save_and_load_round_trip(tmp_path):
    pipeline = tiny(beta_schedule="cosine", variance_type="fixed_large")
    pipeline.save_pretrained(tmp_path)
    files = {os.path.relpath(os.path.join(d, f), tmp_path) for d, _, fs in os.walk(tmp_path) for f in fs}
    assert {
        "model_index.json",
        "pipeline_ddpm_hub.py",
        "pipeline_ddpm_hub_img2img.py",
        "pipeline_ddpm_hub_inpaint.py",
        "scheduler/scheduling_ddpm_hub.py",
        "scheduler/scheduler_config.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
    } <= files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_ddpm_hub", "DDPMHubPipeline"]
    assert index["scheduler"] == ["scheduling_ddpm_hub", "DDPMHubScheduler"]
    loaded = DDPMHubPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.scheduler) is DDPMHubScheduler  # the installed class, no remote code
    assert loaded.scheduler.config.beta_schedule == "squaredcos_cap_v2"
    np.testing.assert_array_equal(sample(loaded), sample(pipeline))
    half = DDPMHubPipeline.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
    assert half.unet.dtype == torch.bfloat16


def test_pickle_weights_are_not_written():
    with pytest.raises(ValueError, match="safetensors weights only"):
        tiny().save_pretrained("unused", safe_serialization=False)


def test_diffusers_ddpm_pipeline_folder_loads(tmp_path):
    pipeline = tiny(variance_type="fixed_large")
    config = {k: v for k, v in pipeline.scheduler.config.items() if not k.startswith("_")}
    reference = DDPMPipeline(unet=pipeline.unet, scheduler=DDPMScheduler(**config))
    reference.set_progress_bar_config(disable=True)
    reference.save_pretrained(tmp_path)
    loaded = DDPMHubPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.scheduler) is DDPMHubScheduler  # upgraded: same chain, plus the likelihood helpers
    np.testing.assert_array_equal(sample(loaded, steps=10), sample(reference, steps=10))


def test_a_diffusers_config_ddpm_hub_refuses_keeps_diffusers_scheduler(tmp_path):
    pipeline = tiny()
    # zero terminal SNR with epsilon prediction: DDPMHubScheduler refuses it (x_0 = (x_T - eps) / 0), diffusers runs it
    reference = DDPMPipeline(unet=pipeline.unet, scheduler=DDPMScheduler(rescale_betas_zero_snr=True))
    reference.save_pretrained(tmp_path)
    assert type(DDPMHubPipeline.from_pretrained(tmp_path).scheduler) is DDPMScheduler


def test_folders_that_are_not_ddpm_pipelines_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no model_index.json"):
        DDPMHubPipeline.from_pretrained(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "X", "vae": ["diffusers", "AutoencoderKL"]}))
    with pytest.raises(ValueError, match="is not a DDPM pipeline"):
        DDPMHubPipeline.from_pretrained(tmp_path)
    with pytest.raises(TypeError, match="unexpected arguments: foo"):
        DDPMHubPipeline.from_pretrained(tmp_path, foo=1)


REMOTE_CODE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["ddpm_hub"] = None  # ddpm_hub cannot be imported in this process
    import numpy as np, torch
    from diffusers import DiffusionPipeline
    torch.set_num_threads(1)  # as the test process (conftest): same kernels, bit-identical images
    folder, out = sys.argv[1], sys.argv[2]
    try:
        DiffusionPipeline.from_pretrained(folder)
    except Exception as error:
        print("REFUSED", type(error).__name__, error)
    pipeline = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    pipeline.set_progress_bar_config(disable=True)
    print("LOADED", type(pipeline).__name__, type(pipeline.scheduler).__name__)
    images = pipeline(batch_size=2, num_inference_steps=4, generator=torch.manual_seed(0), output_type="np").images
    np.save(out, images)
    """
)


@pytest.mark.slow
def test_plain_diffusers_loads_the_folder_with_trust_remote_code(tmp_path):
    pipeline = tiny(variance_type="fixed_large")
    folder = tmp_path / "pipeline"
    pipeline.save_pretrained(folder)
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_CODE_SCRIPT, str(folder), str(tmp_path / "images.npy")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REFUSED" in result.stdout  # without the flag diffusers says no
    assert "LOADED DDPMHubPipeline DDPMHubScheduler" in result.stdout
    np.testing.assert_array_equal(np.load(tmp_path / "images.npy"), sample(pipeline))


def test_likelihood_method_matches_the_library_function():
    from ddpm_hub.evaluation.likelihood import bits_per_dim

    pipeline = tiny()
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    direct = bits_per_dim(pipeline, images, num_steps=5, generator=torch.Generator().manual_seed(1))
    method = pipeline.likelihood(images, num_steps=5, generator=torch.Generator().manual_seed(1))
    assert method.label == direct.label and "strided bound (5 of 1000 steps)" in method.label
    torch.testing.assert_close(torch.as_tensor(method.bits_per_dim), torch.as_tensor(direct.bits_per_dim))


# ----------------------------------------------------------------------------------------------------------------
# Folders a loader refuses (the reliability probe): a trained folder with only pickle weights is refused, never
# taken for an untrained configuration; every broken file is named in the error (configs, the model index).


def pickle_only_folder(folder: Path) -> Path:
    trained_folder(folder)
    weights = folder / WEIGHTS
    torch.save(load_file(weights), folder / "unet" / "diffusion_pytorch_model.bin")
    weights.unlink()
    return folder


def test_a_folder_with_only_pickle_weights_is_refused_everywhere(tmp_path, capsys):
    folder = pickle_only_folder(tmp_path / "pickled")
    grid = tmp_path / "grid.png"
    assert cli.main(["sample", str(folder), "--num_images", "1", "--steps", "2", "--output", str(grid)]) == 2
    assert "only pickle weights" in capsys.readouterr().err and not grid.exists()
    assert cli.main(["eval", str(folder), "--bpd", "--bpd_steps", "2", "--max_images", "2"]) == 2
    assert "only pickle weights" in capsys.readouterr().err and not (folder / "metrics.json").exists()
    with pytest.raises(UsageError, match="only pickle weights"):
        check(["--pipeline", str(folder)])  # not a fresh start from the configuration
    assert DDPMHubPipeline.from_pretrained(folder, allow_pickle=True).unet.config.sample_size == 8  # if trusted


def edit_json(path: Path, change) -> None:
    path.write_text(change(path.read_text()))


def test_broken_pipeline_files_are_named(tmp_path, capsys):
    configuration = tmp_path / "config"
    trained_folder(configuration)
    (configuration / WEIGHTS).unlink()  # a configuration: configs only
    unet_config = configuration / "unet" / "config.json"
    good = unet_config.read_text()
    unet_config.write_text(good[:-20])
    with pytest.raises(UsageError, match=f"{unet_config} \\(the UNet configuration\\) is not valid JSON"):
        check(["--pipeline", str(configuration)])
    unet_config.write_text(json.dumps({k: v for k, v in json.loads(good).items() if k != "block_out_channels"}))
    with pytest.raises(UsageError, match=f"{unet_config} lacks block_out_channels"):
        check(["--pipeline", str(configuration)])
    unet_config.write_text(good)

    index = configuration / "model_index.json"
    edit_json(index, lambda text: text.replace('"DDPMHubScheduler"', '"NoSuchScheduler"'))
    assert cli.main(["info", str(configuration)]) == 2
    assert f"{index}: the scheduler is scheduling_ddpm_hub.NoSuchScheduler" in capsys.readouterr().err

    trained = trained_folder(tmp_path / "trained")
    edit_json(trained / "model_index.json", lambda text: text.replace('"UNet2DModel"', '"UNet2DModel", "extra"'))
    with pytest.raises(UsageError, match="the entry 'unet' must be a \\[library, class\\] pair"):
        DDPMHubPipeline.from_pretrained(trained)
    (trained / "model_index.json").write_text("{")
    with pytest.raises(UsageError, match="model_index.json \\(the pipeline's model index\\) is not valid JSON"):
        DDPMHubPipeline.from_pretrained(trained)
    trained = trained_folder(tmp_path / "trained-2")
    (trained / "unet" / "config.json").write_text("{")
    assert cli.main(["sample", str(trained), "--num_images", "1", "--steps", "1"]) == 2
    assert "unet/config.json (the UNet configuration) is not valid JSON" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# Guidance and class labels (the second reliability probe): one range for the guidance scale wherever it enters;
# a model knows the class ids it was trained on, and class settings that do not fit the embedding are refused.


NON_FINITE_OR_OUT_OF_RANGE = [float("nan"), float("inf"), 1e308, -2.0, 101.0]


@pytest.mark.parametrize("scale", NON_FINITE_OR_OUT_OF_RANGE)
def test_every_pipeline_refuses_a_guidance_scale_out_of_the_one_range(scale):
    pipeline = conditional()
    image = torch.zeros(1, 3, 8, 8)
    calls = [
        lambda: pipeline(class_labels=1, guidance_scale=scale, num_inference_steps=2),
        lambda: DDPMHubImg2ImgPipeline.from_pipe(pipeline)(image, class_labels=1, guidance_scale=scale),
        lambda: DDPMHubInpaintPipeline.from_pipe(pipeline)(image, image, class_labels=1, guidance_scale=scale),
        lambda: Source.of("ddpm-tiny-8").build()(guidance_scale=scale, num_inference_steps=2),  # unconditional too
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"guidance_scale must be a number in \[0, 100\]"):
            call()
    # the edges of the range are valid
    for valid in (0.0, 100):
        assert pipeline(class_labels=1, guidance_scale=valid, num_inference_steps=1, output_type="np").images.shape


def test_only_the_trained_classes_are_labels_and_the_null_label_is_not_advertised():
    pipeline = conditional(num_classes=6)  # 11 embeddings: 6 classes trained, the null label 10, rows 6..9 never
    images = pipeline(class_labels=[0, 5], num_inference_steps=1, output_type="np").images
    assert images.shape == (2, 8, 8, 3)
    for untrained in (6, 7, 9, -1):
        with pytest.raises(ValueError) as refused:
            pipeline(class_labels=untrained, num_inference_steps=1)
        message = str(refused.value)
        assert f"got {untrained}" in message and "the 6 classes this model was trained on (ids 0..5: c0, c1" in message
        assert "10" not in message  # the null label is never offered as a label
    with pytest.raises(ValueError, match=r"class label 10 is the null label .* leave class_labels out"):
        pipeline(class_labels=10, num_inference_steps=1)
    with pytest.raises(ValueError, match="integer ids or class names, got 2.5"):
        pipeline(class_labels=[2.5], num_inference_steps=1)
    # the null label stays reachable the documented ways: no labels, or guidance 0
    null = pipeline(batch_size=1, num_inference_steps=2, output_type="np", generator=torch.manual_seed(0)).images
    guided = pipeline(
        class_labels=3, guidance_scale=0, num_inference_steps=2, output_type="np", generator=torch.manual_seed(0)
    ).images
    np.testing.assert_array_equal(null, guided)
    assert pipeline.conditioning.classes.num_classes == 6


def test_class_settings_that_do_not_fit_the_embedding_are_refused_by_name(tmp_path):
    conditional(num_classes=6).save_pretrained(tmp_path / "model")
    index_path = tmp_path / "model" / "model_index.json"
    index = json.loads(index_path.read_text())
    for edit, message in (
        ({"num_classes": 20}, r"num_classes=20 is not in 1..10"),
        ({"null_class_label": 11}, r"null_class_label=11 is not a row of the class embedding \(0..10\)"),
        ({"id2label": {str(i): f"c{i}" for i in range(12)}}, r"id2label names ids 0..11, beyond the 10 classes"),
    ):
        index_path.write_text(json.dumps({**index, **edit}))
        pipeline = DDPMHubPipeline.from_pretrained(tmp_path / "model")
        with pytest.raises(ValueError, match=message):  # before any UNet call reaches a row that does not exist
            pipeline(class_labels=0, num_inference_steps=1)


# ----------------------------------------------------------------------------------------------------------------
# Loading and casting: nothing of the noise of every run that a user cannot act on (the second reliability probe)


@pytest.fixture
def diffusers_warnings():
    """The messages diffusers' loggers emit at WARNING (they do not propagate to the root logger's capture)."""
    import logging

    from diffusers.utils import logging as diffusers_logging

    messages = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    root = logging.getLogger("diffusers")
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_warning()
    root.addHandler(handler)
    yield messages
    root.removeHandler(handler)
    diffusers_logging.set_verbosity(verbosity)


def test_loading_and_casting_say_nothing_a_user_cannot_act_on(tmp_path, diffusers_warnings):
    from diffusers import DiffusionPipeline

    conditional().save_pretrained(tmp_path / "model")
    plain = DiffusionPipeline.from_pretrained(tmp_path / "model", trust_remote_code=True)
    ours = DDPMHubPipeline.from_pretrained(tmp_path / "model")
    assert plain.config.id2label == ours.config.id2label == {i: f"c{i}" for i in range(10)}
    ours.to(torch.bfloat16)
    plain.to("cpu", torch.float32)
    DDPMHubInpaintPipeline.from_pipe(ours, torch_dtype=torch.float32)
    assert not [m for m in diffusers_warnings if "Expected types for id2label" in m or "kept in float32" in m]
    ours.unet._keep_in_fp32_modules = ["conv_in"]  # a model that does keep modules in float32 is still told
    ours.to(torch.bfloat16)
    assert any("should be kept in float32: ['conv_in']" in m for m in diffusers_warnings)
