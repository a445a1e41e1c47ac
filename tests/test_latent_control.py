"""Every control on a latent model (a pipeline with a `vae`): image-to-image and inpainting in latent space, the
likelihood's refusal, the model card and `ddpm-hub info`, and the task pipelines saved and loaded both ways."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from helpers import tiny_latent_pipeline, tiny_vae

from ddpm_hub import DDPMHubImg2ImgPipeline, DDPMHubInpaintPipeline, DDPMHubPipeline, cli
from ddpm_hub.errors import UsageError
from ddpm_hub.hub.model_card import render_model_card
from ddpm_hub.shipped.latents_ddpm_hub import decode, encode, latent_mask
from ddpm_hub.shipped.pipeline_ddpm_hub_inpaint import repaint_levels


def tiny_latent(seed: int = 0, scaling_factor: float = 0.5) -> DDPMHubPipeline:
    """An RGB AutoencoderKL with f = 4 (16x16 images, 4x4x4 latents) and a UNet on its latents; random weights."""
    return tiny_latent_pipeline(tiny_vae(channels=3, scaling_factor=scaling_factor, seed=seed), seed=seed)


def image(seed: int = 0) -> torch.Tensor:
    """A smooth RGB image in [0, 1] `[1 x 3 x 16 x 16]`."""
    torch.manual_seed(seed)
    return torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4), size=16, mode="bilinear", align_corners=False)


def right_mask(start: int = 8) -> torch.Tensor:
    """White (generate) from column `start` on, `[1 x 1 x 16 x 16]`."""
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., start:] = 1
    return mask


def pixels(latents: torch.Tensor, vae) -> torch.Tensor:
    """What the pipeline's output does with x_0: decode, then [-1, 1] -> [0, 1]."""
    return (decode(vae, latents) / 2 + 0.5).clamp(0, 1)


def count_calls(module: torch.nn.Module) -> list:
    calls = []
    module.register_forward_pre_hook(lambda *args: calls.append(1))
    return calls


# ----------------------------------------------------------------------------------------------------------------
# Image-to-image (SDEdit) on latents


def test_img2img_at_strength_zero_returns_the_decoded_encoding_of_the_input():
    base = tiny_latent()
    pipeline = DDPMHubImg2ImgPipeline.from_pipe(base)
    pipeline.set_progress_bar_config(disable=True)
    assert pipeline.vae is base.vae  # from_pipe carries the autoencoder (an annotated component)
    x = image()
    calls = count_calls(pipeline.unet)
    with torch.no_grad():
        z_0 = encode(base.vae, x * 2 - 1)  # the posterior's mean, scaled
        round_trip = pixels(z_0, base.vae)
    out = pipeline(x, strength=0.0, num_inference_steps=10, output_type="pt").images
    torch.testing.assert_close(out, round_trip, rtol=0, atol=0)  # exactly decode(encode(x))
    # so the input comes back within the VAE's reconstruction error, and no more: nothing else touched it
    assert float((out - x).abs().max()) == float((round_trip - x).abs().max())
    latents = pipeline(x, strength=0.0, num_inference_steps=10, output_type="latent").images
    torch.testing.assert_close(latents, z_0, rtol=0, atol=0)
    assert calls == []


def test_img2img_noises_and_denoises_the_latents_and_at_strength_one_is_plain_sampling():
    base = tiny_latent()
    pipeline = DDPMHubImg2ImgPipeline.from_pipe(base)
    pipeline.set_progress_bar_config(disable=True)
    calls = count_calls(pipeline.unet)
    out = pipeline(image(), strength=0.5, num_inference_steps=10, output_type="np").images
    assert len(calls) == 5 and out.shape == (1, 16, 16, 3)
    noise = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(7))  # latent_shape(2)
    kwargs = {"num_inference_steps": 4, "output_type": "np"}
    generators = [torch.Generator().manual_seed(s) for s in (0, 1)]
    full = pipeline([image(), image(1)], strength=1.0, noise=noise, generator=generators, **kwargs).images
    plain = base(noise=noise, generator=[torch.Generator().manual_seed(s) for s in (0, 1)], **kwargs).images
    np.testing.assert_array_equal(full, plain)
    with pytest.raises(ValueError, match=r"noise must have shape \(2, 4, 4, 4\)"):
        pipeline([image(), image(1)], strength=0.5, noise=torch.zeros(2, 3, 16, 16), num_inference_steps=4)


# ----------------------------------------------------------------------------------------------------------------
# Inpainting (RePaint) on latents


def test_latent_mask_keeps_a_latent_only_where_all_its_pixels_are_known():
    keep = 1 - right_mask(6)  # an edge inside the second latent column (pixels 4..7)
    grid = latent_mask(keep, (4, 4))
    assert grid.shape == (1, 1, 4, 4) and grid[0, 0, 0].tolist() == [1, 0, 0, 0]
    assert latent_mask(1 - right_mask(8), (4, 4))[0, 0, 0].tolist() == [1, 1, 0, 0]  # on the grid: exact


@pytest.mark.parametrize("start, known_columns", [(8, 2), (6, 1)], ids=["edge-on-the-grid", "edge-inside-a-latent"])
def test_latent_inpainting_keeps_the_known_latents_and_redraws_the_others(start, known_columns):
    base = tiny_latent()
    pipeline = DDPMHubInpaintPipeline.from_pipe(base)
    pipeline.set_progress_bar_config(disable=True)
    x = image()
    with torch.no_grad():
        z_0 = encode(base.vae, torch.cat([x, x]) * 2 - 1)  # the batch the pipeline encodes: the same floats
    generator = [torch.Generator().manual_seed(s) for s in (0, 1)]
    call = {"num_inference_steps": 6, "jump_length": 2, "jump_n_sample": 2, "generator": generator}
    latents = pipeline([x, x], right_mask(start), output_type="latent", **call).images
    assert latents.shape == (2, 4, 4, 4)
    torch.testing.assert_close(
        latents[..., :known_columns], z_0[..., :known_columns], rtol=0, atol=0
    )  # re-imposed: exact
    assert float((latents[..., known_columns:] - z_0[..., known_columns:]).abs().min()) > 0  # every one redrawn
    assert not torch.equal(latents[0], latents[1])
    generator = [torch.Generator().manual_seed(s) for s in (0, 1)]
    images = pipeline([x, x], right_mask(start), output_type="pt", **{**call, "generator": generator}).images
    torch.testing.assert_close(images, pixels(latents, base.vae), rtol=0, atol=1e-6)  # the same chain, decoded


def test_latent_inpainting_keeps_repaints_resampling():
    pipeline = DDPMHubInpaintPipeline.from_pipe(tiny_latent())
    pipeline.set_progress_bar_config(disable=True)
    levels = repaint_levels(10, 3, 2)
    calls = count_calls(pipeline.unet)
    seen = []

    def callback(pipeline, i, t, tensors):
        seen.append(tuple(tensors["image"].shape))
        return {}

    pipeline(image(), right_mask(), num_inference_steps=10, jump_length=3, jump_n_sample=2, output_type="latent",
             callback_on_step_end=callback)  # fmt: skip
    assert len(calls) == sum(b < a for a, b in zip(levels, levels[1:])) == 10 + 3 * 3  # 3 jumps (0, 3, 6) of 3
    assert set(seen) == {(1, 4, 4, 4)}  # the callback sees latents


# ----------------------------------------------------------------------------------------------------------------
# The likelihood: refused, saying why


def test_the_likelihood_of_a_latent_model_is_refused_before_any_work(tmp_path, capsys):
    pipeline = tiny_latent()
    calls = count_calls(pipeline.unet)
    why = r"latent diffusion model, whose variational bound is over its .* 4×4×4 latents, not the image's pixels"
    with pytest.raises(UsageError, match=why + r".*AutoencoderKL does not define"):
        pipeline.likelihood(torch.zeros(2, 3, 16, 16, dtype=torch.uint8), num_steps=2)
    assert calls == []
    folder = tmp_path / "model"
    pipeline.save_pretrained(folder)
    out = tmp_path / "eval"
    assert cli.main(["eval", str(folder), "--bpd", "--max_images", "4", "--output_dir", str(out)]) == 2
    assert "it is a latent diffusion model" in capsys.readouterr().err
    assert not (out / "bpd.json").exists() and not (out / "metrics.json").exists()


# ----------------------------------------------------------------------------------------------------------------
# The model card and `ddpm-hub info`


def test_the_card_names_the_autoencoder_where_it_came_from_and_its_latents(tmp_path):
    folder = tmp_path / "model"
    tiny_latent().save_pretrained(folder)
    card = str(render_model_card(folder, "alice/latent"))
    assert "generates\n16×16 RGB images" in card and "4×4×4 latents of an autoencoder" in card
    row = next(line for line in card.splitlines() if line.startswith("| autoencoder |"))
    assert "diffusers `AutoencoderKL`" in row and "as published in this repo's `vae/`" in row
    assert "f = 4, latents 4×4×4 for 16×16 images, scaling factor 0.5" in row
    assert "- latent-diffusion" in card and '`output_type="latent"`' in card
    assert "bits/dim (`--bpd`) is refused for a latent model" in card

    (folder / "training_options.json").write_text(json.dumps({"vae": "stabilityai/sd-vae-ft-mse"}))
    card = str(render_model_card(folder, "alice/latent"))
    assert "[`stabilityai/sd-vae-ft-mse`](https://huggingface.co/stabilityai/sd-vae-ft-mse)" in card
    trained = tmp_path / "ddpm-vae-digits-64"
    trained.mkdir()
    (trained / "training_summary.json").write_text(json.dumps({"steps": 800}))
    (folder / "training_options.json").write_text(json.dumps({"vae": str(trained)}))
    card = str(render_model_card(folder, "alice/latent"))
    assert "frozen: trained with ddpm_hub (`ddpm-vae-digits-64`)" in card


def test_a_pixel_models_card_says_nothing_of_an_autoencoder(tmp_path):
    from ddpm_hub.pipelines import Source

    folder = tmp_path / "model"
    Source.of("ddpm-tiny-8").build().save_pretrained(folder)
    card = str(render_model_card(folder, "alice/pixels"))
    assert "autoencoder" not in card and "latent" not in card and "bits/dim\n(`--bpd`) and FID" in card


def test_info_shows_the_latent_and_the_image_shapes(tmp_path, capsys):
    folder = tmp_path / "model"
    tiny_latent().save_pretrained(folder)
    assert cli.main(["info", str(folder)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["latent_shape"] == [4, 4, 4] and info["image_shape"] == [3, 16, 16]
    assert info["resolution"] == 16 and info["channels"] == 3 and info["vae"] == "AutoencoderKL"
    assert info["vae_scale_factor"] == 4 and info["scaling_factor"] == 0.5 and info["shift_factor"] == 0.0


# ----------------------------------------------------------------------------------------------------------------
# Saved and loaded both ways: the installed classes, and plain diffusers with trust_remote_code


def task_calls(x: torch.Tensor, mask: torch.Tensor) -> dict:
    return {
        "pipeline_ddpm_hub_img2img": ((x,), {"strength": 0.5, "num_inference_steps": 6}),
        "pipeline_ddpm_hub_inpaint": ((x, mask), {"num_inference_steps": 4, "jump_length": 2, "jump_n_sample": 2}),
    }


def run_task(pipeline, args, kwargs) -> np.ndarray:
    return pipeline(*args, generator=torch.manual_seed(0), output_type="np", **kwargs).images


def test_task_pipelines_with_a_vae_load_from_a_saved_folder_with_the_installed_classes(tmp_path):
    base = tiny_latent()
    DDPMHubInpaintPipeline.from_pipe(base).save_pretrained(tmp_path)  # a task pipeline saves the model's folder
    assert (tmp_path / "vae" / "config.json").is_file() and (tmp_path / "latents_ddpm_hub.py").is_file()
    x, mask = image(), right_mask()
    for cls, (task, (args, kwargs)) in zip(
        (DDPMHubImg2ImgPipeline, DDPMHubInpaintPipeline), task_calls(x, mask).items()
    ):
        loaded = cls.from_pretrained(tmp_path)
        assert type(loaded) is cls and isinstance(loaded.vae, AutoencoderKL), task
        loaded.set_progress_bar_config(disable=True)
        np.testing.assert_array_equal(run_task(loaded, args, kwargs), run_task(cls.from_pipe(base), args, kwargs))
    assert type(DDPMHubPipeline.from_pretrained(tmp_path).vae) is AutoencoderKL


PLAIN_DIFFUSERS_TASKS = textwrap.dedent(
    """
    import sys
    sys.modules["ddpm_hub"] = None  # ddpm_hub cannot be imported in this process
    import numpy as np, torch
    from diffusers import DiffusionPipeline
    torch.set_num_threads(1)
    folder, inputs, out = sys.argv[1:4]
    x, mask = torch.load(inputs)  # tensors only
    calls = {
        "pipeline_ddpm_hub_img2img": ((x,), {"strength": 0.5, "num_inference_steps": 6}),
        "pipeline_ddpm_hub_inpaint": ((x, mask), {"num_inference_steps": 4, "jump_length": 2, "jump_n_sample": 2}),
    }
    results = {}
    for task, (args, kwargs) in calls.items():
        pipeline = DiffusionPipeline.from_pretrained(folder, custom_pipeline=task, trust_remote_code=True)
        pipeline.set_progress_bar_config(disable=True)
        print("LOADED", type(pipeline).__name__, type(pipeline.vae).__name__)
        results[task] = pipeline(*args, generator=torch.manual_seed(0), output_type="np", **kwargs).images
    np.savez(out, **results)
    """
)


@pytest.mark.slow
def test_plain_diffusers_runs_latent_img2img_and_inpainting_from_the_folder(tmp_path):
    base = tiny_latent()
    base.save_pretrained(tmp_path / "folder")
    x, mask = image(), right_mask()
    torch.save((x, mask), tmp_path / "inputs.pt")
    args = [str(tmp_path / name) for name in ("folder", "inputs.pt", "out.npz")]
    result = subprocess.run([sys.executable, "-c", PLAIN_DIFFUSERS_TASKS, *args], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("DDPMHubImg2ImgPipeline", "DDPMHubInpaintPipeline"):
        assert f"LOADED {name} AutoencoderKL" in result.stdout
    plain = np.load(tmp_path / "out.npz")
    tasks = {"pipeline_ddpm_hub_img2img": DDPMHubImg2ImgPipeline, "pipeline_ddpm_hub_inpaint": DDPMHubInpaintPipeline}
    for task, (args, kwargs) in task_calls(x, mask).items():
        np.testing.assert_array_equal(plain[task], run_task(tasks[task].from_pipe(base), args, kwargs))
