"""Where the code runs: processes and threads, shared by training and sampling at scale."""

import os

import torch


def distributed_without_accelerator() -> bool:
    """
    `accelerate launch --multi_gpu --num_processes N` on a machine without GPUs: Accelerate falls back to N separate
    single-process runs unless told to use the CPU; with `cpu=True` the ranks form one gloo group (MULTI_CPU).
    """
    has_accelerator = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not has_accelerator


def default_cpu_threads() -> int:
    """
    The physical cores shared by the processes of this machine. `accelerate launch` on a CPU sets OMP_NUM_THREADS=1
    for a single process, which leaves half of a 2-core machine idle (a 1.5x slower training step, see the README).
    """
    import psutil

    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
