"""Unit tests of ddpm_hub.training, in-process: options and their checks, micro-batches, randomness, EMA,
checkpoint folders, the held-out split (the launched runs are in test_training_runs.py)."""

import contextlib
import importlib.util
import json
import os
import signal
import time

import pytest
import torch
from helpers import ROOT, check

from ddpm_hub.data import UInt8ImageDataset
from ddpm_hub.errors import UsageError
from ddpm_hub.options import HelpFormatter, flat_fields, to_flat_dict
from ddpm_hub.pipelines import Source
from ddpm_hub.run_folder import RunFolderLock
from ddpm_hub.training.batches import MicroBatches, holdout_indices, make_loader
from ddpm_hub.training.checkpoint_folders import (
    commit_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    temporary_checkpoint_dir,
)
from ddpm_hub.training.ema import EMA
from ddpm_hub.training.options import TrainingOptions, build_parser, parse_options
from ddpm_hub.training.randomness import derive_seed


@pytest.mark.parametrize(
    "argv, error, message",
    [
        (["--lr_scheduler", "warp"], SystemExit, None),  # argparse: invalid choice, exit 2
        (["--pipeline", "ddpm-digits-16", "--resolution", "6"], ValueError, "must be a multiple of 4"),
        (["--pipeline", "ddpm-digits-16", "--resolution", "16x6"], ValueError, "must be a multiple of 4"),
        (["--resolution", "16by8"], SystemExit, None),  # argparse: "is not a size: give N (square) or HxW"
        (["--pipeline", "no-such-config"], FileNotFoundError, "ddpm-digits-16"),
        (["--train_data_dir", "/nonexistent/x"], FileNotFoundError, "does not exist"),
        (["--train_batch_size", "0"], ValueError, "--train_batch_size must be at least 1"),
        (["--learning_rate", "-1"], ValueError, "--learning_rate must be > 0"),
        (["--ddpm_num_inference_steps", "2000"], ValueError, "exceeds the 1000 training timesteps"),
        (["--dataset_name", "cifar10", "--train_data_dir", "."], ValueError, "Give exactly one image source"),
        (["--resume_from_checkpoint", "/nonexistent/checkpoint-3"], FileNotFoundError, "is not a folder"),
        (["--resume_from_checkpoint", "latest", "--overwrite_output_dir"], ValueError, "contradict"),
    ],
)
def test_option_errors(argv, error, message, capsys):
    with pytest.raises(error) as raised:
        check(argv)
    if message is not None:
        assert message in str(raised.value)


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_wandb_tracker_needs_wandb():
    with pytest.raises(ValueError, match="pip install wandb"):
        check(["--logger", "wandb"])


@pytest.mark.parametrize("token,message", [(None, "token"), ("hf_alice_read", "read")])
def test_push_to_hub_checks_the_token_before_training(hub_server, token, message, monkeypatch):
    """No token, or a read-only one, is refused at validation (against the loopback Hub), before any model is built."""
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    with pytest.raises(ValueError, match=f"--push_to_hub: .*{message}"):
        check(["--push_to_hub", "--hub_model_id", "alice/digits", "--hub_private_repo"])


def test_stale_checkpoints_need_resume_or_overwrite(tmp_path):
    (tmp_path / "checkpoints" / "checkpoint-10").mkdir(parents=True)
    with pytest.raises(ValueError, match="--resume_from_checkpoint latest"):
        check(["--output_dir", str(tmp_path)])
    check(["--output_dir", str(tmp_path), "--overwrite_output_dir"])
    check(["--output_dir", str(tmp_path), "--resume_from_checkpoint", "latest"])


def test_learned_range_cannot_be_forced_on_a_trained_fixed_variance_unet(tmp_path):
    pipeline = Source.of("ddpm-tiny-8").build()
    pipeline.save_pretrained(tmp_path / "trained")
    options, source = check(["--pipeline", str(tmp_path / "trained")])
    assert source.kind == "folder" and options.data.resolution == 8
    with pytest.raises(ValueError, match="needs a UNet with 6 output channels"):
        check(["--pipeline", str(tmp_path / "trained"), "--variance_type", "learned_range"])


def test_an_output_dir_that_is_the_pipeline_it_starts_from_or_around_it_is_refused(tmp_path):
    # issue 28: --pipeline X --output_dir X overwrote the source model in place
    trained = tmp_path / "runs" / "trained"
    Source.of("ddpm-tiny-8").build().save_pretrained(trained)
    for output_dir, relation in [(trained, "is"), (trained / "again", "is inside"), (tmp_path / "runs", "contains")]:
        with pytest.raises(ValueError, match=f"--output_dir {output_dir} {relation} the --pipeline folder {trained}"):
            check(["--pipeline", str(trained), "--output_dir", str(output_dir), "--overwrite_output_dir"])
    with pytest.raises(ValueError, match="the --pipeline folder .*pipelines.ddpm-tiny-8"):  # a shipped configuration
        check(["--pipeline", "ddpm-tiny-8", "--output_dir", str(ROOT / "pipelines" / "ddpm-tiny-8")])
    assert not (trained / "training_options.json").exists()
    check(["--pipeline", str(trained), "--output_dir", str(tmp_path / "runs" / "tuned")])  # a sibling is fine
    (tmp_path / "run" / "checkpoints" / "checkpoint-2").mkdir(parents=True)  # resuming into its own run folder
    check(["--pipeline", "ddpm-tiny-8", "--output_dir", str(tmp_path / "run"), "--resume_from_checkpoint", "latest"])


def test_an_output_dir_inside_the_image_folder_is_refused(tmp_path):
    # issue 28: an --output_dir inside --train_data_dir: the next run trained on the earlier run's samples.png
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(b"")
    with pytest.raises(ValueError, match="is inside the --train_data_dir folder .*would become training images"):
        check(["--train_data_dir", str(images), "--output_dir", str(images / "run")])
    with pytest.raises(ValueError, match=f"--output_dir {tmp_path} contains the --train_data_dir folder"):
        check(["--train_data_dir", str(images), "--output_dir", str(tmp_path)])
    check(["--train_data_dir", str(images), "--output_dir", str(tmp_path / "run")])


def test_a_run_folder_is_locked_against_a_second_writer_and_released_after(tmp_path):
    # issue 28: two trainings into the same --output_dir at once had no lock
    folder = tmp_path / "run"
    held = RunFolderLock.lock(folder, "--output_dir")
    with pytest.raises(ValueError, match=f"--output_dir {folder} is held by another run \\(process {os.getpid()}, "):
        RunFolderLock.lock(folder, "--output_dir")
    held.release()
    RunFolderLock.lock(folder, "--output_dir").release()
    assert sorted(p.name for p in folder.iterdir()) == [".training.lock"]


def test_a_run_stopped_at_its_start_leaves_its_folder_as_it_found_it(tmp_path):
    # issue 28 (probe): a resume refused after the lock was taken left a new lock file, or another process id in it
    fresh = tmp_path / "fresh"
    RunFolderLock.lock(fresh, "--output_dir").release(tidy=True)
    assert not fresh.exists()  # the folder the lock made is gone with it
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "model_index.json").write_text("{}")
    RunFolderLock.lock(earlier, "--output_dir").release(tidy=True)
    assert sorted(p.name for p in earlier.iterdir()) == ["model_index.json"]
    (earlier / ".training.lock").write_text("12345\n")  # an earlier run's lock file
    RunFolderLock.lock(earlier, "--output_dir").release(tidy=True)
    assert (earlier / ".training.lock").read_text() == "12345\n"
    RunFolderLock.lock(earlier, "--output_dir").release()  # a run that went on: the file names it
    assert (earlier / ".training.lock").read_text() == f"{os.getpid()}\n"


def hold_and_fork(folder, report: int) -> None:
    """In a forked child: lock `folder` as a run does, fork a worker that lives on, write its pid to `report`."""
    try:
        lock = RunFolderLock.lock(folder, "--output_dir")  # noqa: F841 - held until the process ends
        worker = os.fork()
        if worker == 0:
            time.sleep(60)
        else:
            os.write(report, f"{worker}".encode())
            time.sleep(60)
    finally:
        os._exit(0)  # never back into pytest


def test_the_lock_of_a_run_killed_with_sigkill_blocks_nobody(tmp_path):
    # issue 28: a stale lock from a killed run must not block the next run, nor a process it forked (a data worker)
    folder = tmp_path / "run"
    read, write = os.pipe()
    run = os.fork()
    if run == 0:
        hold_and_fork(folder, write)
    os.close(write)
    worker = int(os.read(read, 32) or 0)
    try:
        assert worker, "the run did not start"
        with pytest.raises(ValueError, match=f"held by another run \\(process {run}, "):
            RunFolderLock.lock(folder, "--output_dir")
        os.kill(run, signal.SIGKILL)
        os.waitpid(run, 0)
        RunFolderLock.lock(folder, "--output_dir").release()  # while the forked worker still lives
        os.kill(worker, 0)  # the worker lived on, holding the lock file open
    finally:
        for pid in (run, worker):
            if pid:  # never 0: os.kill(0, ...) signals the whole process group
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        os.close(read)


def test_defaults_resolve_from_the_pipeline_and_data_source(tmp_path):
    options, source = check(["--pipeline", "ddpm-digits-16"])
    assert source.kind == "config" and options.data.resolution == 16 and options.data.dataset_name == "builtin:digits"
    options, _ = check(["--train_data_dir", str(ROOT), "--output_dir", str(tmp_path)])  # not ./ddpm-model inside it
    assert options.data.dataset_name is None


def test_config_file_sets_options_and_the_command_line_wins(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("learning_rate: 3e-4\nuse_ema: true\ntrain_batch_size: 32\nlr_scheduler: constant\n")
    options, _ = parse_options(["--config", str(config), "--train_batch_size", "8"])
    assert options.optimizer.learning_rate == 3e-4 and options.optimizer.lr_scheduler == "constant"
    assert options.ema.use_ema
    assert options.batches.train_batch_size == 8
    as_json = tmp_path / "options.json"
    as_json.write_text(json.dumps(to_flat_dict(options)))  # training_options.json is a valid --config
    assert parse_options(["--config", str(as_json)])[0] == options


def test_a_non_square_resolution_from_the_command_line_and_back_from_the_recorded_options(tmp_path):
    options, _ = check(["--pipeline", "ddpm-tiny-8", "--resolution", "8x16"])
    assert options.data.resolution == (8, 16)
    options, _ = check(["--pipeline", "ddpm-tiny-8x16"])  # the UNet's sample_size [8, 16]
    assert options.data.resolution == (8, 16)
    recorded = tmp_path / "training_options.json"
    recorded.write_text(json.dumps(to_flat_dict(options)))  # resolution: [8, 16]
    assert parse_options(["--config", str(recorded)])[0].data.resolution == (8, 16)
    (tmp_path / "bad.yaml").write_text("resolution: [8, 16, 3]\n")
    with pytest.raises(ValueError, match="bad.yaml: resolution: .* is not a size"):
        parse_options(["--config", str(tmp_path / "bad.yaml")])


@pytest.mark.parametrize(
    "text, message",
    [
        ("learning_rat: 0.1\n", "unknown options ['learning_rat']"),
        ("train_batch_size: 1.5\n", "train_batch_size must be a int"),
        ("lr_scheduler: warp\n", "is not one of"),
        ("- 1\n", "expected a mapping"),
    ],
)
def test_config_file_errors(tmp_path, text, message):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ValueError) as raised:
        parse_options(["--config", str(config)])
    assert message in str(raised.value)


def test_help_documents_every_option_with_its_default():
    text = build_parser().format_help()
    spec = (
        "pipeline dataset_name train_data_dir image_column resolution center_crop random_flip output_dir seed "
        "train_batch_size max_train_steps num_epochs gradient_accumulation_steps learning_rate lr_scheduler "
        "lr_warmup_steps adam_beta1 adam_beta2 adam_weight_decay adam_epsilon max_grad_norm mixed_precision use_ema "
        "ema_max_decay checkpointing_steps checkpoints_total_limit resume_from_checkpoint validation_steps "
        "num_validation_images report_to dataloader_num_workers push_to_hub hub_model_id hub_private_repo snr_gamma "
        "compile max_train_minutes"
    ).split()
    fields = [f.name for f, _, _ in flat_fields(TrainingOptions)]
    assert set(spec) <= set(fields)
    for name in fields:
        assert f"--{name}" in text
    formatter = HelpFormatter("train.py")
    for action in build_parser()._actions:
        if action.dest in fields:
            assert "default" in formatter._get_help_string(action), action.dest
    assert "debug_kill_at_step" not in text


def test_accelerate_configs_load():
    from accelerate.commands.config.config_args import load_config_from_file

    expected = {"single_gpu": (1, 1), "multi_gpu_8": (8, 1), "multi_node_2x8": (16, 2)}
    for name, (processes, machines) in expected.items():
        config = load_config_from_file(str(ROOT / "training" / "accelerate_configs" / f"{name}.yaml"))
        assert (config.num_processes, config.num_machines) == (processes, machines)


def test_derive_seed_is_a_deterministic_mix():
    assert derive_seed(0, 1, 2) == derive_seed(0, 1, 2)
    assert len({derive_seed(0, 1, m) for m in range(100)} | {derive_seed(1, 1, 0), derive_seed(0, 2, 0)}) == 102
    assert 0 <= derive_seed(2**40, 3) < 2**63


def test_micro_batches_shard_each_global_batch_and_depend_only_on_position():
    images = torch.arange(20, dtype=torch.uint8).reshape(20, 1, 1, 1).expand(20, 1, 2, 2).contiguous()
    dataset = UInt8ImageDataset(images, random_flip=True)
    ranks = [MicroBatches(dataset, 3, 2, rank, seed=7) for rank in range(2)]
    assert ranks[0].batches_per_epoch == 3  # 20 // (3 x 2): the incomplete last batch is dropped
    for m in range(7):
        epoch, batch = ranks[0].position(m)
        together = ranks[0].indices(m) + ranks[1].indices(m)
        assert together == ranks[0].order(epoch)[batch * 6 : batch * 6 + 6].tolist()
    assert not torch.equal(ranks[0].order(0), ranks[0].order(1))
    fresh = MicroBatches(dataset, 3, 2, 1, seed=7)
    m, x, values = fresh[5]
    assert m == 5 and torch.equal(x, ranks[1][5][1]) and values == {}  # no history: flips, order from (seed, m, rank)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        MicroBatches(dataset, 16, 2, 0, seed=7)


def test_ema_warmup_and_update():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, max_decay=0.999, inv_gamma=1.0, power=0.75)
    assert ema.decay(0) == 0.0
    assert ema.decay(9) == pytest.approx(1 - 10**-0.75)
    assert ema.decay(10**9) == 0.999
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # decay 0: a copy
    assert torch.equal(ema.model.weight, model.weight)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)  # decay 1 - 2^-0.75
    d = 1 - 2**-0.75
    assert torch.allclose(ema.model.weight, torch.full((2, 2), d * 1.0 + (1 - d) * 3.0))
    assert ema.num_updates == 2 and not ema.model.weight.requires_grad


def test_the_ema_of_a_t5_encoder_with_tied_embeddings_saves_and_loads(tmp_path):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=12, d_model=8, d_kv=4, d_ff=8, num_layers=1, num_heads=2, decoder_start_token_id=0)
    encoder = T5EncoderModel(config)
    assert encoder.encoder.embed_tokens.weight is encoder.shared.weight  # save_pretrained writes it once
    ema = EMA(encoder)
    with torch.no_grad():
        encoder.shared.weight.add_(1.0)
    ema.update(encoder)
    ema.save(tmp_path / "ema")
    fresh = EMA(T5EncoderModel(config))
    fresh.load(tmp_path / "ema", num_updates=1)  # a resumed run: strict, the tied copy allowed to be absent
    for (name, mine), theirs in zip(fresh.model.state_dict().items(), ema.model.state_dict().values(), strict=True):
        assert torch.equal(mine, theirs), name
    assert fresh.model.encoder.embed_tokens.weight is fresh.model.shared.weight and fresh.num_updates == 1


def test_checkpoint_commit_latest_and_prune(tmp_path):
    for step in (2, 4, 6):
        temporary = temporary_checkpoint_dir(tmp_path, step)
        temporary.mkdir()
        (temporary / "weights").write_text(str(step))
        commit_checkpoint(temporary, tmp_path, step)
    temporary_checkpoint_dir(tmp_path, 8).mkdir()  # a save killed half-way
    assert latest_checkpoint(tmp_path).name == "checkpoint-6"
    deleted = prune_checkpoints(tmp_path, total_limit=2)
    assert sorted(p.name for p in deleted) == [".tmp-checkpoint-8", "checkpoint-2"]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-4", "checkpoint-6"]
    again = temporary_checkpoint_dir(tmp_path, 6)
    again.mkdir()
    (again / "weights").write_text("new")
    commit_checkpoint(again, tmp_path, 6)  # the same step saved twice replaces it
    assert (tmp_path / "checkpoint-6" / "weights").read_text() == "new"
    assert latest_checkpoint(tmp_path / "missing") is None


def test_resume_starts_the_loader_at_the_saved_position_without_replaying_batches():
    images = UInt8ImageDataset(torch.zeros(40, 1, 2, 2, dtype=torch.uint8))
    data = MicroBatches(images, 4, 1, 0, seed=0)
    # resumed after optimizer step 4 of 10, 2 micro-batches each
    loader = make_loader(data, first_micro_batch=8, end=20, num_workers=0, pin_memory=False)
    assert list(loader.sampler) == list(range(8, 20))
    assert [m for m, _, _ in loader] == list(range(8, 20))


def test_held_out_split_is_seeded_and_checked():
    kept, held = holdout_indices(10, 3, seed=0)
    kept_again, held_again = holdout_indices(10, 3, seed=0)
    assert torch.equal(held, held_again) and len(held) == 3 and len(kept) == 7
    assert sorted(torch.cat([kept, held]).tolist()) == list(range(10))
    assert not torch.equal(holdout_indices(10, 3, seed=1)[1], held)
    with pytest.raises(ValueError, match="leaves no training images: the dataset has 10"):
        holdout_indices(10, 10, seed=0)


# ----------------------------------------------------------------------------------------------------------------
# Options and checkpoint records (the reliability probes): non-finite numbers in float options are refused; a
# malformed config file and a damaged checkpoint state are named; a checkpoint records the model's configuration,
# and resuming with another one names what differs; a run counts the classes of unnamed integer labels.


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


@pytest.mark.parametrize(
    "text, suffix, message",
    [("a: [1, 2\n", ".yaml", "invalid YAML at line 2"), ('{"seed": 1,}', ".json", "invalid JSON at line 1")],
)
def test_malformed_config_files_are_named_with_the_line(tmp_path, text, suffix, message):
    config = tmp_path / f"run{suffix}"
    config.write_text(text)
    with pytest.raises(UsageError, match=f"--config {config}: {message}"):
        parse_options(["--config", str(config)])


def test_a_damaged_checkpoint_state_is_named(tmp_path):
    checkpoint = tmp_path / "checkpoints" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    (checkpoint / "training_state.json").write_text('{"global_step": 4')
    with pytest.raises(UsageError, match="training_state.json \\(a checkpoint's data position\\) is not valid JSON"):
        check(["--output_dir", str(tmp_path), "--resume_from_checkpoint", str(checkpoint)])
    (checkpoint / "training_state.json").write_text('{"global_step": 4}')
    with pytest.raises(UsageError, match="training_state.json is damaged"):
        check(["--output_dir", str(tmp_path), "--resume_from_checkpoint", str(checkpoint)])


def test_record_differences_name_each_changed_value_and_the_option_that_sets_it():
    from ddpm_hub.training.checkpoint_folders import TrainingState, record_differences

    saved = {
        "unet": {"in_channels": 3, "num_class_embeds": 11, "sample_size": 8, "block_out_channels": [32, 64]},
        "scheduler": {"prediction_type": "epsilon", "beta_schedule": "linear", "num_train_timesteps": 1000},
        "conditioning": {"id2label": {"0": "cat"}, "null_class_label": 10},
        "objective": {"snr_gamma": None},
    }
    same = {
        **saved,
        "unet": {**saved["unet"], "block_out_channels": (32, 64)},
        "conditioning": {"id2label": {0: "cat"}},
    }
    assert record_differences(saved, same) == []  # tuples and int keys are what JSON made of them
    other = {
        "unet": {**saved["unet"], "num_class_embeds": None, "new_field_of_a_newer_diffusers": 1},
        "scheduler": {**saved["scheduler"], "prediction_type": "v_prediction", "beta_schedule": "cosine"},
        "objective": {"snr_gamma": 5.0},
    }
    assert record_differences(saved, other) == [
        "objective.snr_gamma: None in the checkpoint, 5.0 in this run (--snr_gamma)",
        "scheduler.beta_schedule: 'linear' in the checkpoint, 'cosine' in this run (--ddpm_beta_schedule)",
        "scheduler.prediction_type: 'epsilon' in the checkpoint, 'v_prediction' in this run (--prediction_type)",
        "unet.num_class_embeds: 11 in the checkpoint, None in this run (--pipeline)",
    ]
    state = TrainingState(4, 4, 0, 4, 0, 4, 1, 64, None, saved)
    assert state.model == saved


def test_a_run_counts_the_classes_of_unnamed_integer_labels(tmp_path):
    import contextlib
    import io

    import datasets
    from PIL import Image

    from ddpm_hub.data import DataOptions
    from ddpm_hub.pipelines.conditioning import TrainingConditioning
    from ddpm_hub.training.data import load_training_data

    def png(value: int) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (value, 0, 0)).save(buffer, format="PNG")
        return buffer.getvalue()

    folder = tmp_path / "parquet" / "data"
    folder.mkdir(parents=True)
    rows = {"image": [{"bytes": png(v), "path": f"{v}.png"} for v in range(8)], "kind": [0, 1, 2, 3, 0, 1, 2, 3]}
    features = datasets.Features({"image": datasets.Image(), "kind": datasets.Value("int64")})
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    data = DataOptions(dataset_name=str(folder.parent), class_column="kind", resolution=8, decoded_cache=False)
    data = data.resolved()
    conditioning = TrainingConditioning.of({"num_class_embeds": 11})

    class OneProcess:
        is_local_main_process = True

        def main_process_first(self):
            return contextlib.nullcontext()

    from accelerate import PartialState

    PartialState(cpu=True)  # the training modules log through accelerate
    dataset = load_training_data(data, 0, 0, conditioning, 3, "tiny-cond", OneProcess())
    assert dataset.label_names is None and dataset.num_labels == 4
