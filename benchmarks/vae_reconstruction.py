"""
How well a trained autoencoder gives the digits back (`ddpm_hub.evaluation.reconstruction`): PSNR of the held-out
images' 8-bit reconstructions (the images its run kept out of training: the run's seed and --validation_holdout), and
the reconstructions' distance to the digits in the digit classifier's features divided by the floor, at 16x16 (area
filter). The second is the ceiling for a latent model on this autoencoder: its samples go through the same decoder.

    accelerate launch --num_processes 1 training/train.py --config training/configs/ddpm-vae-digits-64.yaml
    python benchmarks/vae_reconstruction.py runs/ddpm-vae-digits-64 [--json out.json]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffusers import AutoencoderKL  # noqa: E402

from ddpm_hub.data import DataOptions  # noqa: E402
from ddpm_hub.evaluation.reconstruction import digit_reconstruction_quality, psnr_summary, reconstruct  # noqa: E402
from ddpm_hub.run_folder import OPTIONS_FILE, read_json  # noqa: E402
from ddpm_hub.training.batches import holdout_indices  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="an AutoencoderKL folder written by training/train.py")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    options = read_json(Path(args.folder, OPTIONS_FILE), "the run's options") or {}
    vae = AutoencoderKL.from_pretrained(args.folder).eval()
    data = DataOptions(dataset_name=options.get("dataset_name", "builtin:digits"), resolution=vae.config.sample_size)
    images = data.load(channels=vae.config.in_channels).images.clone()
    holdout, seed = options.get("validation_holdout", 0), options.get("seed", 0)
    started = time.perf_counter()
    result = {"folder": args.folder, "scaling_factor": vae.config.scaling_factor}
    if holdout:
        _, held = holdout_indices(len(images), holdout, seed)
        result["held_out"] = psnr_summary(images[held], reconstruct(vae, images[held]))
    if data.dataset_name == "builtin:digits":
        result["digits"] = digit_reconstruction_quality(vae, images)
    result["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
