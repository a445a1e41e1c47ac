"""
The plain diffusers training recipe, as a reference for benchmarks/train_vs_recipe.py (not part of ddpm_hub; written
for this comparison): a torch Dataset over image files decoded with PIL on every access, a shuffling DataLoader,
`DDPMScheduler.add_noise`, the UNet, `F.mse_loss`, `accelerator.backward`, AdamW with a warmup schedule, diffusers'
`EMAModel.step`, and a progress bar plus a tracker log every step, the way the diffusers example script trains.

    python benchmarks/recipe_diffusers.py --train_data_dir DIGITS_PNG --pipeline ddpm-digits-16 --max_train_steps 100
"""

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from PIL import Image
from tqdm.auto import tqdm


class ImageFiles(torch.utils.data.Dataset):
    """Every access opens the file, resizes, centre-crops, flips at random and scales to [-1, 1]."""

    def __init__(self, paths: list[str], resolution: int, channels: int):
        self.paths, self.resolution, self.mode = paths, resolution, "L" if channels == 1 else "RGB"

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        with Image.open(self.paths[index]) as image:
            image = image.convert(self.mode)
        width, height = image.size
        scale = self.resolution / min(width, height)
        image = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BILINEAR)
        left, top = (image.width - self.resolution) // 2, (image.height - self.resolution) // 2
        image = image.crop((left, top, left + self.resolution, top + self.resolution))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1)
        pixels = pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)
        return pixels.flip(-1) if torch.rand(()) < 0.5 else pixels


class Recipe:
    """The recipe's setup and its training step, `step()`: one batch from the loader, forward, loss, backward, clip,
    AdamW, LR schedule, EMA, and the per-step logging of the example script."""

    def __init__(self, train_data_dir: str, pipeline: str, batch_size: int, learning_rate: float, output_dir: str):
        from pathlib import Path

        from ddpm_hub.pipelines import Source  # only to find the configuration folder by name

        folder = Source.of(pipeline).folder
        self.accelerator = Accelerator(log_with="tensorboard", project_dir=output_dir)
        unet = UNet2DModel.from_config(UNet2DModel.load_config(folder / "unet"))
        config = DDPMScheduler.load_config(folder / "scheduler")
        self.noise_scheduler = DDPMScheduler(num_train_timesteps=config["num_train_timesteps"], beta_schedule="linear")
        paths = sorted(str(p) for p in Path(train_data_dir).rglob("*.png"))
        dataset = ImageFiles(paths, unet.config.sample_size, unet.config.in_channels)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True)
        optimizer = torch.optim.AdamW(unet.parameters(), lr=learning_rate)
        lr_scheduler = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=100)
        self.ema = EMAModel(unet.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=0.75)
        self.unet, self.optimizer, self.loader, self.lr_scheduler = self.accelerator.prepare(
            unet, optimizer, loader, lr_scheduler
        )
        self.accelerator.init_trackers("recipe")
        self.batches, self.global_step = iter(self.loader), 0
        self.progress = tqdm(disable=not self.accelerator.is_local_main_process)

    def next_batch(self) -> torch.Tensor:
        try:
            return next(self.batches)
        except StopIteration:  # a new epoch
            self.batches = iter(self.loader)
            return next(self.batches)

    def step(self) -> None:
        clean = self.next_batch()
        noise = torch.randn_like(clean)
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (clean.shape[0],))
        noisy = self.noise_scheduler.add_noise(clean, noise, timesteps)
        loss = F.mse_loss(self.unet(noisy, timesteps).sample, noise)
        self.accelerator.backward(loss)
        self.accelerator.clip_grad_norm_(self.unet.parameters(), 1.0)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad()
        self.ema.step(self.unet.parameters())
        self.global_step += 1
        self.progress.update(1)
        logs = {
            "loss": loss.detach().item(),
            "lr": self.lr_scheduler.get_last_lr()[0],
            "ema": self.ema.cur_decay_value,
        }
        self.progress.set_postfix(**logs)
        self.accelerator.log(logs, step=self.global_step)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_data_dir", required=True)
    parser.add_argument("--pipeline", required=True, help="a pipeline configuration folder (its unet/ and scheduler/)")
    parser.add_argument("--train_batch_size", type=int, default=64)
    parser.add_argument("--max_train_steps", type=int, default=100)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--output_dir", default="recipe-run")
    args = parser.parse_args(argv)
    recipe = Recipe(args.train_data_dir, args.pipeline, args.train_batch_size, args.learning_rate, args.output_dir)
    started = time.monotonic()
    for _ in range(args.max_train_steps):
        recipe.step()
    recipe.accelerator.end_training()
    print(f"trained {args.max_train_steps} steps in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
