"""Sampling at scale: N images as one PNG each (and an `.npz` for evaluators), split across processes, resumable.

    ddpm-hub sample MODEL --num_images 50000 --batch_size 256 --output_dir samples --format npz --sampler ddim
    accelerate launch --num_processes 8 -m ddpm_hub.cli sample MODEL --num_images 50000 --output_dir samples

Image i is drawn by `ddpm_hub.sampling` (from `torch.Generator().manual_seed(seed + i)`, and for a
class-conditional model class i mod classes unless labels are given), so it is the same whatever the batch size, the
number of processes or the interruptions, and the same as image i of the grid of `ddpm-hub sample`.
`DIR/000000.png` ... are written under a temporary name and renamed, so a killed run leaves only complete files, and
a rerun samples only the missing ones. `samples.json` records the settings: a rerun with other
settings is refused instead of mixing two models' samples. `--format npz` also packs all of them into
`samples_NxHxWxC.npz` (`arr_0`: uint8 `[N x H x W x C]`, `arr_1`: the labels of a conditional model), the layout
that guided-diffusion's evaluator and clean-fid read.
"""

import json
import os
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .conditioning import ImageConditions
from .errors import UsageError
from .run_folder import write_json
from .sampling import sample_batches

MANIFEST = "samples.json"
FORMATS = ("png", "npz")


def image_path(folder: Path, index: int) -> Path:
    return folder / f"{index:06d}.png"


def check_manifest(folder: Path, settings: dict) -> None:
    """The folder holds samples of these settings, or none; a different manifest is refused."""
    path = folder / MANIFEST
    if path.is_file():
        existing = json.loads(path.read_text())
        changed = sorted(key for key in settings if existing.get(key) != settings[key])
        if changed:
            raise UsageError(
                f"{folder} holds samples of other settings ({', '.join(f'{k}: {existing.get(k)!r}' for k in changed)}"
                f"); a rerun only completes the same settings. Choose another --output_dir or empty this one."
            )


def export_samples(
    pipeline,
    output_dir: str | os.PathLike,
    num_images: int,
    settings: dict,
    batch_size: int = 64,
    formats: tuple[str, ...] = ("png",),
    call_kwargs: dict | None = None,
    conditions: ImageConditions | None = None,
    seed: int = 0,
) -> dict:
    """
    Write the missing ones of images 0 .. num_images - 1 into `output_dir` (this process's share of them under
    `accelerate launch`), then the `.npz` if asked. `conditions` holds the condition of every image (default: the
    model's cycle, class i mod classes); `settings` (what changes the images:
    model, sampler, steps, seed, guidance) go to `samples.json` with the labels. Returns counts of images written
    (by all processes) and already there.
    """
    from accelerate import PartialState

    from .runtime import distributed_without_accelerator

    state = PartialState(cpu=distributed_without_accelerator())
    folder = Path(output_dir)
    conditions = conditions or pipeline.conditioning.cycle(num_images)
    labels = conditions.inputs.get("class_labels")
    settings = {**settings, "num_images": num_images, "labels": labels}
    if state.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        check_manifest(folder, {k: v for k, v in settings.items() if k != "num_images"})
        write_json(folder / MANIFEST, settings)
    state.wait_for_everyone()
    present = [i for i in range(num_images) if image_path(folder, i).is_file()]
    missing = sorted(set(range(num_images)) - set(present))
    state.wait_for_everyone()  # every process listed the folder before any writes
    mine = missing[state.process_index :: state.num_processes]
    progress = partial(tqdm, desc="sample", unit="batch", disable=not state.is_local_main_process)
    for batch, images in sample_batches(pipeline, mine, seed, batch_size, conditions.of, call_kwargs, progress):
        for index, image in zip(batch, images.permute(0, 2, 3, 1).numpy(), strict=True):
            final = image_path(folder, index)
            temporary = final.with_name(f".{final.name}.tmp")
            Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(temporary, format="PNG")
            os.replace(temporary, final)
    state.wait_for_everyone()
    archive = None
    if "npz" in formats and state.is_main_process:
        archive = write_npz(folder, num_images, labels)
    state.wait_for_everyone()
    return {"output_dir": str(folder), "written": len(missing), "already_there": len(present), "npz": archive}


def write_npz(folder: Path, num_images: int, labels: list[int] | None) -> str:
    """All images as `arr_0` uint8 `[N x H x W x C]` (and `arr_1` labels), guided-diffusion's sample layout."""
    images = np.stack([np.asarray(Image.open(image_path(folder, i))) for i in range(num_images)])
    if images.ndim == 3:  # grayscale: [N x H x W] -> [N x H x W x 1]
        images = images[..., None]
    path = folder / f"samples_{'x'.join(map(str, images.shape))}.npz"
    temporary = folder / ".samples.tmp.npz"
    arrays = {"arr_0": images} if labels is None else {"arr_0": images, "arr_1": np.asarray(labels)}
    np.savez(temporary, **arrays)
    os.replace(temporary, path)
    return str(path)
