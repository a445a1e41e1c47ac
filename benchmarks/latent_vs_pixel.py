"""Latent against pixel diffusion at 64x64, side by side in one process: training images/s (the same batch), sampling
images/s (the autoencoder's decode included), and, for trained runs, quality as the distance to the digits in the
digit classifier's features divided by its floor (samples reduced to 16x16 with an area filter).

    # speed only (fresh weights: the cost of a step does not depend on them)
    python benchmarks/latent_vs_pixel.py --vae runs/ddpm-vae-digits-64
    # and quality, of the runs the training configs write at an equal CPU budget
    python benchmarks/latent_vs_pixel.py --vae runs/ddpm-vae-digits-64 \\
        --pixel_run runs/ddpm-digits-64 --latent_run runs/ddpm-latent-digits-64 --num_images 500 --steps 50

Prints one JSON object; `--output FILE` writes it too. The models: `pipelines/ddpm-digits-64` (pixels) and
`pipelines/ddpm-latent-digits-64` (16x16x4 latents of the autoencoder).
"""

import argparse
import json
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from ddpm_hub import Source
from ddpm_hub.data import DataOptions
from ddpm_hub.evaluation.digit_classifier import digit_feature_extractor, load_digit_classifier
from ddpm_hub.evaluation.metrics import reference_split, sample_quality
from ddpm_hub.losses import DiffusionObjective
from ddpm_hub.pictures import to_uint8
from ddpm_hub.pipelines.sampling import sample_images
from ddpm_hub.shipped.latents_ddpm_hub import encode, encode_posterior, posterior_latents

PIXEL, LATENT = "ddpm-digits-64", "ddpm-latent-digits-64"


def timed(call, seconds: float, minimum: int = 2) -> float:
    """Calls per second of `call` over about `seconds` (after one warm-up call)."""
    call()
    count, started = 0, time.perf_counter()
    while count < minimum or time.perf_counter() - started < seconds:
        call()
        count += 1
    return count / (time.perf_counter() - started)


def training_speed(pipeline, batch_size: int, seconds: float, vae=None, cached: bool = True) -> float:
    """Images/s of a training step (forward, backward, AdamW) on random images; a latent model draws its latents
    from cached posteriors (`cached`) or encodes the pixels each step."""
    unet = pipeline.unet.train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    objective = DiffusionObjective(pipeline.scheduler)
    pixels = torch.rand(batch_size, 1, 64, 64) * 2 - 1
    generator = torch.Generator().manual_seed(0)
    if vae is not None:
        with torch.no_grad():
            mean, logvar = encode_posterior(vae, pixels)

    def step():
        if vae is None:
            x_0 = pixels
        elif cached:
            x_0 = posterior_latents(mean, logvar, vae, torch.randn(mean.shape, generator=generator))
        else:
            with torch.no_grad():
                x_0 = encode(vae, pixels, generator=generator, sample=True)
        loss = objective(unet, x_0, generator).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return batch_size * timed(step, seconds)


def sampling_speed(pipeline, batch_size: int, steps: int, seconds: float) -> float:
    """Images/s of a DDPM call of `steps` steps (decoded to pixels)."""
    pipeline.unet.eval()
    pipeline.set_progress_bar_config(disable=True)
    return batch_size * timed(lambda: pipeline(batch_size=batch_size, num_inference_steps=steps, output_type="pt"),
                              seconds, minimum=1)  # fmt: skip


def reduced(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N x 1 x H x W] -> uint8 [N x 1 x 16 x 16] by an area filter (the mean of each block of pixels)."""
    return to_uint8(F.interpolate(images.float() / 255, size=(16, 16), mode="area"))


def quality(run: str, reference, extract, num_images: int, steps: int, batch_size: int) -> dict:
    """FD of `num_images` DDPM samples (image i from seed i) to the reference half of the digits, and ÷ floor."""
    pipeline = Source.of(run).load()
    pipeline.set_progress_bar_config(disable=True)
    call = {"num_inference_steps": steps}
    images = sample_images(pipeline, range(num_images), seed=0, batch_size=batch_size, call_kwargs=call)
    features = extract(reduced(images)).numpy()
    measured = sample_quality(features, reference.features, 100, 0, True)
    floor = reference.floor(num_images, 100, 0, True)
    return {"fd": measured["fid"], "floor": floor["fid"], "ratio_to_floor": measured["fid"] / floor["fid"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae", required=True, help="the autoencoder of the latent model (a folder or Hub repo)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=50, help="DDPM steps of a sample (speed and quality)")
    parser.add_argument("--seconds", type=float, default=20.0, help="time per speed measurement")
    parser.add_argument("--pixel_run", help="a trained ddpm-digits-64 folder: measure its quality")
    parser.add_argument("--latent_run", help="a trained ddpm-latent-digits-64 folder: measure its quality")
    parser.add_argument("--num_images", type=int, default=500)
    parser.add_argument("--output")
    args = parser.parse_args()
    torch.manual_seed(0)
    vae = AutoencoderKL.from_pretrained(args.vae).eval().requires_grad_(False)
    pixel = Source.of(PIXEL).build(seed=0)
    latent = Source.of(LATENT).build(seed=0)
    latent.register_modules(vae=vae)
    report = {
        "device": f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "training_images_per_s": {
            "pixel": training_speed(pixel, args.batch_size, args.seconds),
            "latent_cached_posteriors": training_speed(latent, args.batch_size, args.seconds, vae),
            "latent_encoding_each_step": training_speed(latent, args.batch_size, args.seconds, vae, cached=False),
        },
        "sampling_images_per_s": {
            "pixel": sampling_speed(pixel, args.batch_size, args.steps, args.seconds),
            "latent_with_decode": sampling_speed(latent, args.batch_size, args.steps, args.seconds),
        },
    }
    train, sample = report["training_images_per_s"], report["sampling_images_per_s"]
    report["training_ratio"] = train["latent_cached_posteriors"] / train["pixel"]
    report["sampling_ratio"] = sample["latent_with_decode"] / sample["pixel"]
    if args.pixel_run or args.latent_run:
        model, _ = load_digit_classifier()
        extract = digit_feature_extractor(model)
        digits = DataOptions(dataset_name="builtin:digits", resolution=16).resolved().load(channels=1).images
        reference = reference_split(extract(torch.as_tensor(np.asarray(digits))).numpy(), seed=0)
        for name, run in (("pixel", args.pixel_run), ("latent", args.latent_run)):
            if run:
                report[f"quality_{name}"] = quality(run, reference, extract, args.num_images, args.steps, 64)
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
