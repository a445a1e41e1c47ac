"""
What --gradient_checkpointing and --offload_ema save (peak memory) and cost (time per step): real training runs of
training/train.py, one process each, side by side on the same data, at a size where activations matter (the DDPM
paper's CIFAR-10 UNet, 35.7M parameters, on 32x32 images). Not a test.

    python benchmarks/memory_flags.py                                   # ddpm-cifar10-32, batch 32, 6 steps
    python benchmarks/memory_flags.py --pipeline ddpm-digits-16 --batch_size 64

Peak memory is the process's maximum resident set (CPU) or torch's peak allocation (CUDA); time per step is the
mean over the steps after the first two (measured by the run itself: training_summary.json's wall time is not used,
it includes the start). Prints a JSON line per configuration and a table.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGURATIONS = {
    "EMA": ["--use_ema"],
    "EMA + gradient checkpointing": ["--use_ema", "--gradient_checkpointing"],
    "EMA offloaded": ["--use_ema", "--offload_ema"],
    "EMA offloaded + gradient checkpointing": ["--use_ema", "--offload_ema", "--gradient_checkpointing"],
}

# Runs train.py's main in this child process, timing each optimizer step, then reports peak memory and the times.
CHILD = r"""
import json, resource, sys, time
import torch
sys.argv = ["train.py", *json.loads(sys.argv[1])]
sys.path.insert(0, {root!r})
import ddpm_hub.training.loop as loop
times, step = [], loop.optimizer_step
def timed(*args, **kwargs):
    start = time.perf_counter()
    result = step(*args, **kwargs)
    times.append(time.perf_counter() - start)
    return result
loop.optimizer_step = timed
from ddpm_hub.training.main import main
main()
cuda = torch.cuda.is_available()
peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps({{"peak_mib": peak, "step_times": times, "device": "cuda" if cuda else "cpu"}}))
"""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default="ddpm-cifar10-32", help="pipelines/<name> (default: %(default)s)")
    parser.add_argument("--batch_size", type=int, default=32, help="images per step (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per run (default: %(default)s)")
    return parser.parse_args(argv)


def run(name: str, flags: list[str], args: argparse.Namespace, folder: Path) -> dict:
    train = [
        "--pipeline", args.pipeline, "--dataset_name", "builtin:digits", "--max_train_samples", "256",
        "--train_batch_size", str(args.batch_size), "--max_train_steps", str(args.steps), "--lr_warmup_steps", "1",
        "--validation_steps", "0", "--num_validation_images", "1", "--ddpm_num_inference_steps", "1",
        "--checkpointing_steps", "0", "--report_to", "none", "--logging_steps", "1",
        "--output_dir", str(folder / name.replace(" ", "-")), *flags,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", CHILD.format(root=str(ROOT)), json.dumps(train)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        raise SystemExit(f"{name}: exit {result.returncode}\n{result.stderr[-4000:]}")
    measured = json.loads(lines[-1].removeprefix("RESULT "))
    steady = measured["step_times"][2:] or measured["step_times"]
    return {
        "configuration": name,
        "flags": " ".join(flags),
        "peak_mib": round(measured["peak_mib"], 1),
        "seconds_per_step": round(sum(steady) / len(steady), 3),
        "device": measured["device"],
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, flags in CONFIGURATIONS.items():
            rows.append(run(name, flags, args, Path(folder)))
            print(json.dumps({**rows[-1], "pipeline": args.pipeline, "batch_size": args.batch_size}), flush=True)
    base = rows[0]
    print(f"\n{args.pipeline}, batch {args.batch_size}, {platform.machine()} {rows[0]['device']}:")
    print("| configuration | peak memory (MiB) | vs EMA | s/step | vs EMA |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        memory = row["peak_mib"] / base["peak_mib"]
        time = row["seconds_per_step"] / base["seconds_per_step"]
        print(
            f"| {row['configuration']} | {row['peak_mib']:,.0f} | {memory:.2f} | {row['seconds_per_step']:.2f} | "
            f"{time:.2f} |"
        )


if __name__ == "__main__":
    main()
