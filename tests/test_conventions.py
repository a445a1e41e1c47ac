"""The ecosystem's conventions a user of diffusers' scripts and Accelerate reaches for: trackers (`--report_to`),
versions of data and models (`--dataset_config_name`, `--dataset_revision`, `--revision`, `--variant`,
`--torch_dtype`), and the memory flags (`--gradient_checkpointing`, `--offload_ema`)."""

import argparse
import importlib.util
import io
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY, assert_bit_identical, check, check_ok, run_script, unet_weights
from huggingface_hub import HfApi
from PIL import Image

from ddpm_hub import cli
from ddpm_hub.data import DataOptions
from ddpm_hub.errors import UsageError
from ddpm_hub.loading.settings import LoadSettings
from ddpm_hub.pipelines import Source
from ddpm_hub.training.option_values import parse_trackers
from ddpm_hub.training.options import parse_options
from ddpm_hub.training.trackers import project_name

ALICE = "hf_alice_write"


# ----------------------------------------------------------------------------------------------------------------
# Trackers


@pytest.mark.parametrize(
    "given,parsed",
    [("wandb", "wandb"), ("tensorboard, mlflow", "tensorboard,mlflow"), ("all", "all"), ("none", "none"),
     (["comet_ml", "aim"], "comet_ml,aim"), ("wandb,wandb", "wandb")],
)  # fmt: skip
def test_report_to_takes_every_tracker_accelerate_supports(given, parsed):
    assert parse_trackers(given) == parsed


@pytest.mark.parametrize("given", ["tensorbord", "", "all,wandb", "none,tensorboard", [3]])
def test_report_to_refuses_what_accelerate_does_not_know(given):
    with pytest.raises(argparse.ArgumentTypeError, match="tensorboard, wandb"):
        parse_trackers(given)


def test_logger_is_an_alias_of_report_to_and_the_project_defaults_to_the_output_folder(tmp_path):
    options, _ = parse_options(["--logger", "none", "--output_dir", str(tmp_path / "runs" / "my-run")])
    assert options.logging.report_to == "none"
    assert project_name(options.logging.tracker_project_name, options.output_dir) == "my-run"
    assert project_name("shared", options.output_dir) == "shared"


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is not None, reason="mlflow is installed")
def test_a_tracker_that_is_not_installed_is_refused_before_any_work():
    """Accelerate drops a missing tracker with a debug message: the run would log nothing without saying so."""
    with pytest.raises(UsageError, match=r"--report_to tensorboard,mlflow: mlflow is not installed \(pip install"):
        check(["--report_to", "tensorboard,mlflow"])


@pytest.mark.slow
def test_grids_and_losses_reach_the_tracker_under_the_project(tmp_path):
    """A real run logging to tensorboard: the losses as scalars, the grid as an image, in <logs>/<output folder>."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "digits-run"
    args = [*TINY, "--report_to", "tensorboard", "--max_train_steps", "4", "--validation_steps", "2"]
    args += ["--logging_steps", "2", "--output_dir", str(out)]
    check_ok(run_script(args))
    events = EventAccumulator(str(out / "logs" / "digits-run"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert "train/loss" in events.Tags()["scalars"]
    grids = events.Images("samples")
    assert [grid.step for grid in grids] == [2, 4]
    saved = np.asarray(Image.open(out / "logs" / "samples" / "step-0000002.png").convert("RGB"))
    logged = np.asarray(Image.open(io.BytesIO(grids[0].encoded_image_string)).convert("RGB"))
    assert np.array_equal(logged, saved)  # the grid written to disk is the one the tracker holds


# ----------------------------------------------------------------------------------------------------------------
# Data: configurations and revisions


def digit_parquet(count: int, shade: int) -> bytes:
    """`count` 8x8 grey PNG images of one shade in an `image` column, as parquet bytes."""
    import datasets

    images = [Image.fromarray(np.full((8, 8), shade, dtype=np.uint8)) for _ in range(count)]
    buffer = io.BytesIO()
    datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()})).to_parquet(
        buffer
    )
    return buffer.getvalue()


CONFIGS_CARD = """---
configs:
- config_name: dark
  data_files: dark/*.parquet
  default: true
- config_name: light
  data_files: light/*.parquet
---
Two configurations of grey squares.
"""


@pytest.fixture
def versioned_dataset(hub_server, tmp_path, monkeypatch) -> str:
    """A Hub dataset with two configurations; tag v1 holds 3 dark images, main 5 dark and 2 light."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    api, repo_id = HfApi(token=ALICE), f"alice/squares-{uuid.uuid4().hex[:8]}"
    api.create_repo(repo_id, repo_type="dataset")

    def put(files: dict):
        for path, data in files.items():
            api.upload_file(path_or_fileobj=data, path_in_repo=path, repo_id=repo_id, repo_type="dataset")

    put({"README.md": CONFIGS_CARD.encode(), "dark/train.parquet": digit_parquet(3, 40)})
    api.create_tag(repo_id, tag="v1", repo_type="dataset")
    put({"dark/train.parquet": digit_parquet(5, 40), "light/train.parquet": digit_parquet(2, 220)})
    return repo_id


def test_dataset_configuration_and_revision_choose_the_rows(versioned_dataset, tmp_path):
    def images(**chosen):
        data = DataOptions(dataset_name=versioned_dataset, resolution=8, cache_dir=str(tmp_path / "cache"), **chosen)
        return data.load(channels=1).images

    assert len(images()) == 5 and int(images().float().mean()) == 40  # the default configuration, main
    light = images(dataset_config_name="light")
    assert len(light) == 2 and int(light.float().mean()) == 220
    assert len(images(dataset_revision="v1")) == 3  # pinned: what the tag holds, not what main holds now
    with pytest.raises(UsageError, match="configuration 'bright'"):
        images(dataset_config_name="bright")


@pytest.mark.parametrize("source", [["--dataset_name", "builtin:digits"], ["--train_data_dir", "."]])
def test_configurations_and_revisions_belong_to_hub_datasets(source):
    with pytest.raises(UsageError, match="--dataset_revision v1: .* is not a Hub dataset"):
        check([*source, "--dataset_revision", "v1"])


# ----------------------------------------------------------------------------------------------------------------
# Models: revision, variant, dtype


@pytest.fixture
def versioned_model(hub_server, tmp_path) -> tuple[str, dict, dict]:
    """A pipeline repo whose tag v1 holds the weights of seed 0 and T = 500, and main those of seed 1 and T = 1000."""
    api, repo_id = HfApi(token=ALICE), f"alice/ddpm-{uuid.uuid4().hex[:8]}"
    api.create_repo(repo_id)
    weights = {}
    for seed, steps, tag in ((0, 500, "v1"), (1, 1000, None)):
        pipeline = Source.of("ddpm-tiny-8").build(seed=seed, scheduler_overrides={"num_train_timesteps": steps})
        pipeline.save_pretrained(tmp_path / f"seed-{seed}")
        api.upload_folder(folder_path=tmp_path / f"seed-{seed}", repo_id=repo_id)
        if tag:
            api.create_tag(repo_id, tag=tag)
        weights[tag or "main"] = {k: v.clone() for k, v in pipeline.unet.state_dict().items()}
    return repo_id, weights["v1"], weights["main"]


def test_a_model_revision_is_read_whole_configs_and_weights(versioned_model, hub_cache):
    repo_id, v1, main = versioned_model
    pinned = Source.of(repo_id, LoadSettings(revision="v1"))
    assert pinned.scheduler_config["num_train_timesteps"] == 500  # the configs are the revision's
    assert_bit_identical(pinned.load().unet.state_dict(), v1)
    assert_bit_identical(Source.of(repo_id).load().unet.state_dict(), main)
    with pytest.raises(Exception, match="v9"):
        Source.of(repo_id, LoadSettings(revision="v9"))


def test_training_reads_the_revision_it_is_given(versioned_model):
    repo_id, _, _ = versioned_model
    _, source = check(["--pipeline", repo_id, "--revision", "v1", "--max_train_steps", "1"])
    assert source.scheduler_config["num_train_timesteps"] == 500 and source.settings.revision == "v1"


def test_sample_takes_revision_and_dtype(versioned_model, tmp_path, capsys):
    repo_id, _, _ = versioned_model
    out = tmp_path / "grid.png"
    argv = ["sample", repo_id, "--revision", "v1", "--torch_dtype", "bfloat16", "--num_images", "2", "--steps", "2"]
    assert cli.main([*argv, "--output", str(out), "--device", "cpu"]) == 0
    assert out.is_file()


def test_variants_load_by_name_and_a_missing_one_is_named(tmp_path):
    pipeline = Source.of("ddpm-tiny-8").build(seed=0)
    plain = {k: v.clone() for k, v in pipeline.unet.state_dict().items()}
    pipeline.to(torch.float16).save_pretrained(tmp_path / "fp16", variant="fp16")
    assert (tmp_path / "fp16" / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    loaded = Source.of(tmp_path / "fp16", LoadSettings(variant="fp16", torch_dtype="float16")).load()
    assert loaded.unet.dtype == torch.float16
    assert all(torch.equal(loaded.unet.state_dict()[k], v.half()) for k, v in plain.items())
    as_float = Source.of(tmp_path / "fp16", LoadSettings(variant="fp16")).load()  # diffusers' default: float32
    assert as_float.unet.dtype == torch.float32
    assert all(torch.equal(as_float.unet.state_dict()[k], v.half().float()) for k, v in plain.items())
    with pytest.raises(FileNotFoundError, match="only as variants \\(fp16\\): pass variant='fp16'"):
        Source.of(tmp_path / "fp16").load()
    with pytest.raises(FileNotFoundError, match="no 'bf16' variant of its unet weights; it has the variants fp16"):
        Source.of(tmp_path / "fp16", LoadSettings(variant="bf16")).load()


def test_load_settings_refuse_what_from_pretrained_would_not_take():
    with pytest.raises(ValueError, match="float32, float16, bfloat16"):
        LoadSettings(torch_dtype="half")
    with pytest.raises(ValueError, match="revision must be a non-empty string"):
        LoadSettings(revision=" ")
    assert LoadSettings("v1", "fp16", "bfloat16").from_pretrained() == {
        "revision": "v1", "variant": "fp16", "torch_dtype": torch.bfloat16
    }  # fmt: skip


def test_training_casts_only_the_frozen_models_to_torch_dtype(tmp_path):
    """--torch_dtype halves the models a run only reads (the autoencoder here); the UNet it trains stays float32."""
    from helpers import tiny_vae

    from ddpm_hub.training.model import training_pipeline

    tiny_vae().save_pretrained(tmp_path / "vae")
    argv = ["--pipeline", "ddpm-latent-digits-64", "--vae", str(tmp_path / "vae"), "--torch_dtype", "bfloat16"]
    options, source = check([*argv, "--output_dir", str(tmp_path / "out")])
    pipeline = training_pipeline(options, source)
    assert pipeline.vae.dtype == torch.bfloat16 and pipeline.unet.dtype == torch.float32


# ----------------------------------------------------------------------------------------------------------------
# Memory flags


@pytest.mark.slow
def test_gradient_checkpointing_and_ema_offload_change_memory_not_the_result(tmp_path):
    """Recomputed activations give the same gradients, and an EMA kept on the CPU the same average."""
    base = [*TINY, "--max_train_steps", "3", "--use_ema", "--checkpointing_steps", "0"]
    check_ok(run_script([*base, "--output_dir", str(tmp_path / "plain")]))
    check_ok(run_script([*base, "--output_dir", str(tmp_path / "lean"), "--gradient_checkpointing", "--offload_ema"]))
    plain, lean = unet_weights(tmp_path / "plain"), unet_weights(tmp_path / "lean")
    assert plain.keys() == lean.keys()
    for key in plain:
        torch.testing.assert_close(lean[key], plain[key], rtol=0, atol=1e-6)
    assert Path(tmp_path / "lean" / "samples.png").is_file()
