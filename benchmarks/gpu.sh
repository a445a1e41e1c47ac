#!/usr/bin/env bash
# The GPU benchmark, one command, under 8 minutes on an H200: training images/s and MFU of ddpm-cifar10-32 at batches
# 128 and 512 and of ddpm-256 at batch 32 (bf16, channels_last, fused AdamW, TF32, torch.compile) against the plain
# recipe, sampling images/s against diffusers' DDPMPipeline (eager, compiled, CUDA graphs), and a 4-call distilled
# student's sampling against its teacher's 100 calls. See benchmarks/gpu_bench.py.
#
#   bash benchmarks/gpu.sh              # on a CUDA machine
#   bash benchmarks/gpu.sh --dry-run    # anywhere: ddpm-tiny-8 on the CPU, the same code paths, about a minute
#
# A machine whose image lacks diffusers, accelerate or datasets gets them as wheels in .whl/ (the device tool's README
# says how to download them here); they are installed into /tmp/site first.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ] && ! python3 -c "import diffusers" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
args=()
if [ "${1:-}" = "--dry-run" ]; then
    args+=(--dry_run)
fi
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python3 benchmarks/gpu_bench.py "${args[@]}"
if [ "${1:-}" != "--dry-run" ]; then
    python3 benchmarks/gpu_same_images.py
fi
