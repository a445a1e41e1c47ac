"""Sampling at scale: N images as one PNG each (and an `.npz` for evaluators), split across processes, resumable.

    ddpm-hub sample MODEL --num_images 50000 --batch_size 256 --output_dir samples --format npz --sampler ddim
    accelerate launch --num_processes 8 -m ddpm_hub.cli sample MODEL --num_images 50000 --output_dir samples

Image i is drawn by `ddpm_hub.pipelines.sampling` (from `torch.Generator().manual_seed(seed + i)`, and for a
class-conditional model class i mod classes unless labels are given), so it is the same whatever the batch size, the
number of processes or the interruptions, and the same as image i of the grid of `ddpm-hub sample`.
`DIR/000000.png` ... are written under a temporary name and renamed, so a killed run leaves only complete files, and
a rerun samples only the missing ones. `samples.json` records the settings and what was sampled: the sha256 of
the weights (`weights_sha256`, as training's summary computes it) and of the configurations (`config_sha256`). A rerun
with other settings, or of other weights at the same path, is refused instead of mixing two models' samples; so is a
folder holding a file that is not one of its samples (another size or mode, not a PNG) or a damaged `samples.json`,
before any sampling. `--format npz` also packs all of them into
`samples_NxHxWxC.npz` (`arr_0`: uint8 `[N x H x W x C]`, `arr_1`: the labels of a conditional model), the layout
that guided-diffusion's evaluator and clean-fid read.
"""

import hashlib
import json
import os
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..errors import UsageError, writing
from ..loading.configs import weights_checksum
from ..pipelines.conditioning import ImageConditions
from ..pipelines.sampling import sample_batches
from ..run_folder import check_writable_folder, read_json, write_json

MANIFEST = "samples.json"
FORMATS = ("png", "npz")
KEPT = "The images written before are complete and kept: run the same command again to write the rest."


def image_path(folder: Path, index: int) -> Path:
    return folder / f"{index:06d}.png"


def model_identity(pipeline) -> dict:
    """
    What was sampled: `weights_sha256`, the sha256 of each model component's weights (`weights_checksum`: equal iff
    bit-identical), and `config_sha256`, of the configurations and pipeline settings that change the images.
    """
    weights = {
        name: weights_checksum(component)
        for name, component in sorted(pipeline.components.items())
        if isinstance(component, torch.nn.Module)
    }
    configs = {
        name: {k: v for k, v in dict(component.config).items() if not k.startswith("_")}
        for name, component in sorted(pipeline.components.items())
        if hasattr(component, "config")
    }
    settings = {k: v for k, v in dict(pipeline.config).items() if not k.startswith("_") and k not in configs}
    text = json.dumps({"configs": configs, "settings": settings}, sort_keys=True, default=str)
    return {"weights_sha256": weights, "config_sha256": hashlib.sha256(text.encode()).hexdigest()}


def check_manifest(folder: Path, settings: dict, model: str | None = None) -> None:
    """
    The folder holds samples of these settings and this model (`model`: its name, for the message), or none;
    anything else is refused, naming it.
    """
    existing = read_json(folder / MANIFEST, "the samples' manifest")
    if existing is None:
        return
    if "weights_sha256" not in existing:
        raise UsageError(
            f"{folder / MANIFEST} does not record which weights its samples were drawn from (written by an older "
            "ddpm_hub), so they cannot be told apart from another model's. Choose another --output_dir or empty this "
            "one."
        )
    if existing.get("weights_sha256") != settings["weights_sha256"]:
        raise UsageError(
            f"{folder} holds samples of other weights than {model or 'the model'} has now (sha256 "
            f"{_short(existing['weights_sha256'])}, now {_short(settings['weights_sha256'])}): the model was replaced "
            "or changed. A rerun only completes samples of the same model; choose another --output_dir or empty this "
            "one."
        )
    changed = sorted(key for key in settings if existing.get(key) != settings[key])
    if changed:
        raise UsageError(
            f"{folder} holds samples of other settings ({', '.join(f'{k}: {existing.get(k)!r}' for k in changed)}"
            f"); a rerun only completes the same settings. Choose another --output_dir or empty this one."
        )


def _short(weights: dict) -> str:
    return ", ".join(f"{name} {digest[:12]}" for name, digest in weights.items()) if isinstance(weights, dict) else "?"


def check_images(folder: Path, indices: range, shape: tuple[int, int, int]) -> list[int]:
    """
    The indices whose file is there, each checked to be a sample this export could have written: a PNG of the
    model's size and mode (`shape` C x H x W). A foreign or damaged file is refused before any sampling, naming it.
    """
    channels, height, width = shape
    mode = "L" if channels == 1 else "RGB"
    present = []
    for index in indices:
        path = image_path(folder, index)
        if not path.is_file():
            continue
        try:
            with Image.open(path) as image:
                found = (image.format, image.size, image.mode)
        except Exception as error:  # noqa: BLE001 - PIL raises many types for a file that is not an image
            found = (f"not an image ({type(error).__name__})", None, None)
        if found != ("PNG", (width, height), mode):
            raise UsageError(
                f"{path} is not a sample of this model: it is {found[0]}"
                + (f", {found[1][0]}x{found[1][1]} {found[2]}" if found[1] else "")
                + f"; samples are {width}x{height} {mode} PNG files. Remove it, or choose another --output_dir."
            )
        present.append(index)
    return present


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

    from ..runtime import distributed_without_accelerator

    state = PartialState(cpu=distributed_without_accelerator())
    folder = Path(output_dir)
    conditions = conditions or pipeline.conditioning.cycle(num_images)
    labels = conditions.inputs.get("class_labels")
    settings = {**settings, **model_identity(pipeline), "num_images": num_images, "labels": labels}
    # Every process checks (reading only) before the main one writes: all refuse together, none waits for another.
    check_writable_folder(folder, "--output_dir")
    what = {k: v for k, v in settings.items() if k not in ("num_images", "model")}  # what was sampled, not where from
    check_manifest(folder, what, settings.get("model"))
    present = check_images(folder, range(num_images), tuple(pipeline.sample_shape(1)[1:]))
    missing = sorted(set(range(num_images)) - set(present))
    state.wait_for_everyone()
    if state.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        with writing(folder / MANIFEST, "the samples' manifest"):
            write_json(folder / MANIFEST, settings)
    state.wait_for_everyone()  # every process listed the folder before any writes
    mine = missing[state.process_index :: state.num_processes]
    progress = partial(tqdm, desc="sample", unit="batch", disable=not state.is_local_main_process)
    for batch, images in sample_batches(pipeline, mine, seed, batch_size, conditions.of, call_kwargs, progress):
        for index, image in zip(batch, images.permute(0, 2, 3, 1).numpy(), strict=True):
            final = image_path(folder, index)
            temporary = final.with_name(f".{final.name}.tmp")
            with writing(final, kept=KEPT):
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
    with writing(path, "the samples' .npz", kept=KEPT):
        np.savez(temporary, **arrays)
        os.replace(temporary, path)
    return str(path)
