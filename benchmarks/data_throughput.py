"""
Data throughput and memory: the decoded cache (`ddpm_hub.data.cache`) against today's in-RAM loader, on a synthetic
folder of PNGs this script writes into a temporary folder (and deletes). Not a test.

    python benchmarks/data_throughput.py --num_images 100000              # the README's figures (minutes)
    python benchmarks/data_throughput.py --num_images 2000 --sizes 200,2000

For each size (the first N images of the folder, `--max_images N`) it runs, each in its own process:

1. the cache build with 1 worker, then with `--workers` (the physical cores): decode images/s, the builder's memory;
2. two ranks at once reading the built cache (the local main process has built it; training reads its rows with
   pread through the page cache) for one epoch of training batches (`MicroBatches`, batch 64, random flips): loader
   images/s and memory per rank;
3. two ranks at once with today's loader (`--no-decoded_cache`: each decodes everything into its own RAM, in one
   process), the same epoch: decode and loader images/s, memory per rank.

Memory per rank comes from /proc/self/status and /proc/self/smaps_rollup: `peak_rss_mb` (VmHWM: everything resident,
the pages of the mapped cache included), `private_mb` (the largest RssAnon seen: memory the rank owns), `mapped_mb`
(RssFile at the end: pages of mapped files, mostly the libraries, which live in the page cache and are shared by
every process that maps them), `pss_mb` (proportional set size: shared pages divided among the processes sharing
them), and `baseline_rss_mb` (after the imports, before any data). Then the training images/s of `--pipeline`
(forward, loss, backward, AdamW at `--train_batch_size`, as benchmarks/train_throughput.py times it), against the
loader's.

Prints one JSON object.
"""

import argparse
import importlib.util
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if importlib.util.find_spec("ddpm_hub") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from PIL import Image

PER_FOLDER = 1000  # images per subfolder of the synthetic folder (the subfolders are its classes)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=100_000, help="PNGs to write (default: %(default)s)")
    parser.add_argument(
        "--sizes", default=None, help="comma-separated image counts to measure (default: num_images/10,num_images)"
    )
    parser.add_argument("--image_size", type=int, default=32, help="the PNGs' side (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=None, help="decode processes (default: physical cores)")
    parser.add_argument("--batch_size", type=int, default=64, help="loader batch (default: %(default)s)")
    parser.add_argument("--pipeline", default="ddpm-digits-16", help="model to compare with (default: %(default)s)")
    parser.add_argument("--train_batch_size", type=int, default=64, help="its batch (default: %(default)s)")
    parser.add_argument("--train_steps", type=int, default=20, help="timed training steps (default: %(default)s)")
    parser.add_argument("--tmp_dir", default=None, help="where the temporary folder goes (default: the system's)")
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)  # internal: one measured process
    args = parser.parse_args(argv)
    if args.num_images < 1 or args.image_size < 1 or args.batch_size < 1:
        parser.error("--num_images, --image_size and --batch_size must be >= 1.")
    sizes = args.sizes or f"{max(1, args.num_images // 10)},{args.num_images}"
    args.sizes = sorted({int(n) for n in sizes.split(",")})
    if not all(1 <= n <= args.num_images for n in args.sizes):
        parser.error(f"--sizes must lie in 1..--num_images ({args.num_images}), got {args.sizes}.")
    return args


# ----------------------------------------------------------------------------------------------------------------
# The synthetic folder


def write_folder(folder: Path, num_images: int, size: int, workers: int) -> dict:
    """`num_images` smooth random RGB PNGs (a 4x4 grid of colours, bilinearly enlarged, plus noise) in subfolders."""
    started = time.monotonic()
    ranges = [
        (start, min(start + PER_FOLDER, num_images), size, str(folder)) for start in range(0, num_images, PER_FOLDER)
    ]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pool.map(_write_pngs, ranges)
    total = sum(p.stat().st_size for p in folder.rglob("*.png"))
    return {"num_images": num_images, "image_size": size, "megabytes": round(total / 2**20, 1),
            "write_seconds": round(time.monotonic() - started, 1)}  # fmt: skip


def _write_pngs(bounds: tuple[int, int, int, str]) -> None:
    start, stop, size, folder = bounds
    rng = np.random.default_rng(start)
    subfolder = Path(folder) / f"{start // PER_FOLDER:04d}"
    subfolder.mkdir(parents=True, exist_ok=True)
    for index in range(start, stop):
        coarse = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((size, size), Image.BILINEAR)
        noisy = np.asarray(coarse, dtype=np.int16) + rng.integers(-8, 9, (size, size, 3))
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(subfolder / f"{index:07d}.png")


# ----------------------------------------------------------------------------------------------------------------
# One measured process (`--child MODE FOLDER CACHE_DIR MAX_IMAGES WORKERS`)


def memory() -> dict:
    """Resident memory of this process now, in MB (Linux /proc)."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    rollup = Path("/proc/self/smaps_rollup").read_text().splitlines()
    pss = next((line.split()[1] for line in rollup if line.startswith("Pss:")), "0")

    def mb(text: str) -> float:
        return round(int(text.split()[0]) / 1024, 1)

    return {"rss": mb(status["VmRSS"]), "hwm": mb(status["VmHWM"]), "anon": mb(status["RssAnon"]),
            "file": mb(status["RssFile"]), "pss": mb(pss + " kB")}  # fmt: skip


def child(mode: str, folder: str, cache_dir: str, max_images: int, workers: int, batch_size: int) -> dict:
    import torch

    from ddpm_hub.data import DataOptions, UInt8ImageDataset
    from ddpm_hub.training.batches import MicroBatches

    torch.set_num_threads(1)
    baseline = memory()
    peaks = [baseline["anon"]]
    data = DataOptions(
        train_data_dir=folder, resolution=int(os.environ["BENCH_IMAGE_SIZE"]), cache_dir=cache_dir,
        decoded_cache=mode != "ram", preprocessing_num_workers=workers, max_images=max_images,
    )  # fmt: skip
    started = time.monotonic()
    decoded = data.load(channels=3)
    load_seconds = time.monotonic() - started
    peaks.append(memory()["anon"])
    result = {"mode": mode, "load_seconds": round(load_seconds, 2), "num_images": decoded.report.num_images}
    if mode == "build":
        manifest = json.loads((decoded.file.parent / "manifest.json").read_text())
        result["decode_images_per_second"] = manifest["build"]["items_per_second"]
    if mode == "ram":
        result["decode_images_per_second"] = round(decoded.report.num_images / load_seconds, 1)
    if mode != "build":
        dataset = UInt8ImageDataset(decoded.images, random_flip=True, file=decoded.file)
        batches = MicroBatches(dataset, batch_size, 1, 0, seed=0, columns={"labels": decoded.labels})
        started = time.monotonic()
        for m in range(batches.batches_per_epoch):  # one epoch, in the training order
            batches[m]
            if m % 200 == 0:
                peaks.append(memory()["anon"])
        seconds = time.monotonic() - started
        result["loader_images_per_second"] = round(batches.batches_per_epoch * batch_size / seconds, 1)
    end = memory()
    result["memory"] = {"peak_rss_mb": end["hwm"], "private_mb": max(peaks + [end["anon"]]), "mapped_mb": end["file"],
                        "pss_mb": end["pss"], "baseline_rss_mb": baseline["rss"]}  # fmt: skip
    return result


def run_children(commands: list[list[str]], image_size: int) -> list[dict]:
    """Start the processes together (ranks of one machine), wait for all; their JSON results."""
    env = {**os.environ, "BENCH_IMAGE_SIZE": str(image_size), "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env) for c in commands]
    outputs = [process.communicate()[0] for process in processes]
    if any(process.returncode for process in processes):
        raise RuntimeError(f"a measured process failed: {[p.returncode for p in processes]}")
    return [json.loads(output.decode().strip().splitlines()[-1]) for output in outputs]


def child_command(args, mode: str, folder: Path, cache_dir: Path, max_images: int, workers: int) -> list[str]:
    script = str(Path(__file__).resolve())
    return [sys.executable, script, "--batch_size", str(args.batch_size), "--child", mode, str(folder),
            str(cache_dir), str(max_images), str(workers)]  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# The measurements


def measure_size(args, folder: Path, tmp: Path, count: int) -> dict:
    """Builds with 1 and N workers, two ranks on the cache, two ranks with today's loader."""
    results = {"num_images": count}
    builds = {}
    for workers in sorted({1, args.workers}):
        cache_dir = tmp / f"cache-{count}-{workers}"
        (build,) = run_children([child_command(args, "build", folder, cache_dir, count, workers)], args.image_size)
        builds[workers] = build
        if workers != args.workers:
            shutil.rmtree(cache_dir)
    results["decode_images_per_second"] = {str(w): b["decode_images_per_second"] for w, b in builds.items()}
    results["cache_builder_memory"] = builds[args.workers]["memory"]
    cache_dir = tmp / f"cache-{count}-{args.workers}"
    results["cache_megabytes"] = round(sum(p.stat().st_size for p in cache_dir.rglob("*") if p.is_file()) / 2**20, 1)
    ranks = run_children([child_command(args, "cache", folder, cache_dir, count, 1)] * 2, args.image_size)
    results["cache_ranks"] = ranks
    shutil.rmtree(cache_dir)
    results["in_ram_ranks"] = run_children([child_command(args, "ram", folder, tmp, count, 1)] * 2, args.image_size)
    return results


def training_images_per_second(args) -> float:
    """images/s of the training step of --pipeline on this CPU (forward, loss, backward, AdamW; as train.py)."""
    import torch

    from ddpm_hub.losses import DiffusionObjective
    from ddpm_hub.pipelines import Source
    from ddpm_hub.runtime import default_cpu_threads
    from ddpm_hub.training.model import apply_speed_settings, make_optimizer
    from ddpm_hub.training.options import TrainingOptions

    torch.set_num_threads(default_cpu_threads())
    pipeline = Source.of(args.pipeline).build(seed=0)
    unet, options, device = pipeline.unet.train(), TrainingOptions(), torch.device("cpu")
    apply_speed_settings(unet, options.speed, device)
    optimizer = make_optimizer(unet.parameters(), options.optimizer, device)
    objective = DiffusionObjective(pipeline.scheduler, channels_last=options.speed.channels_last)
    size = unet.config.sample_size
    height, width = (size, size) if isinstance(size, int) else size
    x_0 = torch.rand(args.train_batch_size, unet.config.in_channels, height, width) * 2 - 1
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        objective(unet, x_0, generator).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    started = time.monotonic()
    for _ in range(args.train_steps):
        step()
    return args.train_steps * args.train_batch_size / (time.monotonic() - started)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        mode, folder, cache_dir, max_images, workers = args.child
        print(json.dumps(child(mode, folder, cache_dir, int(max_images), int(workers), args.batch_size)))
        return
    from ddpm_hub.data.parallel import default_workers

    args.workers = args.workers or default_workers()
    tmp = Path(tempfile.mkdtemp(prefix="ddpm_hub_data_bench_", dir=args.tmp_dir))
    try:
        report = {"command": "python benchmarks/data_throughput.py " + " ".join(argv or sys.argv[1:])}
        report["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                             "physical_cores": default_workers(), "python": platform.python_version()}  # fmt: skip
        report["folder"] = write_folder(tmp / "images", args.num_images, args.image_size, args.workers)
        report["sizes"] = [measure_size(args, tmp / "images", tmp, count) for count in args.sizes]
        training = training_images_per_second(args)
        loader = min(rank["loader_images_per_second"] for size in report["sizes"] for rank in size["cache_ranks"])
        report["training"] = {"pipeline": args.pipeline, "batch_size": args.train_batch_size,
                              "images_per_second": round(training, 1)}  # fmt: skip
        report["slowest_cache_loader_over_training"] = round(loader / training, 1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
