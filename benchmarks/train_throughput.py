"""
Training throughput (images/s) of a pipeline configuration on the current device: forward, L_simple / L_hybrid,
backward and AdamW step, exactly as training/train.py does them (`ddpm_hub.losses.DiffusionObjective`,
`ddpm_hub.training.model`). Not a test.

    python benchmarks/train_throughput.py --pipeline ddpm-digits-16 --batch_size 64
    python benchmarks/train_throughput.py --pipeline ddpm-cifar10-32 --batch_size 128 --mixed_precision bf16 --compile

Prints one JSON line. The data are random images in [-1, 1] (throughput does not depend on their content) and the
data loader is left out: this measures the model, which is what limits training of these pipelines.
"""

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

if importlib.util.find_spec("ddpm_hub") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training_step import synchronize  # benchmarks/, this script's folder

from ddpm_hub.loading.configs import count_parameters
from ddpm_hub.losses import DiffusionObjective
from ddpm_hub.pipelines import Source
from ddpm_hub.training.model import apply_speed_settings, make_optimizer
from ddpm_hub.training.options import TrainingOptions


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--pipeline", default="ddpm-digits-16", help="pipelines/<name> or a folder (default: %(default)s)"
    )
    parser.add_argument("--batch_size", type=int, default=64, help="images per step (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps (default: %(default)s)")
    parser.add_argument("--warmup_steps", type=int, default=5, help="untimed steps first (default: %(default)s)")
    parser.add_argument(
        "--mixed_precision", choices=("no", "bf16", "fp16"), default="no", help="autocast dtype (default: %(default)s)"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (default: off)")
    parser.add_argument("--device", default=None, help="cuda if available, else cpu (default: auto)")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.steps < 1 or args.warmup_steps < 0:
        parser.error("--batch_size and --steps must be >= 1, --warmup_steps >= 0.")
    args.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.mixed_precision == "fp16" and args.device.type != "cuda":
        parser.error("fp16 needs a CUDA device; use --mixed_precision bf16 or no.")
    return args


def setup(args: argparse.Namespace):
    """The UNet, objective and optimizer as train.py sets them up on this device (TF32, channels_last, fused)."""
    pipeline = Source.of(args.pipeline).build(seed=args.seed)
    unet = pipeline.unet.train().to(args.device)
    options = TrainingOptions()  # train.py's defaults: TF32 on CUDA, channels_last, fused AdamW
    apply_speed_settings(unet, options.speed, args.device)
    optimizer = make_optimizer(unet.parameters(), options.optimizer, args.device)
    model = torch.compile(unet) if args.compile else unet
    return unet, model, DiffusionObjective(pipeline.scheduler, channels_last=options.speed.channels_last), optimizer


def time_steps(args: argparse.Namespace, model, objective, optimizer, x_0: torch.Tensor) -> float:
    """Seconds per optimizer step, averaged over --steps after --warmup_steps."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.mixed_precision)
    autocast = torch.autocast(args.device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    scaler = torch.amp.GradScaler("cuda", enabled=args.mixed_precision == "fp16")
    generator = torch.Generator(args.device).manual_seed(args.seed)

    def step() -> None:
        with autocast:
            loss = objective(model, x_0, generator).mean()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup_steps):
        step()
    synchronize(args.device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    synchronize(args.device)
    return (time.perf_counter() - start) / args.steps


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    unet, model, objective, optimizer = setup(args)
    config = unet.config
    x_0 = torch.rand(args.batch_size, config.in_channels, config.sample_size, config.sample_size, device=args.device)
    seconds = time_steps(args, model, objective, optimizer, x_0 * 2 - 1)
    result = {
        "pipeline": args.pipeline,
        "parameters": count_parameters(unet),
        "resolution": config.sample_size,
        "batch_size": args.batch_size,
        "device": device_name(args.device),
        "mixed_precision": args.mixed_precision,
        "compile": args.compile,
        "ms_per_step": round(1000 * seconds, 1),
        "images_per_second": round(args.batch_size / seconds, 1),
        "torch": torch.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
