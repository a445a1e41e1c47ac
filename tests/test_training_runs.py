"""End-to-end runs of training/train.py (real processes: two ranks with gloo, SIGKILL, exit codes), on CPU with
ddpm-tiny-8 on builtin:digits for a handful of steps; started through tests/launch_train.py where a fault or the Hub
stand-in is needed. All `slow`: the fast tier (`pytest -m "not slow"`) leaves them out.
"""

import json
import math
import signal
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    LAUNCHER,
    TINY,
    assert_bit_identical,
    check,
    check_ok,
    conditional_config,
    error_of,
    labelled_shards,
    run_script,
    summary,
    unet_weights,
)
from PIL import Image
from safetensors.torch import load_file

from ddpm_hub import DDPMHubPipeline, cli
from ddpm_hub.errors import UsageError
from ddpm_hub.pipelines import Source
from ddpm_hub.pipelines.sampling import sample_images, with_sampler
from ddpm_hub.training.checkpoint_folders import latest_checkpoint, list_checkpoints, weights_checksum
from ddpm_hub.training.grids import grid_image

pytestmark = pytest.mark.slow


def test_two_processes_equal_weights_lr_per_optimizer_step_and_one_publish(tmp_path):
    """
    2 ranks (gloo), gradient accumulation 2: one loadable pipeline, equal weights on both ranks, the LR schedule
    stepped once per optimizer step, `publish` called once, by the main process, with the private flag, and the
    process group destroyed only after the DDP model is gone.
    """
    out, record = tmp_path / "run", tmp_path / "publish.jsonl"
    lr, warmup, steps = 1e-3, 10, 6
    args = [*TINY, "--output_dir", str(out), "--gradient_accumulation_steps", "2", "--max_train_steps", str(steps)]
    args += ["--lr_scheduler", "linear", "--learning_rate", str(lr), "--lr_warmup_steps", str(warmup)]
    args += ["--checkpointing_steps", "3", "--validation_steps", "3", "--num_validation_images", "3"]
    args += ["--push_to_hub", "--hub_model_id", "alice/tiny", "--hub_private_repo"]
    closed = tmp_path / "close.jsonl"
    env = {"FAKE_HUB_RECORD": str(record), "HF_TOKEN": "hf_alice_write", "CLOSE_RECORD": str(closed)}
    check_ok(run_script(args, processes=2, script=LAUNCHER, env=env))
    # No DDP model is alive when the group is destroyed: its reducer must never be the group's last owner, or the
    # ranks can hang at exit (see close_accelerator)
    assert sorted(closed.read_text().splitlines()) == [
        json.dumps({"rank": r, "ddp_before": 0, "ddp_after": 0, "group_after": False}) for r in range(2)
    ]
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert calls == [
        {"output_dir": str(out), "repo_id": "alice/tiny", "private": True, "token": None, "rank": 0,
         "has_pipeline": True}
    ]  # fmt: skip

    info = summary(out)
    assert info["num_processes"] == 2 and info["steps"] == steps
    assert info["images_seen"] == steps * 2 * 2 * 4  # steps x accumulation x processes x batch
    checksums = info["weights_sha256_per_rank"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]
    # linear warmup over 10 optimizer steps, 6 done: 0.6 lr. Stepping per micro-batch or per process gives 0.
    assert info["final_learning_rate"] == pytest.approx(lr * steps / warmup)
    assert (out / "logs" / "samples" / "step-0000003.png").is_file()
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["checkpoint-3", "checkpoint-6"]

    pipeline = DDPMHubPipeline.from_pretrained(out)
    assert weights_checksum(pipeline.unet) == checksums[0]
    images = pipeline(batch_size=1, num_inference_steps=2, generator=torch.manual_seed(0), output_type="np").images
    assert images.shape == (1, 8, 8, 3) and np.isfinite(images).all()
    options = json.loads((out / "training_options.json").read_text())
    assert options["max_train_steps"] == steps and options["resolution"] == 8
    assert options["dataset_name"] == "builtin:digits" and options["mixed_precision"] == "no"
    assert not any("token" in key for key in options)  # no option holds a secret


def test_sigkill_and_resume_is_bit_identical_with_ema_and_label_dropout(tmp_path):
    """
    Killed right after checkpoint 4 and resumed with `latest`: weights (EMA and raw) as if never interrupted, with
    what draws random numbers on the way: the UNet's dropout (the global RNG), the class labels dropped for guidance,
    random flips, gradient accumulation, a data worker in the second run (batches are a function of their position,
    not of who makes them). The images come from the decoded cache, which the resumed run reuses.
    """
    config = conditional_config(tmp_path)
    unet_config = json.loads((config / "unet" / "config.json").read_text())
    (config / "unet" / "config.json").write_text(json.dumps({**unet_config, "dropout": 0.1}))
    common = [*TINY, "--pipeline", str(config), "--max_train_steps", "6", "--gradient_accumulation_steps", "2"]
    common += ["--checkpointing_steps", "2", "--use_ema", "--ema_power", "0.5", "--random_flip"]
    common += ["--class_dropout_prob", "0.3", "--learning_rate", "1e-3", "--num_validation_images", "10"]
    a, b = tmp_path / "a", tmp_path / "b"
    check_ok(run_script([*common, "--output_dir", str(a)]))

    common += ["--dataloader_num_workers", "1"]
    killed = run_script([*common, "--output_dir", str(b)], script=LAUNCHER, env={"FAULT_KILL_AFTER_CHECKPOINT": "4"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert [p.name for p in list_checkpoints(b / "checkpoints")] == ["checkpoint-2", "checkpoint-4"]
    assert not (b / "model_index.json").exists()

    resumed = run_script([*common, "--output_dir", str(b), "--resume_from_checkpoint", "latest"])
    check_ok(resumed)
    assert "Reusing the decoded cache" in resumed.stderr and "rows read from the decoded cache" in resumed.stderr
    assert summary(b)["resumed_from_step"] == 4 and summary(b)["steps"] == 6
    assert_bit_identical(unet_weights(a), unet_weights(b))  # the EMA weights: the saved pipeline
    for name in ("model.safetensors", "ema_unet/diffusion_pytorch_model.safetensors"):
        assert_bit_identical(
            load_file(a / "checkpoints/checkpoint-6" / name), load_file(b / "checkpoints/checkpoint-6" / name)
        )
    assert not torch.equal(
        unet_weights(a)["conv_in.weight"],
        load_file(a / "checkpoints/checkpoint-6/model.safetensors")["conv_in.weight"],
    )
    index = json.loads((a / "model_index.json").read_text())
    assert index["null_class_label"] == 10 and index["id2label"]["3"] == "3"
    options = json.loads((a / "training_options.json").read_text())
    assert options["class_dropout_prob"] == 0.3
    grid = Image.open(a / "samples.png")
    assert grid.size == (((8 + 2) * 1 + 2) * 8, ((8 + 2) * 10 + 2) * 8)  # one row per class, upscaled 8x


def make_messy_folder(folder: Path) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(folder / f"good_{i}.png")
    Image.fromarray(rng.integers(0, 255, (9, 9, 4), dtype=np.uint8), "RGBA").save(folder / "rgba.png")
    Image.fromarray(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)).save(folder / "too_small.png")
    good = (folder / "good_0.png").read_bytes()
    (folder / "corrupt.png").write_bytes(good[: len(good) // 2])
    (folder / "notes.txt").write_text("not an image\n")


def test_messy_image_folder_trains_and_reports_skips(tmp_path):
    """Also: --max_train_minutes stops cleanly and still saves the pipeline, the grid and a checkpoint."""
    data, out = tmp_path / "images", tmp_path / "run"
    make_messy_folder(data)
    args = [*TINY, "--train_data_dir", str(data), "--output_dir", str(out), "--train_batch_size", "2"]
    args += ["--max_train_steps", "1000", "--max_train_minutes", "0.0001"]
    result = run_script(args)
    check_ok(result)
    info = summary(out)
    assert info["stopped_by"] == "max_train_minutes" and info["steps"] < 1000
    assert (out / "samples.png").is_file() and latest_checkpoint(
        out / "checkpoints"
    ).name == f"checkpoint-{info['steps']}"
    dataset = info["dataset"]
    assert dataset["num_images"] == 7 and dataset["num_skipped"] == 3  # 6 good + the RGBA one
    skipped = {path: reason for path, reason in dataset["skipped"]}
    assert set(skipped) == {"corrupt.png", "notes.txt", "too_small.png"}
    assert "Skipped 3" in result.stderr
    assert DDPMHubPipeline.from_pretrained(out).unet.config.sample_size == 8


def test_non_square_training_sampling_bits_per_dim_and_grid(tmp_path, capsys):
    """ddpm-tiny-8x16 (8 high, 16 wide) on a folder of wide images: the loader, training, the held-out bits/dim,
    sampling, the grid and `ddpm-hub eval --bpd` all follow the (height, width) size."""
    from ddpm_hub.cli import main
    from ddpm_hub.evaluation.likelihood import bits_per_dim

    data, out = tmp_path / "wide", tmp_path / "run"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (14, 30, 3), dtype=np.uint8)).save(data / f"{i:02d}.png")
    args = [*TINY, "--pipeline", "ddpm-tiny-8x16", "--train_data_dir", str(data), "--output_dir", str(out)]
    args += ["--max_train_steps", "2", "--validation_holdout", "4", "--validation_bpd_steps", "2"]
    check_ok(run_script(args))
    assert np.isfinite(summary(out)["validation"]["bits_per_dim"])
    assert json.loads((out / "training_options.json").read_text())["resolution"] == [8, 16]

    pipeline = DDPMHubPipeline.from_pretrained(out)
    assert list(pipeline.unet.config.sample_size) == [8, 16]
    images = pipeline(batch_size=2, num_inference_steps=2, generator=torch.manual_seed(0), output_type="np").images
    assert images.shape == (2, 8, 16, 3)
    pixels = torch.randint(0, 256, (2, 3, 8, 16), dtype=torch.uint8, generator=torch.manual_seed(0))
    bpd = bits_per_dim(pipeline, pixels, num_steps=2, estimator="sampled", generator=torch.manual_seed(0))
    assert np.isfinite(bpd.mean()) and bpd.mean() > 0
    grid = Image.open(out / "samples.png")  # 4 samples, 2 x 2, upscaled 64 // 16 = 4 times
    assert grid.size == ((2 * (16 + 2) + 2) * 4, (2 * (8 + 2) + 2) * 4)

    evaluate = ["eval", str(out), "--bpd", "--bpd_steps", "2", "--train_data_dir", str(data), "--max_images", "2"]
    assert main(evaluate) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bpd"]["num_images"] == 2 and np.isfinite(report["bpd"]["bits_per_dim"])


@pytest.mark.parametrize(
    "extra",
    [["--variance_type", "learned_range"], ["--prediction_type", "v_prediction", "--snr_gamma", "5"]],
    ids=["learned_range", "v_prediction"],
)
def test_objectives_train_with_finite_loss(tmp_path, extra):
    out = tmp_path / "run"
    check_ok(run_script([*TINY, *extra, "--max_train_steps", "3", "--output_dir", str(out)]))
    info = summary(out)
    assert info["steps"] == 3 and math.isfinite(info["final_loss"])
    pipeline = DDPMHubPipeline.from_pretrained(out)
    learned = extra[1] == "learned_range"
    assert pipeline.unet.config.out_channels == (6 if learned else 3)
    assert pipeline.scheduler.config.variance_type == ("learned_range" if learned else "fixed_small")
    assert pipeline.scheduler.config.prediction_type == ("epsilon" if learned else "v_prediction")


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    args = [*TINY, "--max_train_steps", "5", "--checkpointing_steps", "2", "--output_dir", str(out)]
    result = run_script(args, script=LAUNCHER, env={"FAULT_NONFINITE_LOSS_AT_STEP": "3"})
    assert result.returncode == 1
    assert "non-finite loss at step 3" in result.stderr and "checkpoint-2" in result.stderr
    assert "Traceback" not in result.stderr
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["checkpoint-2"]
    assert not (out / "model_index.json").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--train_data_dir", "/nonexistent/images"], "--train_data_dir '/nonexistent/images' does not exist"),
        (["--mixed_precision", "fp16"], "fp16 mixed precision needs a GPU"),
        (["--train_data_dir", "EMPTY"], "0 images usable"),
    ],
    ids=["missing_folder", "fp16_on_cpu", "empty_folder"],
)
def test_bad_inputs_exit_before_building_a_model(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    args = [a.replace("EMPTY", str(tmp_path / "empty")) for a in args]
    result = run_script([*TINY, "--output_dir", str(tmp_path / "run"), *args])
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    assert "UNet:" not in result.stderr  # logged when the model is built


def test_fine_tune_from_a_private_hub_repo(hub_server, tmp_path):
    """--pipeline <repo id> downloads a trained pipeline (token from HF_TOKEN) and continues training its weights."""
    from huggingface_hub import HfApi

    repo_id = f"alice/tiny-base-{uuid.uuid4().hex[:8]}"
    base = Source.of("ddpm-tiny-8").build(seed=1)
    base.save_pretrained(tmp_path / "base")
    api = HfApi(token="hf_alice_write")
    api.create_repo(repo_id, private=True)
    api.upload_folder(folder_path=tmp_path / "base", repo_id=repo_id)

    out = tmp_path / "run"
    args = [*TINY, "--pipeline", repo_id, "--max_train_steps", "2"]
    check_ok(run_script([*args, "--output_dir", str(out)], env={"HF_TOKEN": "hf_alice_read"}))
    assert summary(out)["pipeline"] == repo_id
    tuned, start = unet_weights(out), base.unet.state_dict()
    change = max((tuned[k] - start[k]).abs().max().item() for k in tuned)
    assert 0 < change < 0.01  # two small steps from the base weights, not a fresh initialisation


def test_held_out_loss_and_bits_per_dim_are_logged_and_summarised(tmp_path):
    """--validation_holdout: a seeded set kept out of training; its loss and sampled bits/dim reach the summary."""
    out = tmp_path / "run"
    args = TINY + ["--output_dir", str(out), "--max_train_steps", "4", "--validation_steps", "2"]
    args += ["--validation_holdout", "16", "--validation_bpd_steps", "3", "--logger", "tensorboard"]
    result = run_script(args)
    check_ok(result)
    record = summary(out)
    validation = record["validation"]
    assert validation["held_out_images"] == 16 and validation["num_images"] == 16
    assert np.isfinite(validation["loss"]) and 0 < validation["bits_per_dim"] < 1e4
    assert "sampled estimate" in validation["bits_per_dim_label"]
    assert record["epochs"] == pytest.approx(4 * 4 / 48, abs=1e-3)  # 64 - 16 images are trained on
    assert result.stderr.count("held-out: loss") == 2  # at step 2 and at the end
    assert list((out / "logs").rglob("events.out.tfevents*"))
    # The grid is ddpm_hub.pipelines.sampling's images 0..3 of the saved pipeline for --seed on its DDPM chain: what
    # `ddpm-hub sample --sampler ddpm` draws (the folder's own default is its fast sampler)
    pipeline = with_sampler(DDPMHubPipeline.from_pretrained(out), "ddpm")
    images = sample_images(pipeline, range(4), seed=0, call_kwargs={"num_inference_steps": 5})
    expected = grid_image(list(images.permute(0, 2, 3, 1).numpy()), 8)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "samples.png")), np.asarray(expected))


def test_conditional_training_on_two_processes(tmp_path):
    """Also: two ranks on one machine share one build of the decoded cache (the local main process builds it)."""
    out = tmp_path / "run"
    args = [*TINY, "--pipeline", str(conditional_config(tmp_path)), "--max_train_steps", "3", "--output_dir", str(out)]
    args += ["--validation_holdout", "8", "--validation_bpd_steps", "2", "--validation_guidance_scale", "2"]
    args += ["--cache_dir", str(tmp_path / "cache")]  # a new decoded cache: one rank builds it, the other waits
    result = run_script(args, processes=2)
    check_ok(result)
    assert result.stderr.count("Decoding builtin:digits into the decoded cache") == 1
    assert (
        result.stderr.count("Reusing the decoded cache") == 1 and "rows read from the decoded cache" in result.stderr
    )
    assert len(list((tmp_path / "cache" / "ddpm_hub_decoded").glob("digits-8-rgb-crop-*"))) == 1
    info = summary(out)
    assert info["num_processes"] == 2 and len(set(info["weights_sha256_per_rank"])) == 1
    assert info["samples"]["guidance_scale"] == 2.0 and np.isfinite(info["validation"]["bits_per_dim"])
    pipeline = DDPMHubPipeline.from_pretrained(out)
    assert pipeline.config.null_class_label == 10 and pipeline.get_label_ids(["7"]) == [7]
    images = pipeline(class_labels=[1, 2], guidance_scale=3.0, num_inference_steps=2, output_type="np").images
    assert images.shape == (2, 8, 8, 3) and np.isfinite(images).all()


def test_conditional_settings_are_checked_before_the_model_is_built(tmp_path):
    with pytest.raises(ValueError, match="--class_dropout_prob 0.2 applies to class-conditional models"):
        check(["--pipeline", "ddpm-tiny-8", "--class_dropout_prob", "0.2"])
    options, _ = check(["--pipeline", str(conditional_config(tmp_path))])
    assert options.conditioning.class_dropout_prob == 0.1  # the default for a conditional model

    unlabelled = tmp_path / "unlabelled"
    make_messy_folder(unlabelled)  # images at the top of the folder: no classes
    args = [*TINY, "--pipeline", str(conditional_config(tmp_path)), "--output_dir", str(tmp_path / "a")]
    result = run_script([*args, "--train_data_dir", str(unlabelled), "--train_batch_size", "2"])
    assert result.returncode == 2 and "is class-conditional (num_class_embeds=11: 10 classes" in result.stderr
    assert "has no labels" in result.stderr and "UNet:" not in result.stderr

    small = conditional_config(tmp_path, num_class_embeds=5)
    result = run_script([*TINY, "--pipeline", str(small), "--output_dir", str(tmp_path / "b")])
    assert result.returncode == 2 and "labels up to 9 (10 classes)" in result.stderr
    assert "num_class_embeds=5" in result.stderr and "Set num_class_embeds to 11" in result.stderr


def test_a_second_run_into_a_held_output_dir_stops_every_rank_before_writing(tmp_path):
    # issue 28: two trainings into the same --output_dir at once: the survivor carried the dead run's options
    from ddpm_hub.run_folder import RunFolderLock

    out = tmp_path / "run"
    held = RunFolderLock.lock(out, "--output_dir")  # this process is the first run
    result = run_script([*TINY, "--max_train_steps", "2", "--output_dir", str(out)], processes=2, timeout=120)
    assert result.returncode != 0 and f"--output_dir {out} is held by another run" in result.stderr
    assert result.stderr.count("train.py: error: --output_dir") == 2  # each rank stops with the message, none waits
    assert "Dataset:" not in result.stderr
    assert sorted(p.name for p in out.iterdir()) == [".training.lock"]  # nothing read, nothing written
    held.release()
    check_ok(run_script([*TINY, "--max_train_steps", "1", "--output_dir", str(out)]))


# ----------------------------------------------------------------------------------------------------------------
# What a user who makes every mistake runs into, in launched runs (the reliability probes): a failing launched run
# leaks its token nowhere; non-finite weights are never saved over a good checkpoint nor published; a bad seed or
# output folder fails before anything is written; a corrupt checkpoint names itself and the one to resume from; a
# full disk during a checkpoint leaves the earlier ones intact; a model knows the class ids it was trained on;
# resuming with another model or objective names what differs; a streamed label outside the classes is skipped.

ALICE = "hf_alice_write"  # a write token the loopback Hub knows (tests/conftest.py)


def files_below(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


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


@pytest.mark.slow
def test_a_model_trained_on_a_six_class_folder_refuses_class_seven(tmp_path, capsys):
    from helpers import TINY, check_ok, conditional_config, run_script
    from PIL import Image

    folder = tmp_path / "six"
    for c in range(6):
        (folder / f"class{c}").mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (40 * c, 20 * i, 0)).save(folder / f"class{c}" / f"{i}.png")
    out = tmp_path / "run"
    args = [*TINY, "--pipeline", str(conditional_config(tmp_path)), "--train_data_dir", str(folder)]
    args += ["--output_dir", str(out), "--max_train_steps", "1", "--cache_dir", str(tmp_path / "cache")]
    check_ok(run_script(args))
    index = json.loads((out / "model_index.json").read_text())
    assert index["num_classes"] == 6 and index["null_class_label"] == 10 and len(index["id2label"]) == 6
    grid = ["--steps", "1", "--num_images", "2", "--output", str(tmp_path / "g.png")]
    assert cli.main(["sample", str(out), "--class_labels", "7", *grid]) == 2
    assert "the 6 classes this model was trained on (ids 0..5: class0" in error_of(capsys)
    assert cli.main(["sample", str(out), "--class_labels", "class5", *grid]) == 0


@pytest.mark.slow
def test_resuming_with_another_model_or_objective_names_what_differs_and_keeps_the_checkpoint(tmp_path):
    from helpers import TINY, check_ok, conditional_config, run_script

    out = tmp_path / "run"
    common = [*TINY, "--output_dir", str(out), "--max_train_steps", "2", "--checkpointing_steps", "2"]
    check_ok(run_script(common))
    checkpoint = out / "checkpoints" / "checkpoint-2"
    state = json.loads((checkpoint / "training_state.json").read_text())
    assert state["model"]["scheduler"]["prediction_type"] == "epsilon" and state["model"]["unet"]["in_channels"] == 3
    resume = [
        *common[:-4],
        "--max_train_steps",
        "4",
        "--checkpointing_steps",
        "2",
        "--resume_from_checkpoint",
        "latest",
    ]
    beta = "scheduler.beta_schedule: 'linear' in the checkpoint, 'squaredcos_cap_v2' in this run"
    cases = {
        ("--prediction_type", "v_prediction"): "scheduler.prediction_type: 'epsilon' in the checkpoint, "
        "'v_prediction' in this run (--prediction_type)",
        ("--ddpm_beta_schedule", "cosine"): f"{beta} (--ddpm_beta_schedule)",
        ("--pipeline", str(conditional_config(tmp_path))): "unet.num_class_embeds: None in the checkpoint, 11 in this",
    }  # fmt: skip
    for extra, message in cases.items():
        result = run_script([*resume, *extra])
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert message in result.stderr and "The checkpoint is intact" in result.stderr
        assert "damaged" not in result.stderr and "delete" not in result.stderr
    assert (checkpoint / "model.safetensors").is_file() and state == json.loads(
        (checkpoint / "training_state.json").read_text()
    )
    check_ok(run_script(resume))  # the same options resume


@pytest.mark.slow
def test_streaming_training_skips_a_row_labelled_minus_one_instead_of_crashing(tmp_path):
    from helpers import TINY, check_ok, conditional_config, run_script, summary

    shards = labelled_shards(tmp_path / "shards", [0, 1, -1, 1, 0, 1, 0, 1, 0, 1], ["even", "odd"])
    tiny = [arg for arg, before in zip(TINY, [None, *TINY]) if "--max_train_samples" not in (arg, before)]
    out = tmp_path / "run"
    args = [*tiny, "--pipeline", str(conditional_config(tmp_path)), "--dataset_name", str(shards), "--streaming"]
    args += ["--max_train_steps", "3", "--output_dir", str(out), "--cache_dir", str(tmp_path / "hf")]
    result = run_script(args)
    check_ok(result)
    assert "IndexError" not in result.stderr and "Skipped a streamed example" in result.stderr
    record = summary(out)["dataset"]
    assert record["num_skipped"] >= 1 and "label -1 in column 'label' is not one of the classes" in str(record)
