"""
ddpm_hub's training loop against the plain diffusers recipe and against the model alone, side by side in one run.

    python benchmarks/train_vs_recipe.py                                   # the 1.62M RGB UNet, 1,797 digit PNGs
    python benchmarks/train_vs_recipe.py --unet ddpm-digits-16 --data builtin  # the README's main job's setting

Same UNet, data, batch (64), precision (fp32), EMA, linear schedule, in one process with the same threads:

- model: benchmarks/train_throughput.py's step on a fixed batch (forward, loss, backward, AdamW), set up as
  training/train.py sets it up (channels_last, fused AdamW);
- ddpm_hub: the body of `ddpm_hub.training.loop.train` on a `Run` built by training/train.py's own functions from
  the same command-line options: the next micro-batch from its loader, `optimizer_step` (loss, backward, clipping,
  AdamW, LR schedule, EMA) and, every 10 steps, `sync_losses` (logging, the non-finite check);
- recipe: benchmarks/recipe_diffusers.py's step (a DataLoader decoding PNG files, `DDPMScheduler.add_noise`,
  `F.mse_loss`, `accelerator.backward`, clipping, AdamW, `EMAModel.step`, per-step logging), set up as the recipe
  does (PyTorch's defaults), with this process's threads;
- recipe_launched: the same step with one thread, which is what `accelerate launch --num_processes 1` gives a
  script on a CPU (OMP_NUM_THREADS=1); ddpm_hub's train.py sets the threads to the physical cores instead.

This shared machine changes speed by up to 1.5x from one step to the next, so the three run in turn, 10 steps each,
for --rounds rounds, and each keeps its best round. Prints one JSON line: ms per step, the speed-up over the
recipe, and the loop's cost over the model's. Not a test.
"""

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if importlib.util.find_spec("ddpm_hub") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from recipe_diffusers import Recipe  # noqa: E402
from train_throughput import setup as model_setup  # noqa: E402

# The UNet: RGB 16x16, widths 32/64/64, attention at the middle level, two residual blocks per resolution.
RGB_UNET = {"in_channels": 3, "out_channels": 3, "layers_per_block": 2}


def make_unet_config(name: str, work: Path) -> Path:
    """A configuration folder: ddpm-digits-16 as is, or its 1.62M RGB variant (`rgb-1.62m`); linear betas."""
    folder = work / name
    shutil.copytree(ROOT / "pipelines" / "ddpm-digits-16", folder)
    unet = json.loads((folder / "unet" / "config.json").read_text())
    if name == "rgb-1.62m":
        unet.update(RGB_UNET)
    (folder / "unet" / "config.json").write_text(json.dumps(unet, indent=2))
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    scheduler.update(beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler, indent=2))
    return folder


def write_digit_pngs(folder: Path) -> Path:
    """The 1,797 scikit-learn digits as 16x16 PNG files."""
    from PIL import Image

    from ddpm_hub.data import load_image_tensor

    folder.mkdir(parents=True, exist_ok=True)
    images, _ = load_image_tensor("builtin:digits", resolution=16, channels=1)
    for i, image in enumerate(images):
        Image.fromarray(image[0].numpy()).save(folder / f"{i:04d}.png")
    return folder


def ddpm_hub_step(argv: list[str]):
    """A closure running one step of training/train.py's loop, on a Run built from `argv` by train.py's functions."""
    from ddpm_hub.training.batches import make_loader
    from ddpm_hub.training.checks import check_options
    from ddpm_hub.training.data import load_training_data
    from ddpm_hub.training.loop import optimizer_step, sync_losses
    from ddpm_hub.training.options import parse_options
    from ddpm_hub.training.run import build_run, make_accelerator

    o, source = check_options(parse_options(argv)[0])
    accelerator = make_accelerator(o)
    channels = source.conditioning().image_channels(source.unet_config["in_channels"])
    dataset = load_training_data(o.data, 0, o.seed, source.conditioning(), channels, o.model.pipeline, accelerator)
    run = build_run(o, source, accelerator, dataset)
    loader = iter(make_loader(run.data, 0, run.options.length.max_train_steps, 0, False))
    pending, state = [], {"step": 0, "synced": time.monotonic()}

    class Quiet:
        def set_postfix(self, **kwargs):
            pass

    def step() -> None:
        pending.append(optimizer_step(run, [next(loader)]))
        state["step"] += 1
        if state["step"] % run.options.logging.logging_steps == 0:
            seconds = time.monotonic() - state["synced"]
            sync_losses(run, pending, state["step"], False, seconds, Quiet())
            pending.clear()
            state["synced"] = time.monotonic()

    return step


def model_step(config: Path, batch_size: int):
    args = argparse.Namespace(pipeline=str(config), seed=0, device=torch.device("cpu"), compile=False)
    unet, model, objective, optimizer = model_setup(args)
    size = unet.config.sample_size
    x_0 = torch.rand(batch_size, unet.config.in_channels, size, size) * 2 - 1
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        loss = objective(model, x_0, generator).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def one_thread(step) -> None:
    """The recipe as `accelerate launch --num_processes 1` runs it on a CPU: OMP_NUM_THREADS=1."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        step()
    finally:
        torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unet", choices=("rgb-1.62m", "ddpm-digits-16"), default="rgb-1.62m")
    parser.add_argument(
        "--data", choices=("pngs", "builtin"), default="pngs", help="ddpm_hub reads PNGs or the digits"
    )
    parser.add_argument("--rounds", type=int, default=8, help="rounds of 10 steps each (default: %(default)s)")
    parser.add_argument("--batch_size", type=int, default=64)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ddpm_hub_bench_") as work:
        work = Path(work)
        config = make_unet_config(args.unet, work)
        pngs = write_digit_pngs(work / "digits")
        data = ["--train_data_dir", str(pngs)] if args.data == "pngs" else ["--dataset_name", "builtin:digits"]
        steps = {
            "model": model_step(config, args.batch_size),
            "ddpm_hub": ddpm_hub_step(
                [
                    "--pipeline",
                    str(config),
                    *data,
                    "--output_dir",
                    str(work / "run"),
                    "--train_batch_size",
                    str(args.batch_size),
                    "--max_train_steps",
                    str(10 * (args.rounds + 1)),
                    "--use_ema",
                    "--learning_rate",
                    "1e-3",
                    "--lr_scheduler",
                    "constant_with_warmup",
                    "--lr_warmup_steps",
                    "100",
                    "--logger",
                    "tensorboard",
                ]
            ),  # fmt: skip
            "recipe": (recipe := Recipe(str(pngs), str(config), args.batch_size, 1e-3, str(work / "recipe"))).step,
            "recipe_launched": lambda: one_thread(recipe.step),
        }
        threads = torch.get_num_threads()
        for step in steps.values():  # warm-up
            for _ in range(10):
                step()
        best = {name: float("inf") for name in steps}
        for _ in range(args.rounds):
            for name, step in steps.items():
                started = time.perf_counter()
                for _ in range(10):
                    step()
                best[name] = min(best[name], (time.perf_counter() - started) / 10)
    ms = {name: round(1000 * seconds, 1) for name, seconds in best.items()}
    result = {
        "unet": args.unet,
        "data": args.data,
        "batch_size": args.batch_size,
        "threads": threads,
        "rounds": args.rounds,
        "model_ms_per_step": ms["model"],
        "ddpm_hub_ms_per_step": ms["ddpm_hub"],
        "recipe_ms_per_step": ms["recipe"],
        "recipe_launched_ms_per_step": ms["recipe_launched"],
        "loop_over_model": round(best["ddpm_hub"] / best["model"], 3),
        "speedup_over_recipe_same_threads": round(best["recipe"] / best["ddpm_hub"], 3),
        "speedup_over_recipe_as_launched": round(best["recipe_launched"] / best["ddpm_hub"], 3),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
