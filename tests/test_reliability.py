"""What a user who makes every mistake runs into: each failure of the reliability probe, reproduced.

1. a token never travels in argv (refused, with the way to pass it), and a failing launched run leaks it nowhere;
2. a trained folder with only pickle weights is refused, never taken for an untrained configuration;
3. non-finite numbers in float options are refused; non-finite weights are never saved nor published;
4. options that used to fail late (seed, output folder, sample settings) fail before any work;
5. every broken file is named in the error (configs, model index, checkpoint state, a corrupt checkpoint, a full
   disk, a missing repo at the command line);
6. a private repo in the cache is not served to a token the Hub refuses; a failing Hub is reported within a deadline.
"""

import json
import os
import time
from pathlib import Path

import pytest
import torch
from helpers import LAUNCHER, TINY, check, run_script
from huggingface_hub import HfApi
from huggingface_hub.errors import RepositoryNotFoundError
from safetensors.torch import load_file, save_file

import ddpm_hub.hub
from ddpm_hub import DDPMHubPipeline, cli
from ddpm_hub.configs import build_pipeline
from ddpm_hub.errors import UsageError
from ddpm_hub.hub import PublishError, publish
from ddpm_hub.training.checkpoint_folders import list_checkpoints
from ddpm_hub.training.options import parse_options

ALICE, ALICE_READ, BOB = "hf_alice_write", "hf_alice_read", "hf_bob_write"
WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


def trained_folder(folder: Path) -> Path:
    build_pipeline("ddpm-tiny-8", seed=3).save_pretrained(folder)
    return folder


def files_below(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


# ----------------------------------------------------------------------------------------------------------------
# 1. Secrets


def test_a_token_on_the_command_line_or_in_a_config_file_is_refused_without_echoing_it(tmp_path, capsys):
    secret = "hf_SecretValueThatMustNotShow1234"
    with pytest.raises(UsageError) as refused:
        parse_options(["--hub_token", secret])
    assert "HF_TOKEN" in str(refused.value) and secret not in str(refused.value)
    config = tmp_path / "run.yaml"
    config.write_text(f"hub_token: {secret}\n")
    with pytest.raises(UsageError, match="hub_token is refused") as refused:
        parse_options(["--config", str(config)])
    assert secret not in str(refused.value)
    assert cli.main(["push", str(trained_folder(tmp_path / "run")), "--repo-id", "alice/x", "--token", secret]) == 2
    error = capsys.readouterr().err
    assert "--token is refused" in error and "HF_TOKEN" in error and secret not in error


@pytest.mark.slow
def test_a_failing_launched_run_with_a_token_leaks_it_nowhere(hub_server, tmp_path):
    """Two ranks, --push_to_hub, the token in HF_TOKEN (checked with the Hub), then a NaN loss stops the run."""
    out = tmp_path / "run"
    args = [*TINY, "--output_dir", str(out), "--max_train_steps", "4", "--checkpointing_steps", "1"]
    args += ["--push_to_hub", "--hub_model_id", "alice/leak-check", "--logger", "tensorboard"]
    env = {"HF_TOKEN": ALICE, "FAULT_NONFINITE_LOSS_AT_STEP": "3"}
    result = run_script(args, processes=2, script=LAUNCHER, env=env)
    assert result.returncode != 0 and "non-finite loss at step 3" in result.stderr
    assert ALICE not in result.stdout + result.stderr
    written = files_below(out)
    assert len(written) > 5  # options, logs, checkpoints: the run got going
    assert not [path for path in written if ALICE.encode() in path.read_bytes()]


# ----------------------------------------------------------------------------------------------------------------
# 2. Pickle-only weights


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


# ----------------------------------------------------------------------------------------------------------------
# 3. Non-finite numbers and weights


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_float_options_are_refused(value, capsys):
    with pytest.raises(SystemExit):
        parse_options([f"--learning_rate={value}"])
    assert "not a finite number" in capsys.readouterr().err


def test_non_finite_float_in_a_config_file_is_refused(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("learning_rate: .inf\n")
    with pytest.raises(UsageError, match="learning_rate must be a finite number"):
        parse_options(["--config", str(config)])


@pytest.mark.slow
def test_non_finite_weights_are_never_saved_over_a_good_checkpoint_nor_published(tmp_path):
    out, record = tmp_path / "run", tmp_path / "publish.jsonl"
    args = [*TINY, "--output_dir", str(out), "--max_train_steps", "4", "--checkpointing_steps", "2", "--use_ema"]
    args += ["--checkpoints_total_limit", "1", "--push_to_hub", "--hub_model_id", "alice/nan"]
    env = {"FAULT_NONFINITE_WEIGHTS_AT_STEP": "4", "FAKE_HUB_RECORD": str(record), "HF_TOKEN": ALICE}
    result = run_script(args, script=LAUNCHER, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "the weights are not finite after step 4" in result.stderr and "checkpoint-2" in result.stderr
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["checkpoint-2"]  # kept, not pruned
    assert not (out / "model_index.json").exists() and not record.exists()


def test_publish_refuses_non_finite_weights(hub_server, tmp_path):
    folder = trained_folder(tmp_path / "run")
    weights = load_file(folder / WEIGHTS)
    weights["conv_in.weight"][0, 0, 0, 0] = float("inf")
    save_file(weights, folder / WEIGHTS)
    before = len(hub_server.requests)
    with pytest.raises(UsageError, match="non-finite weights"):
        publish(folder, "alice/diverged", token=ALICE)
    assert len(hub_server.requests) == before


# ----------------------------------------------------------------------------------------------------------------
# 4. Checked before any work


@pytest.mark.slow
def test_bad_seed_and_output_folders_fail_before_anything_is_written(tmp_path, monkeypatch):
    out = tmp_path / "run"
    result = run_script([*TINY, "--output_dir", str(out), "--seed", "-1"])
    assert result.returncode == 2 and "--seed must be at least 0, got -1" in result.stderr
    assert not out.exists()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        check(["--output_dir", str(a_file)])
    with pytest.raises(UsageError, match="cannot be created: .* is a file"):
        check(["--output_dir", str(a_file / "run")])

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr("tempfile.TemporaryFile", read_only)  # root ignores permissions; a read-only mount does not
    with pytest.raises(UsageError, match="is not writable .*Read-only file system"):
        check(["--output_dir", str(out)])


@pytest.mark.parametrize(
    "args, message",
    [(["--scale", "0"], "--scale: must be at least 1"), (["--num_images", "0"], "--num_images: must be at least 1")],
)
def test_sample_settings_are_checked_before_sampling(args, message, capsys, tmp_path):
    assert cli.main(["sample", "ddpm-tiny-8", "--output", str(tmp_path / "grid.png"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "grid.png").exists()


# ----------------------------------------------------------------------------------------------------------------
# 5. Broken files are named


@pytest.mark.parametrize(
    "text, suffix, message",
    [("a: [1, 2\n", ".yaml", "invalid YAML at line 2"), ('{"seed": 1,}', ".json", "invalid JSON at line 1")],
)
def test_malformed_config_files_are_named_with_the_line(tmp_path, text, suffix, message):
    config = tmp_path / f"run{suffix}"
    config.write_text(text)
    with pytest.raises(UsageError, match=f"--config {config}: {message}"):
        parse_options(["--config", str(config)])


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


def test_a_damaged_checkpoint_state_is_named(tmp_path):
    checkpoint = tmp_path / "checkpoints" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    (checkpoint / "training_state.json").write_text('{"global_step": 4')
    with pytest.raises(UsageError, match="training_state.json \\(a checkpoint's data position\\) is not valid JSON"):
        check(["--output_dir", str(tmp_path), "--resume_from_checkpoint", str(checkpoint)])
    (checkpoint / "training_state.json").write_text('{"global_step": 4}')
    with pytest.raises(UsageError, match="training_state.json is damaged"):
        check(["--output_dir", str(tmp_path), "--resume_from_checkpoint", str(checkpoint)])


@pytest.mark.slow
def test_a_corrupt_checkpoint_names_itself_and_the_one_to_resume_from(tmp_path):
    out = tmp_path / "run"
    common = [*TINY, "--output_dir", str(out), "--max_train_steps", "6", "--checkpointing_steps", "2"]
    killed = run_script(common, script=LAUNCHER, env={"FAULT_KILL_AFTER_CHECKPOINT": "4"})
    assert killed.returncode != 0
    weights = out / "checkpoints" / "checkpoint-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a disk error, a partial copy
    result = run_script([*common, "--resume_from_checkpoint", "latest"])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"checkpoint {out / 'checkpoints' / 'checkpoint-4'} cannot be loaded" in result.stderr
    assert f"--resume_from_checkpoint {out / 'checkpoints' / 'checkpoint-2'}" in result.stderr


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_leaves_the_earlier_ones_intact(tmp_path):
    out = tmp_path / "run"
    args = [*TINY, "--output_dir", str(out), "--max_train_steps", "6", "--checkpointing_steps", "2"]
    result = run_script(args, script=LAUNCHER, env={"FAULT_DISK_FULL_AT_CHECKPOINT": "4"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "could not write checkpoint 4" in result.stderr and "the disk is full" in result.stderr
    assert "checkpoint-2, is intact" in result.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2"]  # no partial folder left


def test_the_cli_names_a_missing_repo_without_a_traceback(hub_server, capsys):
    assert cli.main(["sample", "alice/no-such-repo", "--num_images", "1", "--steps", "1"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("ddpm-hub sample: error: cannot load alice/no-such-repo: Repository 'alice/no-such-repo'")
    assert "Traceback" not in error


# ----------------------------------------------------------------------------------------------------------------
# 6. The Hub: cached private repos, a deadline


def test_a_cached_private_repo_is_not_served_to_a_token_the_hub_refuses(hub_server, tmp_path, hub_cache, monkeypatch):
    import huggingface_hub.constants

    repo_id = f"alice/private-cache-{time.monotonic_ns()}"
    folder = trained_folder(tmp_path / "run")
    HfApi(token=ALICE).create_repo(repo_id, private=True)
    HfApi(token=ALICE).upload_folder(folder_path=folder, repo_id=repo_id)
    DDPMHubPipeline.from_pretrained(repo_id, token=ALICE_READ, cache_dir=hub_cache)  # now in the cache
    with pytest.raises(RepositoryNotFoundError, match="private and no token was sent"):
        DDPMHubPipeline.from_pretrained(repo_id, token=False, cache_dir=hub_cache)
    with pytest.raises(RepositoryNotFoundError, match="private and the token given has no access"):
        DDPMHubPipeline.from_pretrained(repo_id, token=BOB, cache_dir=hub_cache)
    # Offline, the cache is what there is (the documented promise): it loads.
    assert DDPMHubPipeline.from_pretrained(repo_id, token=False, cache_dir=hub_cache, local_files_only=True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert DDPMHubPipeline.from_pretrained(repo_id, token=False, cache_dir=hub_cache)


def test_a_failing_hub_is_reported_within_the_publish_deadline(hub_server, tmp_path, monkeypatch):
    folder = trained_folder(tmp_path / "run")
    monkeypatch.setattr(ddpm_hub.hub, "PUBLISH_TIMEOUT", 2.5)  # retry delays stay 1, 2, 4, 8 s
    hub_server.fail_next(1000, status=503, path_contains="/api/whoami")
    started = time.monotonic()
    try:
        with pytest.raises(PublishError, match=r"kept failing \(HTTP 503.* after 2 attempts over 1 s"):
            publish(folder, "alice/deadline", token=ALICE)
    finally:
        hub_server.clear_failures()
    assert time.monotonic() - started < 2.5


def test_loading_from_the_environment_token(hub_server, tmp_path, hub_cache, monkeypatch):
    """The way a token is passed instead of argv: HF_TOKEN, read when a repo is loaded or published."""
    repo_id = f"alice/env-token-{time.monotonic_ns()}"
    monkeypatch.setenv("HF_TOKEN", ALICE)
    publish(trained_folder(tmp_path / "run"), repo_id, private=True)
    monkeypatch.setenv("HF_TOKEN", ALICE_READ)
    assert DDPMHubPipeline.from_pretrained(repo_id, cache_dir=hub_cache).unet.config.sample_size == 8
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(RepositoryNotFoundError):
        DDPMHubPipeline.from_pretrained(repo_id, cache_dir=hub_cache)
    assert os.environ.get("HF_TOKEN") is None
