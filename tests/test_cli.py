"""The `ddpm-hub` command line: what each command takes of a model and of its files, refused in one line before any
work (tiny models built in the test)."""

import json

import numpy as np
import pytest
from helpers import conditional, error_of, sample_into
from PIL import Image
from safetensors.torch import load_file, save_file

from ddpm_hub import DDPMHubPipeline, cli
from ddpm_hub.errors import UsageError
from ddpm_hub.pipelines import Source
from ddpm_hub.run_folder import METRICS_FILE
from ddpm_hub.training.options import parse_options

TINY_SR = {
    "block_out_channels": [8, 16], "down_block_types": ["DownBlock2D"] * 2, "up_block_types": ["UpBlock2D"] * 2,
    "norm_num_groups": 4, "sample_size": 16,
}  # fmt: skip


@pytest.fixture
def sr_model(tmp_path):
    """A saved tiny super-resolution model (ddpm-sr-16-to-64's kind: 4x, RGB) and a 4 x 4 image."""
    Source.of("ddpm-sr-16-to-64").build(seed=0, unet_overrides=TINY_SR).save_pretrained(tmp_path / "sr")
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
    Source.of("ddpm-tiny-8").build(seed=0).save_pretrained(folder)
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


# ----------------------------------------------------------------------------------------------------------------
# Checked before any work, in one line (the reliability probes): sample settings, the guidance scale (one range for
# the command lines and training), class labels that are neither ids nor names, output paths (and a write that
# fails later is one line); a missing repo at the command line is named without a traceback.


@pytest.mark.parametrize(
    "args, message",
    [(["--scale", "0"], "--scale: must be at least 1"), (["--num_images", "0"], "--num_images: must be at least 1")],
)
def test_sample_settings_are_checked_before_sampling(args, message, capsys, tmp_path):
    assert cli.main(["sample", "ddpm-tiny-8", "--output", str(tmp_path / "grid.png"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "grid.png").exists()


def test_the_cli_names_a_missing_repo_without_a_traceback(hub_server, capsys):
    assert cli.main(["sample", "alice/no-such-repo", "--num_images", "1", "--steps", "1"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("ddpm-hub sample: error: cannot load alice/no-such-repo: Repository 'alice/no-such-repo'")
    assert "Traceback" not in error


def test_the_command_lines_and_training_refuse_the_same_range_before_any_work(tmp_path, capsys):
    model = tmp_path / "model"
    conditional().save_pretrained(model)
    for scale in ("nan", "inf", "1e308", "-2"):
        output = tmp_path / f"grid-{scale}.png"
        assert cli.main(["sample", str(model), "--guidance_scale", scale, "--output", str(output)]) == 2
        assert "guidance_scale must be a number in [0, 100]" in error_of(capsys) and not output.exists()
        assert cli.main(["eval", str(model), "--fid", "--guidance_scale", scale, "--output_dir", str(tmp_path)]) == 2
        assert "guidance_scale must be a number in [0, 100]" in error_of(capsys)
    assert not (tmp_path / METRICS_FILE).exists()
    for scale in ("nan", "1e308", "-1", "200"):
        with pytest.raises(SystemExit):
            parse_options(["--validation_guidance_scale", scale])
        assert "guidance_scale must be a number in [0, 100]" in error_of(capsys)
    config = tmp_path / "run.yaml"
    config.write_text("validation_guidance_scale: 1.0e+308\n")
    with pytest.raises(UsageError, match=r"validation_guidance_scale: guidance_scale must be a number in \[0, 100\]"):
        parse_options(["--config", str(config)])


def test_class_labels_that_are_neither_ids_nor_names_are_one_line(tmp_path, capsys):
    model = tmp_path / "model"
    conditional(num_classes=6).save_pretrained(model)
    common = ["--steps", "1", "--num_images", "2", "--output", str(tmp_path / "grid.png")]
    for given in ("--3", "²", "3.5"):
        assert cli.main(["sample", str(model), f"--class_labels={given}", *common]) == 2
        assert f"Unknown label {given!r}: this model takes ids or names of the 6 classes" in error_of(capsys)
    assert cli.main(["sample", str(model), "--class_labels", "7", *common]) == 2
    assert "class labels must be ids or names of the 6 classes this model was trained on" in error_of(capsys)
    assert cli.main(["sample", str(model), "--class_labels", "-3", *common]) == 2
    assert "got -3" in error_of(capsys) and not (tmp_path / "grid.png").exists()


def test_output_paths_are_checked_before_any_sampling_and_a_failed_write_is_one_line(
    tmp_path, capsys, read_only, monkeypatch
):
    import ddpm_hub.cli.sample

    model = tmp_path / "model"
    Source.of("ddpm-tiny-8").build().save_pretrained(model)
    sampled = []
    monkeypatch.setattr(ddpm_hub.cli.sample, "load_model", lambda args: sampled.append(1) or _load(args))
    grid = ["sample", str(model), "--steps", "1", "--num_images", "2"]
    (tmp_path / "a file").write_text("x")
    locked = read_only(tmp_path / "locked")
    cases = {
        "x.jpgx": ".jpgx is not an image format PIL writes; use .png, .jpg",
        "noextension": "no extension is not an image format PIL writes",
        "locked/grid.png": "the folder " + str(locked) + " is not writable",
        "a file/grid.png": str(tmp_path / "a file") + " is a file, not a folder",
    }
    for output, message in cases.items():
        assert cli.main([*grid, "--output", str(tmp_path / output)]) == 2
        assert message in error_of(capsys), output
    for folder in (tmp_path / "a file", locked / "samples"):
        assert cli.main([*grid, "--output_dir", str(folder)]) == 2
        assert "--output_dir" in error_of(capsys)
    assert cli.main(["noise", str(tmp_path / "a file"), "--output", str(tmp_path / "forward.jpgx")]) == 2
    assert sampled == []  # all refused before a model was loaded
    # a folder that becomes read-only while sampling: one line, no traceback
    late = tmp_path / "late"
    monkeypatch.setattr(ddpm_hub.cli.sample, "load_model", lambda args: (read_only(late), _load(args))[1])
    assert cli.main([*grid, "--output", str(late / "grid.png")]) == 1
    assert f"could not write {late / 'grid.png'} (--output):" in error_of(capsys)
    # an export whose folder becomes read-only after its first image: that image is kept, the message says so
    import ddpm_hub.evaluation.export

    batches = ddpm_hub.evaluation.export.sample_batches
    late = tmp_path / "late-export"

    def then_read_only(*args, **kwargs):
        for number, batch in enumerate(batches(*args, **kwargs)):
            if number == 1:
                read_only(late)
            yield batch

    monkeypatch.setattr(ddpm_hub.cli.sample, "load_model", _load)
    monkeypatch.setattr(ddpm_hub.evaluation.export, "sample_batches", then_read_only)
    assert cli.main(sample_into(model, late, "--batch_size", "1")) == 1
    message = error_of(capsys)
    assert f"could not write {late / '000001.png'}" in message and "written before are complete and kept" in message
    assert sorted(p.name for p in late.glob("*.png")) == ["000000.png"]


def _load(args):
    from ddpm_hub.pipelines import Source

    return Source.of(args.model).load(seed=args.seed).to(args.device)


def test_a_task_pipelines_own_refusal_is_one_line_naming_the_options(tmp_path, capsys):
    # issue 28 (probe): `img2img --strength 0.01 --steps 10` refused in the pipeline, then a traceback in the command
    Source.of("ddpm-tiny-8").build(seed=0).save_pretrained(tmp_path / "model")
    Image.new("RGB", (8, 8), (200, 0, 0)).save(tmp_path / "image.png")
    out = tmp_path / "out.png"
    argv = ["img2img", str(tmp_path / "model"), str(tmp_path / "image.png"), "--strength", "0.01", "--steps", "10"]
    assert cli.main([*argv, "--output", str(out)]) == 2
    error = capsys.readouterr().err
    assert "--strength 0.01 --steps 10: strength=0.01 with num_inference_steps=10 runs" in error
    assert "Traceback" not in error and len(error.strip().splitlines()) == 1 and not out.exists()


def test_train_is_a_command_with_the_options_of_the_training_script(tmp_path, capsys):
    # issue 29: training is a subcommand, the same main as training/train.py and `python -m ddpm_hub.train`
    out = tmp_path / "run"
    argv = ["train", "--pipeline", "ddpm-tiny-8", "--max_train_samples", "32", "--output_dir", str(out), "--dry-run"]
    assert cli.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["options"]["max_images"] == 32 and printed["pipeline_source"] == "config" and not out.exists()
    assert cli.main(["train", "--no_such_option"]) == 2
    assert "unrecognized arguments: --no_such_option" in capsys.readouterr().err
    assert cli.main(["train", "--output_dir", str(tmp_path), "--pipeline", str(tmp_path / "missing")]) == 2
    assert "ddpm-hub train: error:" in capsys.readouterr().err


def test_sample_defaults_to_the_models_own_scheduler_and_calls(tmp_path, capsys):
    """A distilled student's DDIM in its calls (not DDPM at 1000 steps) unless --sampler / --steps say otherwise."""
    from diffusers import DDIMScheduler

    from ddpm_hub.pipelines.sampling import sample_images
    from ddpm_hub.training.distillation import student_scheduler

    built = Source.of("ddpm-tiny-8").build(seed=0)
    student = DDPMHubPipeline(unet=built.unet, scheduler=student_scheduler(built.scheduler.config))
    student.register_to_config(default_num_inference_steps=2)
    student.save_pretrained(tmp_path / "student")
    loaded = DDPMHubPipeline.from_pretrained(tmp_path / "student")
    assert isinstance(loaded.scheduler, DDIMScheduler)
    for extra, steps, sampler in (([], 2, "DDIMScheduler"), (["--sampler", "ddpm", "--steps", "3"], 3, "ddpm")):
        out = tmp_path / f"out{steps}"
        argv = ["sample", str(tmp_path / "student"), "--num_images", "2", "--output_dir", str(out), *extra]
        assert cli.main(argv) == 0
        settings = json.loads((out / "samples.json").read_text())
        assert (settings["steps"], settings["sampler"]) == (steps, sampler), settings
        if not extra:  # the student's own sampler and calls, image i from seed + i
            own = sample_images(loaded, range(2), call_kwargs={"num_inference_steps": 2})
            written = np.asarray(Image.open(sorted(out.glob("*.png"))[0]))
            np.testing.assert_array_equal(written.reshape(own[0].permute(1, 2, 0).shape), own[0].permute(1, 2, 0))


# ---------------------------------------------------------------------------------------------------------------------
# ddpm-hub --version and ddpm-hub env (issue 32)


def test_version_prints_the_package_version_from_the_installed_command():
    import subprocess
    import sys

    import ddpm_hub

    result = subprocess.run(
        [sys.executable, "-m", "ddpm_hub.cli", "--version"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip() == ddpm_hub.__version__, result.stderr


def test_env_lists_every_package_with_its_installed_version_and_a_missing_optional_one(monkeypatch, capsys):
    import importlib.metadata
    import platform

    import torch

    import ddpm_hub
    from ddpm_hub.cli import env

    assert cli.main(["env"]) == 0
    printed = capsys.readouterr().out
    lines = dict(line[2:].split(": ", 1) for line in printed.splitlines() if line.startswith("- "))
    assert lines["ddpm-hub version"] == ddpm_hub.__version__
    assert lines["Python version"] == platform.python_version() and lines["Platform"] == platform.platform()
    assert (
        lines["torch version"] == importlib.metadata.version("torch") and lines["torch version"] == torch.__version__
    )
    assert lines["CUDA available"].startswith(str(torch.cuda.is_available()))
    assert lines["MPS available"] == str(torch.backends.mps.is_available())
    if not torch.cuda.is_available():
        assert lines["Accelerator"].startswith("none: CPU")
    for distribution in (*env.REQUIRED, *env.OPTIONAL):
        try:
            expected = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            expected = "not installed"
        assert lines[f"{distribution} version"] == expected, distribution
    assert {"diffusers", "transformers", "accelerate", "datasets", "huggingface_hub", "safetensors", "numpy"} <= set(
        env.REQUIRED
    ) and set(env.OPTIONAL) == {"torch-fidelity", "wandb", "scikit-image"}

    # an optional package missing (torch-fidelity here, whatever this machine has) says so, and nothing else changes
    real_version = importlib.metadata.version

    def without_torch_fidelity(distribution):
        if distribution == "torch-fidelity":
            raise importlib.metadata.PackageNotFoundError(distribution)
        return real_version(distribution)

    monkeypatch.setattr(importlib.metadata, "version", without_torch_fidelity)
    assert cli.main(["env"]) == 0
    missing = capsys.readouterr().out
    assert "- torch-fidelity version: not installed\n" in missing
    assert f"- diffusers version: {real_version('diffusers')}\n" in missing


def test_env_prints_no_token_or_environment_variable(monkeypatch, capsys):
    secret = "hf_secretTOKEN1234567890"
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1/" + secret)
    assert cli.main(["env"]) == 0
    printed = capsys.readouterr().out
    assert secret not in printed and "HF_TOKEN" not in printed
    assert printed.startswith("Copy and paste the text below into your GitHub issue.")
