"""Training an autoencoder with training/train.py (`ddpm_hub.training.autoencoder`): the objective, the scaling
factor and the latents it gives, the configuration, the refusals, an exact resume, two processes."""

import json

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DModel
from helpers import check_ok, run_script
from safetensors.torch import load_file

from ddpm_hub.errors import UsageError
from ddpm_hub.loading.configs import PIPELINES_DIR, count_parameters
from ddpm_hub.shipped.latents_ddpm_hub import decode, encode, vae_scale_factor
from ddpm_hub.training.autoencoder_loss import autoencoder_loss, kl_to_standard_normal, ssim
from ddpm_hub.training.autoencoder_output import measure_scaling_factor
from ddpm_hub.training.main import main
from ddpm_hub.training.options import AutoencoderOptions

TINY_VAE = {
    "in_channels": 1,
    "out_channels": 1,
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
    "block_out_channels": [8, 8],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 4,
    "sample_size": 16,
    "mid_block_add_attention": False,
    "scaling_factor": 1.0,
}
TINY_RUN = [
    "--dataset_name", "builtin:digits", "--resolution", "16", "--max_images", "72", "--validation_holdout", "8",
    "--train_batch_size", "8", "--lr_warmup_steps", "2", "--learning_rate", "1e-3", "--num_validation_images", "4",
    "--logger", "none", "--seed", "3",
]  # fmt: skip


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL.from_config(TINY_VAE).eval()


def tiny_config(folder):
    AutoencoderKL.from_config(TINY_VAE).save_config(folder)
    return folder


def test_the_loss_terms_have_their_reference_values():
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    assert torch.allclose(ssim(x, x), torch.ones(2))
    assert float(ssim(x, -x).mean()) < 0.1
    zero = torch.zeros(2, 4, 4, 4)
    assert torch.equal(kl_to_standard_normal(zero, zero), torch.zeros(2))  # N(0, I) itself
    mean = torch.full((1, 4, 4, 4), 2.0)
    assert torch.allclose(kl_to_standard_normal(mean, torch.zeros_like(mean)), torch.tensor([0.5 * 4 * 64]))
    x_hat = x + 0.1
    loss, terms = autoencoder_loss(x, x_hat, mean.expand(2, -1, -1, -1), zero, AutoencoderOptions(kl_weight=1e-2))
    assert torch.isclose(terms["reconstruction"], torch.tensor(0.1))
    assert torch.isclose(terms["kl"], torch.tensor(0.5 * 4 * 64 / 256))  # the KL per image, per pixel
    assert torch.isclose(loss, terms["reconstruction"] + 1e-2 * terms["kl"])
    l2, _ = autoencoder_loss(x, x_hat, zero, zero, AutoencoderOptions(reconstruction_loss="l2", kl_weight=0.0))
    assert torch.isclose(l2, torch.tensor(0.01))


def test_the_measured_scaling_factor_gives_latents_of_unit_std():
    """The latents a latent DDPM trains on (draws from each posterior, scaled) have std 1 on the measured images."""
    vae = tiny_vae()
    with torch.no_grad():  # posteriors far from N(0, I), as after training: wide means, narrow variances
        vae.quant_conv.weight.mul_(torch.tensor([4.0] * 4 + [2.0] * 4)[:, None, None, None])
        vae.quant_conv.bias.copy_(torch.tensor([0.5] * 4 + [-3.0] * 4))
    images = torch.randint(0, 256, (48, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    measured = measure_scaling_factor(vae, images.split(16))
    assert measured["num_images"] == 48 and measured["scaling_factor"] != pytest.approx(1.0, abs=0.05)
    vae.register_to_config(scaling_factor=measured["scaling_factor"])
    x = images.float() / 127.5 - 1
    with torch.no_grad():
        draws = torch.cat([encode(vae, x, torch.Generator().manual_seed(k), sample=True) for k in range(8)])
        means = encode(vae, x)  # the posterior's mean, scaled
        back = decode(vae, means)
        direct = vae.decode(vae.encode(x).latent_dist.mean).sample
    assert draws.shape == (8 * 48, 4, 8, 8) and vae_scale_factor(vae) == 2
    centred = draws - measured["latent_mean"] * measured["scaling_factor"]
    assert float(centred.pow(2).mean().sqrt()) == pytest.approx(1.0, abs=0.02)
    assert torch.allclose(back, direct, atol=1e-5)  # the scaling is undone before the decoder


def test_the_shipped_autoencoder_configuration():
    """f = 4 with 4 latent channels on gray 64x64 digits; the README's parameter count is the model's."""
    folder = PIPELINES_DIR / "ddpm-vae-digits-64"
    config = json.loads((folder / "config.json").read_text())
    vae = AutoencoderKL.from_config(config)
    assert config["_class_name"] == "AutoencoderKL" and not (folder / "model_index.json").exists()
    assert (vae_scale_factor(vae), vae.config.latent_channels, vae.config.in_channels) == (4, 4, 1)
    assert f"Parameters: {count_parameters(vae):,}." in (folder / "README.md").read_text()


def test_a_folder_with_another_models_config_is_refused(tmp_path):
    UNet2DModel.from_config(UNet2DModel.load_config(PIPELINES_DIR / "ddpm-tiny-8" / "unet")).save_config(
        tmp_path / "unet"
    )
    with pytest.raises(UsageError, match=r"configuration of UNet2DModel.*AutoencoderKL configuration"):
        main(["--pipeline", str(tmp_path / "unet"), "--output_dir", str(tmp_path / "out"), "--dry-run"])
    with pytest.raises(UsageError, match=r"--prediction_type: diffusion options; .* an autoencoder configuration"):
        main(["--pipeline", "ddpm-vae-digits-64", "--prediction_type", "v_prediction", "--dry-run"])
    with pytest.raises(UsageError, match="multiple of 4"):
        main(["--pipeline", "ddpm-vae-digits-64", "--resolution", "30", "--dry-run"])


def test_an_autoencoder_configuration_is_trained_by_the_same_script(tmp_path, capsys):
    folder = tiny_config(tmp_path / "vae")
    main(["--pipeline", str(folder), "--output_dir", str(tmp_path / "out"), "--dry-run", *TINY_RUN])
    report = json.loads(capsys.readouterr().out)
    assert report["pipeline_source"] == "autoencoder configuration"
    assert report["options"]["resolution"] == 16 and report["options"]["reconstruction_loss"] == "l1"


class Stop(Exception):
    """Stands for a kill right after a checkpoint."""


@pytest.mark.parametrize("objective", [["--ssim_weight", "0.1"], ["--disc_weight", "0.5", "--disc_start", "2"]])
def test_resume_is_bit_identical_and_the_folder_is_an_autoencoder(tmp_path, monkeypatch, objective):
    """
    6 steps straight, and 3 + a resume to 6 (EMA on; SSIM, or a discriminator from step 3): the same weights, the
    same scaling factor.
    """
    from ddpm_hub.training import autoencoder_loop

    folder = tiny_config(tmp_path / "vae")
    common = ["--pipeline", str(folder), *TINY_RUN, "--use_ema", *objective, "--checkpointing_steps", "3"]
    common += ["--max_train_steps", "6", "--cpu_threads", "1"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    main([*common, "--output_dir", str(straight)])
    save = autoencoder_loop.save_autoencoder_checkpoint

    def save_then_stop(run, step):
        save(run, step)
        raise Stop(step)

    monkeypatch.setattr(autoencoder_loop, "save_autoencoder_checkpoint", save_then_stop)
    with pytest.raises(Stop):
        main([*common, "--output_dir", str(resumed)])
    monkeypatch.setattr(autoencoder_loop, "save_autoencoder_checkpoint", save)
    main([*common, "--output_dir", str(resumed), "--resume_from_checkpoint", "latest"])
    weights = [load_file(out / "diffusion_pytorch_model.safetensors") for out in (straight, resumed)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    configs = [json.loads((out / "config.json").read_text()) for out in (straight, resumed)]
    assert configs[0]["scaling_factor"] == configs[1]["scaling_factor"] != 1.0
    vae = AutoencoderKL.from_pretrained(straight)
    assert vae.config.scaling_factor == configs[0]["scaling_factor"]
    summary = json.loads((straight / "training_summary.json").read_text())
    assert summary["steps"] == 6 and summary["validation"]["held_out_images"] == 8
    assert json.loads((resumed / "training_summary.json").read_text())["resumed_from_step"] == 3
    assert summary["autoencoder"]["downsampling_factor"] == 2 and (straight / "reconstructions.png").is_file()
    saved = sorted(path.name for path in (resumed / "checkpoints" / "checkpoint-6").iterdir())
    assert ("model_1.safetensors" in saved) == ("--disc_weight" in objective)  # the discriminator's state
    with pytest.raises(UsageError, match="not a checkpoint of this autoencoder"):  # another objective
        main([*common, "--output_dir", str(resumed), "--resume_from_checkpoint", "latest", "--kl_weight", "0.1"])


@pytest.mark.slow
def test_two_processes_train_one_autoencoder(tmp_path):
    """DDP (gloo, two processes on this CPU): the ranks end with the same weights, and the folder is an autoencoder."""
    folder, out = tiny_config(tmp_path / "vae"), tmp_path / "out"
    check_ok(run_script(["--pipeline", str(folder), *TINY_RUN, "--max_train_steps", "4", "--output_dir", str(out)], 2))
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["global_batch_size"] == 16
    assert len(set(summary["weights_sha256_per_rank"])) == 1 and len(summary["weights_sha256_per_rank"]) == 2
    measured = summary["autoencoder"]["scaling"]["scaling_factor"]
    assert AutoencoderKL.from_pretrained(out).config.scaling_factor == measured
