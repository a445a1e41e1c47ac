"""
What each CPU speed setting does to one training step (forward, loss, backward, AdamW) of a UNet, measured in one
process with the variants interleaved round by round, so that the machine's drift hits them alike. Not a test.

    python benchmarks/cpu_speed_choices.py                          # ddpm-digits-16, batch 64
    python benchmarks/cpu_speed_choices.py --pipeline ddpm-digits-16 --variants fp32,channels_last,bf16

Variants: fp32 (plain: foreach AdamW, NCHW memory, all physical cores), threads1 (one thread, what `accelerate
launch` gives a single CPU process), channels_last, fused_adamw, flush_denormal (floats below 1e-38 flushed to
zero), default (all three: what training/train.py uses on a CPU), bf16 (autocast, on top of fp32), default_bf16
(autocast on top of default: what `--mixed_precision bf16` gives on a CPU), compile
(torch.compile, inductor; its compile time is reported apart). Prints one JSON line: per variant the best 10-step
window in ms per step, and the ratio to fp32.
"""

import argparse
import contextlib
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

if importlib.util.find_spec("ddpm_hub") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training_step import training_step  # benchmarks/, this script's folder

from ddpm_hub.losses import DiffusionObjective
from ddpm_hub.pipelines import Source

# What each variant turns on. "default" is what training/train.py uses on a CPU; threads1 only changes the threads.
DEFAULT = frozenset({"channels_last", "fused_adamw", "flush_denormal"})
SETTINGS = {
    "fp32": frozenset(),
    "threads1": frozenset(),
    "channels_last": frozenset({"channels_last"}),
    "fused_adamw": frozenset({"fused_adamw"}),
    "flush_denormal": frozenset({"flush_denormal"}),
    "default": DEFAULT,
    "bf16": frozenset({"bf16"}),
    "default_bf16": DEFAULT | {"bf16"},
    "compile": frozenset({"compile"}),
}
VARIANTS = tuple(SETTINGS)


def make_step(pipeline_name: str, variant: str, batch_size: int):
    """A closure doing one training step of a fresh model set up as `variant` says, and its setup seconds."""
    started = time.perf_counter()
    pipeline = Source.of(pipeline_name).build(seed=0)
    unet = pipeline.unet.train()
    settings = SETTINGS[variant]
    channels_last = "channels_last" in settings
    if channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4, fused="fused_adamw" in settings)
    model = torch.compile(unet) if "compile" in settings else unet
    objective = DiffusionObjective(pipeline.scheduler, channels_last=channels_last)
    size = unet.config.sample_size
    x_0 = torch.rand(batch_size, unet.config.in_channels, size, size) * 2 - 1
    generator = torch.Generator().manual_seed(0)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if "bf16" in settings else contextlib.nullcontext()
    step = training_step(model, objective, optimizer, x_0, generator, autocast)

    for _ in range(3):  # warm-up (and, for compile, the compilation)
        step()
    return step, time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default="ddpm-digits-16")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--rounds", type=int, default=4, help="windows of 10 steps per variant (default: 4)")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    threads = torch.get_num_threads()
    steps, setup = {}, {}
    for variant in variants:
        steps[variant], setup[variant] = make_step(args.pipeline, variant, args.batch_size)
    best = {variant: float("inf") for variant in variants}
    for _ in range(args.rounds):
        for variant in variants:
            torch.set_num_threads(1 if variant == "threads1" else threads)
            torch.set_flush_denormal("flush_denormal" in SETTINGS[variant])
            started = time.perf_counter()
            for _ in range(10):
                steps[variant]()
            best[variant] = min(best[variant], (time.perf_counter() - started) / 10)
    torch.set_num_threads(threads)
    torch.set_flush_denormal(False)
    reference = best.get("fp32")
    rows = {
        variant: {
            "ms_per_step": round(1000 * best[variant], 1),
            "vs_fp32": round(best[variant] / reference, 3) if reference else None,
            **({"compile_seconds": round(setup[variant], 1)} if variant == "compile" else {}),
        }
        for variant in variants
    }
    result = {"pipeline": args.pipeline, "batch_size": args.batch_size, "threads": threads, "variants": rows}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
