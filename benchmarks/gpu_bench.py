"""
The GPU benchmark that benchmarks/gpu.sh runs, under 8 minutes on an H200:

- training images/s and model FLOPs utilisation (MFU) of `ddpm-cifar10-32` at batch 128 as training/train.py sets it
  up on a GPU (bf16 autocast, channels_last, fused AdamW, TF32, torch.compile) against the plain recipe (fp32,
  PyTorch's defaults), and the same compiled step at batch 512;
- the 256x256 model (`ddpm-256`, batch 32: fits with room on an 80 GB device) with the same settings, compiled;
- sampling images/s of DDPMHubPipeline against diffusers' DDPMPipeline on the same weights (eager, compiled, and
  compiled with CUDA graphs), and of a 4-call distilled student's sampler (DDIM, trailing, v; the same UNet: the
  cost is the calls) against the teacher's 100 respaced DDPM calls.

    python benchmarks/gpu_bench.py                 # a CUDA machine: the real measurement
    python benchmarks/gpu_bench.py --dry_run       # any machine: ddpm-tiny-8, small batches, a few steps, same paths

FLOPs come from torch.utils.flop_counter on one eager forward + backward (matrix multiplications and convolutions);
MFU divides them by the step time and by the device's dense bf16 peak (--peak_tflops; H100/H200 SXM: 989). Prints
JSON lines, the last one the summary.
"""

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

if importlib.util.find_spec("ddpm_hub") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training_step import synchronize, training_step  # benchmarks/, this script's folder
from twins import diffusers_twin

from ddpm_hub.losses import DiffusionObjective
from ddpm_hub.pipelines import Source
from ddpm_hub.training.distillation import student_scheduler

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0}


def timed(step, steps: int, device: torch.device) -> float:
    """Seconds per call of `step`, after 3 warm-up calls."""
    for _ in range(3):
        step()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - started) / steps


def configured_step(pipeline_name: str, batch_size: int, device: torch.device, recipe: bool, compile: bool):
    """One training step as train.py sets it up on this device (or, `recipe`, with PyTorch's defaults)."""
    pipeline = Source.of(pipeline_name).build(seed=0)
    unet = pipeline.unet.train().to(device)
    if not recipe:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        unet = unet.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4, fused=not recipe)
    model = torch.compile(unet) if compile else unet
    objective = DiffusionObjective(pipeline.scheduler, channels_last=not recipe)
    size = unet.config.sample_size
    x_0 = torch.rand(batch_size, unet.config.in_channels, size, size, device=device) * 2 - 1
    generator = torch.Generator(device).manual_seed(0)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=not recipe)

    step = training_step(model, objective, optimizer, x_0, generator, autocast)

    def flops() -> int:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter, autocast:
            objective(unet, x_0, generator).mean().backward()
        optimizer.zero_grad(set_to_none=True)
        return counter.get_total_flops()

    return step, flops


def sampling_runs(pipeline_name: str, batch_size: int, steps: int, device: torch.device, dry_run: bool) -> dict:
    ours = Source.of(pipeline_name).build(seed=0).to(device)
    theirs = diffusers_twin(ours).to(device)
    for pipeline in (ours, theirs):
        pipeline.set_progress_bar_config(disable=True)

    def run(pipeline):
        return pipeline(
            batch_size=batch_size,
            num_inference_steps=steps,
            generator=torch.Generator(device).manual_seed(0),
            output_type="np",
        ).images

    results = {}
    for name, pipeline in (("ddpm_hub", ours), ("diffusers_ddpm_pipeline", theirs)):
        seconds = timed(lambda pipeline=pipeline: run(pipeline), 1 if dry_run else 3, device)
        results[name] = batch_size / seconds
    identical = bool((run(ours) == run(theirs)).all())
    eager_unet = ours.unet
    for mode in ("default", "reduce-overhead"):  # reduce-overhead: CUDA graphs on a GPU
        ours.unet = torch.compile(eager_unet, mode=mode)
        seconds = timed(lambda: run(ours), 1 if dry_run else 3, device)
        results[f"ddpm_hub_compile_{mode}"] = batch_size / seconds
    ours.unet = eager_unet
    return {"sampling_images_per_second": {k: round(v, 2) for k, v in results.items()}, "identical_images": identical}


def student_vs_teacher(pipeline_name: str, batch_size: int, calls: int, teacher_steps: int, device, dry_run: bool):
    """Sampling images/s of a distilled student's sampler (DDIM, `calls` calls) against the teacher's DDPM steps."""
    teacher = Source.of(pipeline_name).build(seed=0).to(device)
    teacher.set_progress_bar_config(disable=True)
    student = type(teacher).from_pipe(teacher, scheduler=student_scheduler(teacher.scheduler.config))
    student.set_progress_bar_config(disable=True)
    results = {}
    for label, pipeline, steps in (("teacher", teacher, teacher_steps), ("student", student, calls)):

        def run(pipeline=pipeline, steps=steps):
            generator = torch.Generator(device).manual_seed(0)
            return pipeline(batch_size=batch_size, num_inference_steps=steps, generator=generator, output_type="np")

        seconds = timed(run, 1 if dry_run else 3, device)
        results[f"{label}_{steps}_calls"] = round(batch_size / seconds, 2)
    teacher_rate, student_rate = results.values()
    return {"distilled_sampling_images_per_second": results, "student_speedup": round(student_rate / teacher_rate, 2)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry_run", action="store_true", help="ddpm-tiny-8, batch 8, a few steps: check the script")
    parser.add_argument("--peak_tflops", type=float, default=None, help="dense bf16 peak of the device")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.dry_run:
        raise SystemExit("No CUDA device: run with --dry_run to check the script on this machine.")
    name, batch, train_steps = ("ddpm-tiny-8", 8, 3) if args.dry_run else ("ddpm-cifar10-32", 128, 50)
    large, large_batch = ("ddpm-tiny-8", 4) if args.dry_run else ("ddpm-256", 32)
    sample_batch, sample_steps = (4, 3) if args.dry_run else (256, 100)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_name), None)

    training = {}
    for label, pipeline_name, size, recipe, compile, steps in (
        ("recipe_fp32", name, batch, True, False, train_steps),
        ("ddpm_hub_eager", name, batch, False, False, train_steps),
        ("ddpm_hub_compiled", name, batch, False, True, train_steps),
        ("ddpm_hub_compiled_batch_x4", name, 4 * batch, False, True, max(3, train_steps // 4)),
        ("ddpm_256_compiled", large, large_batch, False, True, max(3, train_steps // 5)),
    ):
        step, flops = configured_step(pipeline_name, size, device, recipe, compile)
        seconds = timed(step, steps, device)
        row = {"pipeline": pipeline_name, "batch": size, "images_per_second": round(size / seconds, 1)}
        row["ms_per_step"] = round(1000 * seconds, 2)
        if not recipe:
            step_flops = flops()
            row["gflops_per_step"] = round(step_flops / 1e9, 3)
            row["mfu"] = round(step_flops / seconds / (peak * 1e12), 4) if peak else None
        training[label] = row
        print(json.dumps({"training": label, **row}), flush=True)
        del step, flops
        if device.type == "cuda":
            torch.cuda.empty_cache()
    sampling = sampling_runs(name, sample_batch, sample_steps, device, args.dry_run)
    print(json.dumps(sampling), flush=True)
    distilled = student_vs_teacher(name, sample_batch, 4, max(sample_steps, 8), device, args.dry_run)
    print(json.dumps(distilled), flush=True)
    summary = {
        "device": device_name,
        "pipeline": name,
        "training_batch": batch,
        "peak_bf16_tflops": peak,
        "training": training,
        "speedup_over_recipe": round(
            training["ddpm_hub_compiled"]["images_per_second"] / training["recipe_fp32"]["images_per_second"], 3
        ),
        "sampling_batch": sample_batch,
        "sampling_steps": sample_steps,
        **sampling,
        **distilled,
        "torch": torch.__version__,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
