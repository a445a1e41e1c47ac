#!/usr/bin/env bash
# The README's pictures of the two processes and of controlled generation, from the README's trained models
# (runs/ddpm-digits-16, runs/ddpm-digits-16-cond, runs/ddpm-digit-pairs-text, runs/ddpm-sr-16-to-64 and the latent runs
# of docs/latent.md). Every picture is one ddpm-hub command.
#
#   bash docs/make_pictures.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs/inputs
# The inputs: digit 1,726 of scikit-learn's digits, a 3 (the README's run may have trained on it: the pictures do not
# need an unseen digit), its right half to be generated, and a blurred, noisy copy of it.
python - <<'PY'
import numpy as np
from PIL import Image, ImageFilter
from ddpm_hub.data import load_image_tensor

images, _ = load_image_tensor("builtin:digits", resolution=16, channels=1)
digit = Image.fromarray(images[1726, 0].numpy())
digit.save("docs/inputs/digit.png")
mask = np.zeros((16, 16), dtype=np.uint8)
mask[:, 8:] = 255  # white: the region to generate
Image.fromarray(mask).save("docs/inputs/right-half-mask.png")
blurred = np.asarray(digit.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float32)
noisy = blurred + np.random.default_rng(0).normal(0, 40, blurred.shape)
Image.fromarray(np.clip(noisy, 0, 255).round().astype(np.uint8)).save("docs/inputs/blurred-noisy-digit.png")
PY
ddpm-hub noise docs/inputs/digit.png --timesteps 0,50,100,250,500,1000 --pipeline ddpm-digits-16 --scale 6 --output docs/forward-process.png
ddpm-hub sample runs/ddpm-digits-16 --trajectory --num_images 3 --steps 250 --frames 8 --scale 6 --output docs/reverse-process.png
ddpm-hub inpaint runs/ddpm-digits-16 docs/inputs/digit.png docs/inputs/right-half-mask.png --num_images 6 --steps 250 --scale 6 --output docs/inpainting.png
ddpm-hub img2img runs/ddpm-digits-16 docs/inputs/blurred-noisy-digit.png --strength 0.5 --num_images 6 --steps 250 --scale 6 --output docs/img2img.png
ddpm-hub sample runs/ddpm-digits-16-cond --class_labels 3,3,3,3,7,7,7,7 --guidance_scale 2 --num_images 8 --steps 250 --scale 6 --output docs/class-3-and-7.png
cp runs/ddpm-digits-16-cond/samples.png docs/ddpm-digits-16-cond-samples.png
cp runs/ddpm-digits-16-cond/guidance.png docs/ddpm-digits-16-cond-guidance.png
cp runs/ddpm-latent-digits-64/samples.png docs/ddpm-latent-digits-64-samples.png  # the latent run's grid (docs/latent.md)
cp runs/ddpm-digits-64/samples.png docs/ddpm-digits-64-samples.png  # the pixel run at the same CPU budget
# Text to image: four seen pairs, then four pairs never in the data (d, d + 5 mod 10), a column per prompt.
printf '%s\n' "3 left of 7" "eight right of one" "2 left of four" "six right of 9" \
  "0 left of 5" "seven right of two" "4 left of nine" "8 right of 3" > docs/inputs/digit-pair-prompts.txt
ddpm-hub sample runs/ddpm-digit-pairs-text --prompts_file docs/inputs/digit-pair-prompts.txt --guidance_scale 3 --num_images 32 --steps 100 --scale 4 --output docs/text-to-image.png
# The guided consistency student of docs/few-steps.md (ddpm-digit-pairs-text-consistency.yaml): its grid, 4 calls at w = 3.
cp runs/ddpm-digit-pairs-text-consistency/samples.png docs/text-guided-student-4-calls.png
# The same prompts in latent space (runs/ddpm-latent-digit-pairs-text, docs/latent.md), decoded at 64x128.
ddpm-hub sample runs/ddpm-latent-digit-pairs-text --prompts_file docs/inputs/digit-pair-prompts.txt --guidance_scale 5 --num_images 32 --steps 100 --scale 1 --output docs/latent-text-to-image.png
# A cascade: the main job's digits (16x16), then upscaled 4x by the super-resolution model (64x64).
ddpm-hub sample runs/ddpm-digits-16 --upscale runs/ddpm-sr-16-to-64 --upscale_steps 25 --num_images 8 --scale 2 --output docs/cascade.png
