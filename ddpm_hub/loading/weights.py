"""The weight files of a component folder, checked before they are loaded: safetensors (pickles only when trusted),
the variant asked for, and every value finite."""

import os
from pathlib import Path

from ..errors import InputNotFoundError, UsageError
from ..run_folder import PICKLE_WEIGHT_SUFFIXES, weight_files


def check_finite_weights(folder: Path, weight_files: list[str]) -> None:
    """
    Every weight in `weight_files` (safetensors, relative to `folder`) is a finite number: a diverged model (NaN or
    inf) is neither loaded to sample nor published.
    """
    from safetensors import safe_open

    for name in weight_files:
        with safe_open(str(Path(folder, name)), framework="pt") as weights:
            bad = [key for key in weights.keys() if not bool(weights.get_tensor(key).isfinite().all())]
        if bad:
            raise UsageError(
                f"{Path(folder, name)} has non-finite weights (NaN or inf in {len(bad)} tensors, e.g. {bad[0]}): a "
                "diverged model is neither sampled from nor published. Use the output of a run that finished, or of "
                "an earlier checkpoint."
            )


def check_weights(folder: Path, name: str, source, allow_pickle: bool, download_kwargs: dict) -> None:
    """
    Safetensors weights for component `name`, or pickle weights the caller opted in to; otherwise say what exists
    and what to do.
    """
    if any(Path(folder, name).glob("*.safetensors")):
        return
    files = weight_files(folder, name) if os.path.isdir(source) else _remote_files(str(source), download_kwargs)
    pickles = sorted(f for f in files if f.startswith(f"{name}/") and f.endswith(PICKLE_WEIGHT_SUFFIXES))
    if not pickles:
        config = f"{name}/config.json"
        raise InputNotFoundError(
            f"{source} has no {name} weights: expected {name}/*.safetensors next to {config}."
            if name != "unet"
            else f"{source} has no UNet weights: expected unet/diffusion_pytorch_model.safetensors next to {config}."
        )
    if not allow_pickle:
        raise UsageError(
            f"{source} has only pickle weights ({', '.join(pickles)}), no safetensors. Unpickling can run arbitrary "
            "code, so they are not loaded by default. If you trust this source, pass allow_pickle=True to "
            "from_pretrained (then save_pretrained writes safetensors)."
        )
    if not any(f.endswith(".bin") for f in pickles):  # allow_pickle: the libraries read *.bin only
        raise InputNotFoundError(
            f"{source} has {name} weights only as {', '.join(pickles)}; diffusers loads "
            f"{name}/diffusion_pytorch_model.safetensors or {name}/diffusion_pytorch_model.bin."
        )


def check_variant(path: Path, name: str, source, variant: str | None) -> None:
    """With `variant`, component `name` has weights saved as that variant (`*.<variant>.safetensors`)."""
    if variant is None or any(path.glob(f"*.{variant}.safetensors")) or any(path.glob(f"*.{variant}.bin")):
        return
    found = sorted(file.name for file in path.glob("*.safetensors"))
    variants = sorted({file.split(".")[-2] for file in found if file.count(".") >= 2})
    raise InputNotFoundError(
        f"{source} has no {variant!r} variant of its {name} weights (files {', '.join(found) or 'none'}): "
        + (f"its variants are {', '.join(variants)}." if variants else "it has only the default weights; leave out "
           "variant.")
    )  # fmt: skip


def _remote_files(repo_id: str, download_kwargs: dict) -> list[str]:
    """The repo's file list, or [] where it cannot be had (offline)."""
    from huggingface_hub import HfApi

    try:
        return HfApi().list_repo_files(
            repo_id, revision=download_kwargs.get("revision"), token=download_kwargs.get("token")
        )
    except Exception:  # noqa: BLE001 - only used to word an error that is raised anyway
        return []
