"""Multi-node training, for real: two "machines" simulated on this one. Each is its own `accelerate launch --multi_gpu
--num_machines 2 --num_processes 2 --machine_rank 0|1 --main_process_ip 127.0.0.1` with one process (gloo on CPU),
each with its own --cache_dir (a local disk), and, unless a test says otherwise, one --output_dir both see (a shared
filesystem). docs/multi-node.md states what these tests measure; `-s` prints the timings.

    python -m pytest tests/test_multi_node.py -q -s -p no:cacheprovider --durations=0

A machine that dies is all its processes SIGKILLed (launcher and rank); a machine that freezes (hung kernel, lost
network: its TCP connections stay open) is all its processes SIGSTOPped.
"""

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import torch
from helpers import LAUNCHER, ROOT, TINY, assert_bit_identical, free_port, summary, unet_weights
from processes import kill_tree
from safetensors.torch import load_file

from ddpm_hub.errors import UsageError
from ddpm_hub.training.checkpoint_folders import TRAINING_STATE, list_checkpoints
from ddpm_hub.training.checkpointing import check_same_checkpoint
from ddpm_hub.training.data import check_same_count_on_every_machine

DECODING = "Decoding builtin:digits into the decoded cache"
REUSING = "Reusing the decoded cache"

# Test doubles, written next to a test's files and launched in place of training/train.py; each runs
# tests/launch_train.py (train.py with its own doubles) once it has patched what it names.
RECORD_STREAM = """
import json, os, runpy, sys
from ddpm_hub.data import streaming

one_epoch = streaming.ImageStream._one_epoch

def recorded(self):  # every streamed image this rank trains on: its row number (red = 10 x row) and epoch
    for pixels, label, captions in one_epoch(self):
        with open(os.environ["STREAM_RECORD"], "a") as file:
            row = {"rank": int(os.environ["RANK"]), "epoch": self.epoch, "row": int(pixels[0, 0, 0]) // 10}
            file.write(json.dumps(row) + "\\n")
        yield pixels, label, captions

streaming.ImageStream._one_epoch = recorded
sys.argv = [os.environ["LAUNCHER"], *sys.argv[1:]]
runpy.run_path(os.environ["LAUNCHER"], run_name="__main__")
"""


@dataclass
class Machine:
    """A simulated machine: its `accelerate launch` (the launcher, the elastic agent and its one rank) and its log."""

    rank: int
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text()

    def wait(self, timeout: float) -> int:
        """The launcher's exit status; a launcher still running after `timeout` s fails the test (see `machines`)."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"machine {self.rank} did not end within {timeout} s:\n{self.output()[-6000:]}"
            ) from None

    def signal_all(self, signum: int) -> None:
        """Send `signum` to every process of this machine (the rank runs in a session of its own)."""
        root = psutil.Process(self.process.pid)
        for process in [root, *root.children(recursive=True)]:
            process.send_signal(signum)


@contextmanager
def machines(folder: Path, args: list[list[str]], script: Path = LAUNCHER, env: list[dict] | None = None):
    """
    Two launchers started together, machine r with `args[r]` (and `env[r]`); their output goes to
    `folder/machine<r>.log`. Whatever happens, every process they started is killed on the way out.
    """
    port = free_port()
    started = []
    try:
        for rank in range(2):
            launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2"]
            launch += ["--num_processes", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1"]
            launch += ["--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no"]
            machine_env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "LAUNCHER": str(LAUNCHER)}
            machine_env.update((env or [{}, {}])[rank])
            log = folder / f"machine{rank}.log"
            with open(log, "w") as file:  # a file, not a pipe: two processes writing to pipes no one reads block
                process = subprocess.Popen(
                    [*launch, str(script), *args[rank]], stdout=file, stderr=subprocess.STDOUT, cwd=ROOT,
                    env=machine_env, start_new_session=True,
                )  # fmt: skip
            started.append(Machine(rank, process, log))
        yield started
    finally:
        for machine in started:
            kill_tree(machine.process.pid)


def run_machines(folder: Path, args: list[list[str]], timeout: float = 120, **kwargs) -> list[Machine]:
    """Both machines run to their end; each must exit 0."""
    with machines(folder, args, **kwargs) as both:
        for machine in both:
            status = machine.wait(timeout)
            assert status == 0, f"machine {machine.rank} exited {status}:\n{machine.output()[-6000:]}"
    return both


def wait_for(path: Path, machines_running: list[Machine], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        ended = [m for m in machines_running if m.process.poll() is not None]
        assert not ended and time.monotonic() < deadline, f"no {path}:\n{machines_running[0].output()[-6000:]}"
        time.sleep(0.02)


@pytest.mark.slow
def test_two_machines_train_checkpoint_and_resume_bit_identically_after_one_dies(tmp_path):
    """
    A: 4 steps straight. B: the same run; machine 1 dies (SIGKILL, all its processes) just after checkpoint 2;
    machine 0 stops by itself within seconds; both launchers restarted with --resume_from_checkpoint latest finish
    with A's weights, bit for bit. The shared --output_dir holds every rank's RNG state; each machine decodes into its
    own --cache_dir once (A) and reuses it after (B, B resumed).
    """
    common = [*TINY, "--max_train_steps", "4", "--checkpointing_steps", "2", "--learning_rate", "1e-3"]
    common += ["--random_flip"]
    caches = [tmp_path / f"machine{rank}-local-disk" / "cache" for rank in range(2)]

    def on_each(output_dir: Path, *extra: str) -> list[list[str]]:
        return [[*common, "--output_dir", str(output_dir), "--cache_dir", str(cache), *extra] for cache in caches]

    a, b = tmp_path / "shared" / "a", tmp_path / "shared" / "b"
    for run in (a, b):
        (run.parent / f"{run.name}-logs").mkdir(parents=True)
    started = time.monotonic()
    straight = run_machines(a.parent / "a-logs", on_each(a))
    seconds = {"straight": time.monotonic() - started}
    for machine, cache in zip(straight, caches):  # each machine built its own cache, on its own disk
        assert machine.output().count(DECODING) == 1 and REUSING not in machine.output()
        assert len(list((cache / "ddpm_hub_decoded").glob("digits-8-rgb-crop-*/manifest.json"))) == 1
    manifests = [json.loads(next(c.glob("ddpm_hub_decoded/*/manifest.json")).read_text()) for c in caches]
    assert manifests[0]["sha256"] == manifests[1]["sha256"]  # the same pixels on both disks
    assert {p.name for p in (a / "checkpoints" / "checkpoint-2").glob("random_states_*.pkl")} == {
        "random_states_0.pkl",
        "random_states_1.pkl",
    }  # the main process commits the checkpoint, each rank wrote its own RNG state into it: the folder is shared

    with machines(b.parent / "b-logs", on_each(b)) as (machine0, machine1):
        wait_for(b / "checkpoints" / "checkpoint-2", [machine0, machine1])
        machine1.signal_all(signal.SIGKILL)
        died = time.monotonic()
        status = machine0.wait(120)
        seconds["survivor_stopped_after"] = time.monotonic() - died
    assert status != 0 and re.search("Connection (closed|reset) by peer", machine0.output())
    assert [p.name for p in list_checkpoints(b / "checkpoints")] == ["checkpoint-2"]
    assert not (b / "model_index.json").exists()

    started = time.monotonic()
    resumed = run_machines(b.parent / "b-logs", on_each(b, "--resume_from_checkpoint", "latest"))
    seconds["resumed"] = time.monotonic() - started
    for machine in resumed:  # the second run on each machine reuses its cache
        assert machine.output().count(REUSING) == 1 and DECODING not in machine.output()
    record = summary(b)
    assert record["resumed_from_step"] == 2 and record["steps"] == 4 and record["num_processes"] == 2
    assert len(set(record["weights_sha256_per_rank"])) == 1
    assert_bit_identical(unet_weights(a), unet_weights(b))
    final = "checkpoints/checkpoint-4/model.safetensors"
    assert_bit_identical(load_file(a / final), load_file(b / final))
    print(f"\n[multi-node] seconds: {json.dumps({k: round(v, 1) for k, v in seconds.items()})}")


def write_shards(folder: Path, num_shards: int = 4, rows_per_shard: int = 4) -> list[int]:
    """Parquet shards of 8x8 RGB images whose red value is 10 x the row's number; returns the rows' numbers."""
    import datasets
    from PIL import Image

    def png(row: int) -> dict:
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (row * 10, 0, 0)).save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": f"{row}.png"}

    folder.mkdir(parents=True)
    features = datasets.Features({"image": datasets.Image()})
    for shard in range(num_shards):
        rows = range(shard * rows_per_shard, (shard + 1) * rows_per_shard)
        path = folder / f"train-{shard:05d}-of-{num_shards:05d}.parquet"
        datasets.Dataset.from_dict({"image": [png(r) for r in rows]}, features=features).to_parquet(str(path))
    return list(range(num_shards * rows_per_shard))


@pytest.mark.slow
def test_a_stream_splits_over_the_machines_and_an_output_dir_per_machine_is_refused_on_resume(tmp_path):
    """
    4 parquet shards of 4 rows streamed by 2 machines for 2 steps of 4 images: each process reads 2 whole shards, one
    epoch each; their rows are disjoint and together every row.
    Each machine has its own --output_dir (its local disk): the run ends, but only machine 0's folder has the pipeline
    and the checkpoint, which lacks machine 1's RNG state and stream position: they stay in machine 1's never
    committed temporary folder. A resume then finds a checkpoint on machine 0 and none on machine 1: both stop at
    once, naming what each saw (they would otherwise start at different steps and wait for each other until the
    process group's timeout).
    """
    rows = write_shards(tmp_path / "shards")
    tiny = [arg for arg, before in zip(TINY, [None, *TINY]) if "--max_train_samples" not in (arg, before)]
    common = [*tiny, "--dataset_name", str(tmp_path / "shards"), "--streaming", "--checkpointing_steps", "2"]
    disks = [tmp_path / f"machine{rank}-local-disk" for rank in range(2)]
    outputs = [disk / "run" for disk in disks]
    args = [
        [*common, "--output_dir", str(out), "--cache_dir", str(disk / "cache")] for disk, out in zip(disks, outputs)
    ]
    records = [disk / "rows.jsonl" for disk in disks]
    script = tmp_path / "record_stream.py"
    script.write_text(RECORD_STREAM)
    env = [{"STREAM_RECORD": str(record)} for record in records]
    logs = tmp_path / "logs"
    logs.mkdir()
    first = run_machines(logs, [[*a, "--max_train_steps", "2"] for a in args], script=script, env=env)

    seen = [[json.loads(line) for line in record.read_text().splitlines()] for record in records]
    assert [{row["rank"] for row in part} for part in seen] == [{0}, {1}]
    assert [[row["epoch"] for row in part] for part in seen] == [[0] * 8] * 2  # 2 steps x 4 images: one epoch
    parts = [[row["row"] for row in part] for part in seen]
    assert not set(parts[0]) & set(parts[1]) and sorted(parts[0] + parts[1]) == rows
    assert [len({row // 4 for row in part}) for part in parts] == [2, 2]  # whole shards: 2 of the 4 each
    for machine in first:
        assert f"process {machine.rank} of 2 reads whole shards" in machine.output()

    assert (outputs[0] / "model_index.json").is_file() and not (outputs[1] / "model_index.json").exists()
    checkpoint = outputs[0] / "checkpoints" / "checkpoint-2"
    assert sorted(p.name for p in checkpoint.glob("*_0.*")) == ["random_states_0.pkl", "stream_state_rank_0.json"]
    assert not list(checkpoint.glob("*_1.*"))
    assert list_checkpoints(outputs[1] / "checkpoints") == []
    temporary = outputs[1] / "checkpoints" / ".tmp-checkpoint-2"
    assert sorted(p.name for p in temporary.iterdir()) == ["random_states_1.pkl", "stream_state_rank_1.json"]

    resume = ["--max_train_steps", "4", "--resume_from_checkpoint", "latest"]
    started = time.monotonic()
    with machines(logs, [[*a, *resume] for a in args], script=script, env=env) as both:
        statuses = [machine.wait(120) for machine in both]
    stopped = time.monotonic() - started
    assert statuses[0] != 0 and statuses[1] != 0
    for machine in both:
        text = " ".join(machine.output().split())
        assert "do not see the same checkpoints" in text, text[-3000:]
        assert "process 0: checkpoint-2, process 1: no checkpoint" in text
    print(f"\n[multi-node] an output_dir per machine: the resume stopped both in {stopped:.1f} s")


@pytest.mark.slow
def test_a_frozen_machine_stops_the_other_after_the_process_group_timeout(tmp_path):
    """
    Machine 1 freezes (SIGSTOP: its connections stay open, as with a hung machine or a lost network): machine 0 waits
    in its next collective until the process group's timeout (--ddp_timeout, 10 s here; 30 min by default), then
    stops by itself; it does not hang at exit. Also: a --cache_dir the machines share is built once, by the machine
    that takes its lock first.
    """
    out = tmp_path / "shared" / "run"
    args = [*TINY, "--max_train_steps", "4", "--checkpointing_steps", "2", "--output_dir", str(out)]
    args += ["--ddp_timeout", "10"]
    shared_cache = tmp_path / "shared" / "cache"
    args += ["--cache_dir", str(shared_cache)]
    with machines(tmp_path, [args, args]) as (machine0, machine1):
        wait_for(out / "checkpoints" / "checkpoint-2", [machine0, machine1])
        machine1.signal_all(signal.SIGSTOP)
        frozen = time.monotonic()
        status = machine0.wait(120)
        stopped = time.monotonic() - frozen
    assert status != 0 and "Timed out waiting 10000ms" in machine0.output()
    assert 10 <= stopped < 60
    output = machine0.output() + machine1.output()
    assert output.count(DECODING) == 1 and output.count(REUSING) == 1
    assert len(list((shared_cache / "ddpm_hub_decoded").glob("digits-8-rgb-crop-*/manifest.json"))) == 1
    print(f"\n[multi-node] a frozen machine: the other stopped {stopped:.1f} s after, with a 10 s group timeout")


@pytest.mark.slow
def test_machines_whose_copies_of_the_data_differ_stop_together_naming_it(tmp_path):
    """
    Each machine decodes its own copy of a folder of images (own disk); machine 1's copy lacks 8 of the 16. Both stop
    before the first step, naming the counts: with --num_epochs 1, machine 1 would otherwise count 1 step (8 images,
    global batch 8) to machine 0's 2, finish first, and leave machine 0 waiting in a collective for the process
    group's timeout (measured before the check: both still running after 75 s).
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    args = []
    for rank, count in enumerate((16, 8)):
        folder = tmp_path / f"machine{rank}-local-disk" / "images"
        folder.mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
        tiny = [arg for arg, before in zip(TINY, [None, *TINY]) if "--max_train_samples" not in (arg, before)]
        args.append([*tiny, "--train_data_dir", str(folder), "--num_epochs", "1"])
        args[-1] += ["--output_dir", str(tmp_path / "shared" / "run"), "--cache_dir", str(folder.parent / "cache")]
    with machines(tmp_path, args) as both:
        statuses = [machine.wait(120) for machine in both]
    assert statuses[0] != 0 and statuses[1] != 0
    for machine in both:
        assert "decoded different numbers of images (process 0: 16, process 1: 8)" in machine.output()
    assert not (tmp_path / "shared" / "run" / "checkpoints").exists()


class Ranks:
    """An accelerator of process 0 whose `gather` returns this process's value, then the other ranks' `others`."""

    device = "cpu"

    def __init__(self, others: list[int]):
        self.others = others

    def gather(self, tensor):
        return torch.cat([tensor, torch.tensor(self.others)])


def test_ranks_that_find_different_checkpoints_all_stop_naming_the_shared_output_dir(tmp_path):
    """The check behind the resume above, on one process (`Ranks` stands for the others)."""
    checkpoint = tmp_path / "checkpoints" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    (checkpoint / TRAINING_STATE).write_text("{}")
    check_same_checkpoint(Ranks([2, 2]), checkpoint, tmp_path)
    check_same_checkpoint(Ranks([-1]), None, tmp_path)
    with pytest.raises(UsageError, match="process 0: checkpoint-2, process 1: no checkpoint, process 2: checkpoint-2"):
        check_same_checkpoint(Ranks([-1, 2]), checkpoint, tmp_path)
    with pytest.raises(UsageError, match="must be one folder on a filesystem every machine sees"):
        check_same_checkpoint(Ranks([2]), None, tmp_path)


def test_ranks_with_different_image_counts_all_stop_naming_them():
    check_same_count_on_every_machine(12, Ranks([12, 12]))
    with pytest.raises(UsageError, match=r"different numbers of images \(process 0: 12, process 1: 8\)"):
        check_same_count_on_every_machine(12, Ranks([8]))
