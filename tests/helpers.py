"""Helpers shared by the test files (no tests here): launching training/train.py, reading what a run wrote, and the
tiny settings that make a run take seconds."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import torch
from processes import run_process_group
from safetensors.torch import load_file

from ddpm_hub.training.checks import check_options
from ddpm_hub.training.options import parse_options

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "training" / "train.py"
LAUNCHER = ROOT / "tests" / "launch_train.py"  # train.py with test doubles: fault injection, a Hub stand-in
# A run small enough for seconds: 64 digits at 8x8 RGB, 45k parameters, 5-step sampling of 4 images.
TINY = [
    "--pipeline", "ddpm-tiny-8", "--max_train_samples", "64", "--train_batch_size", "4", "--lr_warmup_steps", "2",
    "--num_validation_images", "4", "--ddpm_num_inference_steps", "5", "--validation_steps", "0", "--logger", "none",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_script(
    args: list[str], processes: int = 1, script: Path = SCRIPT, env: dict | None = None, timeout: int = 180
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    if processes == 1:
        command = [sys.executable, str(script), *args]
    else:
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1"]
        launch += ["--num_processes", str(processes), "--main_process_port", str(free_port())]
        launch += ["--mixed_precision", "no", "--dynamo_backend", "no"]
        command = [*launch, str(script), *args]
    return run_process_group(command, timeout, cwd=ROOT, env=env)


def check_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"


def summary(output_dir: Path) -> dict:
    return json.loads((output_dir / "training_summary.json").read_text())


def unet_weights(output_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(output_dir / "unet" / "diffusion_pytorch_model.safetensors")


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def check(argv: list[str]):
    return check_options(parse_options(argv)[0])


def conditional_config(tmp_path: Path, num_class_embeds: int = 11) -> Path:
    """ddpm-tiny-8 with a class embedding: the digits' 10 classes and the null label."""
    config = tmp_path / f"tiny-cond-{num_class_embeds}"
    if config.exists():
        return config
    shutil.copytree(ROOT / "pipelines" / "ddpm-tiny-8", config)
    unet_config = json.loads((config / "unet" / "config.json").read_text())
    (config / "unet" / "config.json").write_text(json.dumps({**unet_config, "num_class_embeds": num_class_embeds}))
    return config
