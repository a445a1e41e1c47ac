"""
Are DDPMHubPipeline's samples DDPMPipeline's on a GPU? `ddpm-cifar10-32` (random weights), 16 images, 50 steps, the
same CUDA generator, with TF32 on and off: each pipeline against itself (run-to-run determinism) and ours against
diffusers', as the largest difference in [0, 1] and the share of 8-bit pixels that differ. benchmarks/gpu.sh runs it
after gpu_bench.py. Not a test (on the CPU, tests/test_pipeline.py checks that the images are identical).

    python benchmarks/gpu_same_images.py
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twins import diffusers_twin  # noqa: E402  (benchmarks/, this script's folder)

from ddpm_hub.pipelines import Source  # noqa: E402

dev = torch.device("cuda")
for tf32 in (True, False):
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    ours = Source.of("ddpm-cifar10-32").build(seed=0).to(dev)
    theirs = diffusers_twin(ours).to(dev)

    def run(p, seed=0):
        p.set_progress_bar_config(disable=True)
        generator = torch.Generator(dev).manual_seed(seed)
        return torch.from_numpy(p(batch_size=16, num_inference_steps=50, generator=generator, output_type="np").images)

    a, a2, b = run(ours), run(ours), run(theirs)

    def u(x):
        return (x * 255).round()

    print(
        f"tf32={tf32} ours_vs_ours max|d|={float((a - a2).abs().max()):.3g} "
        f"ours_vs_diffusers max|d|={float((a - b).abs().max()):.3g} "
        f"uint8 pixels differing: {float((u(a) != u(b)).float().mean()):.4%} "
        f"max uint8 diff {float((u(a) - u(b)).abs().max())}",
        flush=True,
    )
