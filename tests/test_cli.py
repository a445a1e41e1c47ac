"""The `ddpm-hub` command line: what each command takes of a model and of its files, refused in one line before any
work (tiny models built in the test)."""

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

from ddpm_hub import DDPMHubPipeline, cli
from ddpm_hub.configs import build_pipeline

TINY_SR = {
    "block_out_channels": [8, 16], "down_block_types": ["DownBlock2D"] * 2, "up_block_types": ["UpBlock2D"] * 2,
    "norm_num_groups": 4, "sample_size": 16,
}  # fmt: skip


@pytest.fixture
def sr_model(tmp_path):
    """A saved tiny super-resolution model (ddpm-sr-16-to-64's kind: 4x, RGB) and a 4 x 4 image."""
    build_pipeline("ddpm-sr-16-to-64", seed=0, unet_overrides=TINY_SR).save_pretrained(tmp_path / "sr")
    Image.fromarray(np.full((4, 4, 3), 128, dtype=np.uint8)).save(tmp_path / "small.png")
    return tmp_path / "sr"


@pytest.mark.parametrize(
    "command",
    [
        ["sample", "--guidance_scale", "1"],
        ["inpaint", "IMAGE", "IMAGE"],
        ["img2img", "IMAGE"],
        ["eval", "--fid", "--features", "digits"],
        ["eval", "--sweep", "--features", "digits"],
    ],
)
def test_a_super_resolution_model_is_refused_by_the_commands_that_draw_from_noise(sr_model, tmp_path, capsys, command):
    # issue 28: sample blamed --guidance_scale; inpaint, img2img and eval --fid were tracebacks
    name, *rest = command
    output = tmp_path / "out.png"
    argv = [name, str(sr_model), *[str(tmp_path / "small.png") if a == "IMAGE" else a for a in rest]]
    argv += ["--output_dir", str(tmp_path / "eval")] if name == "eval" else ["--steps", "1", "--output", str(output)]
    assert cli.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "Traceback" not in error and "guidance_scale" not in error
    assert f"ddpm-hub {name}: error: {sr_model} is a super-resolution model (it upsamples a given image 4x)" in error
    assert f"`ddpm-hub upscale {sr_model} IMAGE...`" in error and "sample BASE --upscale" in error
    assert not output.exists() and not (tmp_path / "eval").exists()


def test_a_prompts_file_that_is_not_utf8_text_is_refused_naming_it(tmp_path, capsys):
    # issue 28: --prompts_file of binary bytes was a UnicodeDecodeError traceback
    prompts = tmp_path / "prompts.bin"
    prompts.write_bytes(bytes(range(256)))
    argv = ["sample", "ddpm-tiny-8", "--prompts_file", str(prompts), "--output", str(tmp_path / "grid.png")]
    assert cli.main(argv) == 2
    error = capsys.readouterr().err
    assert f"--prompts_file {str(prompts)!r} is not UTF-8 text" in error and "one prompt per line" in error


def test_non_finite_weights_are_refused_where_a_model_is_loaded(tmp_path, capsys):
    # issue 28: NaN weights gave an all-black grid with rc 0 (and NaN images from the API)
    folder = tmp_path / "model"
    build_pipeline("ddpm-tiny-8", seed=0).save_pretrained(folder)
    weights_file = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights = load_file(weights_file)
    weights["conv_out.bias"][0] = float("nan")
    save_file(weights, weights_file)
    grid = tmp_path / "grid.png"
    assert cli.main(["sample", str(folder), "--num_images", "1", "--steps", "1", "--output", str(grid)]) == 2
    error = capsys.readouterr().err
    assert f"{weights_file} has non-finite weights (NaN or inf in 1 tensors, e.g. conv_out.bias)" in error
    assert not grid.exists()
    with pytest.raises(ValueError, match="unet/diffusion_pytorch_model.safetensors has non-finite weights"):
        DDPMHubPipeline.from_pretrained(folder)
