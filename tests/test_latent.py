"""Latent diffusion: the autoencoder's latent space (shipped/latents_ddpm_hub.py), a pipeline with a `vae` (sampling,
saving and loading both ways, the Hub), and training a DDPM on a frozen autoencoder's latents (`--vae`)."""

import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DModel
from helpers import (
    LAUNCHER,
    ROOT,
    assert_bit_identical,
    check,
    check_ok,
    run_script,
    summary,
    tiny_latent_pipeline,
    tiny_vae,
    unet_weights,
)

from ddpm_hub import DDPMHubPipeline, Source
from ddpm_hub.errors import UsageError
from ddpm_hub.shipped.latents_ddpm_hub import decode, encode, encode_posterior, latent_mask, posterior_latents

KILL_AFTER_2 = {"FAULT_KILL_AFTER_CHECKPOINT": "2"}


def latent_config(tmp_path: Path) -> Path:
    """ddpm-tiny-8's UNet on 4 latent channels of a 4x4 grid, with a `vae` component: a latent configuration."""
    folder = tmp_path / "tiny-latent"
    shutil.copytree(ROOT / "pipelines" / "ddpm-tiny-8", folder)
    unet = json.loads((folder / "unet" / "config.json").read_text())
    (folder / "unet" / "config.json").write_text(json.dumps({**unet, "in_channels": 4, "out_channels": 4}))
    tiny_vae().save_config(folder / "vae")
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "vae": ["diffusers", "AutoencoderKL"]}))
    return folder


def images(n: int = 2, channels: int = 1, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ----------------------------------------------------------------------------------------------------------------
# The latent space


def test_the_scaling_and_shift_factors_are_undone_by_decoding():
    x = images()
    plain, scaled = tiny_vae(), tiny_vae(scaling_factor=0.5, shift_factor=0.3)
    with torch.no_grad():
        mean, logvar = encode_posterior(plain, x)
        z = encode(scaled, x)  # the posterior's mean, shifted and scaled
        torch.testing.assert_close(z, (mean - 0.3) * 0.5)
        torch.testing.assert_close(decode(scaled, z), plain.decode(mean).sample)  # z / scaling + shift = the mean
        draw = encode(scaled, x, generator=torch.Generator().manual_seed(1), sample=True)
        noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(draw, posterior_latents(mean, logvar, scaled, noise))
    assert not torch.allclose(draw, z)


def test_a_pixel_mask_is_kept_on_the_latent_grid_only_where_every_pixel_is():
    mask = torch.ones(1, 1, 8, 8)
    mask[..., 0, 5] = 0  # one generated pixel: its whole latent is generated
    kept = latent_mask(mask, (2, 2))
    assert kept.flatten().tolist() == [1.0, 0.0, 1.0, 1.0]


# ----------------------------------------------------------------------------------------------------------------
# The pipeline


def test_a_latent_pipeline_samples_latents_and_decodes_them():
    pipeline = tiny_latent_pipeline()
    assert pipeline.latent_shape(2) == (2, 4, 4, 4) and pipeline.sample_shape(2) == (2, 1, 16, 16)
    assert pipeline.image_channels == 1
    call = {"batch_size": 2, "num_inference_steps": 3}
    latents = pipeline(**call, generator=torch.Generator().manual_seed(0), output_type="latent").images
    assert latents.shape == (2, 4, 4, 4)
    pixels = pipeline(**call, generator=torch.Generator().manual_seed(0), output_type="pt").images
    with torch.no_grad():
        torch.testing.assert_close(pixels, (decode(pipeline.vae, latents) / 2 + 0.5).clamp(0, 1))
    assert pipeline(**call, output_type="pil").images[0].size == (16, 16)


def test_a_latent_pipeline_saves_and_loads_both_ways_with_the_same_images(tmp_path):
    pipeline = tiny_latent_pipeline()
    pipeline.save_pretrained(tmp_path / "model")
    index = json.loads((tmp_path / "model" / "model_index.json").read_text())
    assert index["vae"] == ["diffusers", "AutoencoderKL"] and (tmp_path / "model" / "latents_ddpm_hub.py").is_file()
    call = {"batch_size": 2, "num_inference_steps": 3, "output_type": "np"}
    expected = pipeline(**call, generator=torch.Generator().manual_seed(0)).images
    loaded = DDPMHubPipeline.from_pretrained(tmp_path / "model")
    assert isinstance(loaded.vae, AutoencoderKL)
    np.testing.assert_array_equal(loaded(**call, generator=torch.Generator().manual_seed(0)).images, expected)
    plain = DiffusionPipeline.from_pretrained(tmp_path / "model", trust_remote_code=True)
    plain.set_progress_bar_config(disable=True)
    assert type(plain).__module__ != type(loaded).__module__  # the shipped file, not the installed package
    np.testing.assert_array_equal(plain(**call, generator=torch.Generator().manual_seed(0)).images, expected)


def test_a_latent_pipeline_goes_to_the_hub_and_back(hub_server, hub_cache, tmp_path):
    pipeline = tiny_latent_pipeline()
    pipeline.push_to_hub("alice/tiny-latent", token="hf_alice_write")
    loaded = DDPMHubPipeline.from_pretrained("alice/tiny-latent", token="hf_alice_write")
    call = {"batch_size": 1, "num_inference_steps": 2, "output_type": "np"}
    np.testing.assert_array_equal(
        loaded(**call, generator=torch.Generator().manual_seed(0)).images,
        pipeline(**call, generator=torch.Generator().manual_seed(0)).images,
    )


def test_a_latent_configuration_builds_with_its_autoencoder_s_shape(tmp_path):
    pipeline = Source.of(latent_config(tmp_path)).build(seed=0)
    assert isinstance(pipeline.vae, AutoencoderKL) and pipeline.sample_shape(1) == (1, 1, 32, 32)
    shipped = Source.of("ddpm-latent-digits-64").build(seed=None)
    assert shipped.latent_shape(1) == (1, 4, 16, 16) and shipped.sample_shape(1) == (1, 1, 64, 64)


# ----------------------------------------------------------------------------------------------------------------
# Training on latents


def test_vae_options_are_checked_before_any_work(tmp_path):
    config = latent_config(tmp_path)
    with pytest.raises(UsageError, match="latent configuration: .* Pass the autoencoder with --vae"):
        check(["--pipeline", str(config), "--output_dir", str(tmp_path / "out")])
    tiny_vae().save_pretrained(tmp_path / "vae")
    with pytest.raises(UsageError, match="4 latent channels and the UNet of --pipeline ddpm-tiny-8 takes 3"):
        check(["--pipeline", "ddpm-tiny-8", "--vae", str(tmp_path / "vae"), "--output_dir", str(tmp_path / "out")])
    (tmp_path / "unet").mkdir()
    UNet2DModel.from_config(UNet2DModel.load_config(config / "unet")).save_config(tmp_path / "unet")
    with pytest.raises(UsageError, match="not one of AutoencoderKL"):
        check(["--pipeline", str(config), "--vae", str(tmp_path / "unet"), "--output_dir", str(tmp_path / "out")])
    with pytest.raises(UsageError, match="no autoencoder configuration found"):
        check(["--pipeline", str(config), "--vae", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path / "out")])
    with pytest.raises(UsageError, match="--vae .* would be written over the autoencoder's folder"):
        check(["--pipeline", str(config), "--vae", str(tmp_path / "vae"), "--output_dir", str(tmp_path / "vae")])
    options, source = check(["--pipeline", str(config), "--vae", str(tmp_path / "vae"), "--output_dir", "x"])
    assert options.data.resolution == 32  # the pixels of its 8x8 latents (f = 4): the default resolution
    with pytest.raises(UsageError, match="--vae_scaling_factor applies to latent models .* trains in pixels"):
        check(["--pipeline", "ddpm-tiny-8", "--vae_scaling_factor", "0.5", "--output_dir", "x"])


def test_vae_scaling_factor_sets_the_latents_scale_the_pipeline_keeps(tmp_path):
    from ddpm_hub.training.model import training_pipeline

    config = latent_config(tmp_path)
    tiny_vae(scaling_factor=0.8).save_pretrained(tmp_path / "vae")
    args = ["--pipeline", str(config), "--vae", str(tmp_path / "vae"), "--output_dir", "x"]
    pipelines = [training_pipeline(*check([*args, *extra])) for extra in ([], ["--vae_scaling_factor", "0.2"])]
    assert [p.vae.config.scaling_factor for p in pipelines] == [0.8, 0.2]
    x = images(size=32)
    torch.testing.assert_close(encode(pipelines[1].vae, x), encode(pipelines[0].vae, x) * 0.25)  # z' = z x 0.2
    pipelines[1].save_pretrained(tmp_path / "saved")
    assert DDPMHubPipeline.from_pretrained(tmp_path / "saved").vae.config.scaling_factor == 0.2
    from types import SimpleNamespace

    from ddpm_hub.training.checkpoint_folders import record_differences
    from ddpm_hub.training.checkpointing import latents_record

    saved, now = ({"latents": latents_record(SimpleNamespace(vae=p.vae))} for p in pipelines)
    assert record_differences(saved, now) == [  # a checkpoint resumed at another scale is refused, naming the option
        "latents.scaling_factor: 0.8 in the checkpoint, 0.2 in this run (--vae_scaling_factor)"
    ]
    assert record_differences({"latents": None}, now)[0].endswith("in this run (--vae)")


@pytest.mark.slow
def test_training_on_latents_resumes_bit_identically_and_saves_the_autoencoder(tmp_path):
    config = latent_config(tmp_path)
    tiny_vae(scaling_factor=0.8).save_pretrained(tmp_path / "vae")  # a diffusers AutoencoderKL folder as --vae
    common = ["--pipeline", str(config), "--vae", str(tmp_path / "vae"), "--dataset_name", "builtin:digits"]
    common += ["--resolution", "16", "--train_batch_size", "8", "--max_train_steps", "4", "--logger", "none"]
    common += ["--validation_steps", "0", "--num_validation_images", "2", "--ddpm_num_inference_steps", "2"]
    common += ["--checkpointing_steps", "2", "--validation_holdout", "8", "--max_train_samples", "64"]
    check_ok(run_script([*common, "--output_dir", str(tmp_path / "a")]))
    killed = run_script([*common, "--output_dir", str(tmp_path / "b")], script=LAUNCHER, env=KILL_AFTER_2)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    check_ok(run_script([*common, "--output_dir", str(tmp_path / "b"), "--resume_from_checkpoint", "latest"]))
    assert_bit_identical(unet_weights(tmp_path / "a"), unet_weights(tmp_path / "b"))
    trained = DDPMHubPipeline.from_pretrained(tmp_path / "a")
    assert trained.vae.config.scaling_factor == 0.8 and trained.sample_shape(1) == (1, 1, 16, 16)
    assert summary(tmp_path / "a")["validation"]["bits_per_dim"] is None  # over latents: no bits/dim of pixels


def test_the_posteriors_are_cached_once_per_autoencoder(tmp_path, monkeypatch):
    from accelerate import Accelerator

    from ddpm_hub.training import latents

    pixels = torch.randint(0, 256, (5, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    file, accelerator = tmp_path / "images.u8", Accelerator(cpu=True)
    first, second = tiny_vae(seed=0), tiny_vae(seed=1)
    cached = latents.cached_posteriors(first, pixels, file, accelerator)
    with torch.no_grad():
        mean, logvar = encode_posterior(first, pixels.float() / 127.5 - 1)
    torch.testing.assert_close(cached, torch.cat([mean, logvar], dim=1))
    monkeypatch.setattr(latents, "encode_posterior", lambda *a: pytest.fail("the cached posteriors are encoded again"))
    torch.testing.assert_close(latents.cached_posteriors(first, pixels, file, accelerator), cached)
    monkeypatch.undo()
    other = latents.cached_posteriors(second, pixels, file, accelerator)  # another autoencoder, another file
    assert len(list((tmp_path / "posteriors").glob("*.npy"))) == 2 and not torch.allclose(other, cached)
    served = latents.PosteriorImages(cached, random_flip=True, indices=torch.tensor([4, 2]))
    batch = served.get_batch([0, 1], torch.Generator().manual_seed(3))
    flips = torch.rand(2, generator=torch.Generator().manual_seed(3)) < 0.5  # the pixels' rule and draws
    for row, (index, flip) in enumerate(zip([4, 2], flips)):
        torch.testing.assert_close(batch[row], cached[index].flip(-1) if flip else cached[index])
    z = latents.training_latents(first, batch, seed=0, m=7, rank=0, posteriors=True)  # one draw from each
    assert z.shape == (2, 4, 4, 4)
    torch.testing.assert_close(z, latents.draw_latents(first, batch, 0, 7, 0))


@pytest.mark.slow
def test_two_processes_train_on_latents_encoded_once(tmp_path):
    config = latent_config(tmp_path)
    tiny_vae(seed=5).save_pretrained(tmp_path / "vae")  # a new autoencoder: its posteriors are not cached yet
    args = ["--pipeline", str(config), "--vae", str(tmp_path / "vae"), "--dataset_name", "builtin:digits"]
    args += ["--resolution", "16", "--train_batch_size", "4", "--max_train_steps", "2", "--logger", "none"]
    args += ["--validation_steps", "0", "--num_validation_images", "2", "--ddpm_num_inference_steps", "2"]
    args += ["--checkpointing_steps", "0", "--validation_holdout", "8", "--output_dir", str(tmp_path / "out")]
    result = run_script([*args, "--max_train_samples", "64"], processes=2)
    check_ok(result)
    assert result.stderr.count("into their posteriors, cached in") == 1  # the machine's main process, once
    assert summary(tmp_path / "out")["steps"] == 2
    assert DDPMHubPipeline.from_pretrained(tmp_path / "out").vae is not None
