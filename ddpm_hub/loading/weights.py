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
    """
    Component `name` has the weights asked for: those saved as `variant` (`*.<variant>.safetensors`), or without one
    the plain weights; a folder that holds only variants says which to pass.
    """
    stems = [file.name.removesuffix(".safetensors") for file in path.glob("*.safetensors")]
    variants = sorted({stem.split(".")[-1].split("-")[0] for stem in stems if "." in stem})
    plain = any("." not in stem for stem in stems)
    if (variant is None and (plain or not variants)) or variant in variants:
        return
    if variant is None:
        raise InputNotFoundError(
            f"{source} has its {name} weights only as variants ({', '.join(variants)}): pass variant="
            f"{variants[0]!r} (--variant {variants[0]}), as saved by save_pretrained(..., variant={variants[0]!r})."
        )
    has = [f"the variants {', '.join(variants)}"] * bool(variants) + ["the plain weights (no variant)"] * plain
    raise InputNotFoundError(f"{source} has no {variant!r} variant of its {name} weights; it has {' and '.join(has)}.")


def _remote_files(repo_id: str, download_kwargs: dict) -> list[str]:
    """The repo's file list, or [] where it cannot be had (offline)."""
    from huggingface_hub import HfApi

    try:
        return HfApi().list_repo_files(
            repo_id, revision=download_kwargs.get("revision"), token=download_kwargs.get("token")
        )
    except Exception:  # noqa: BLE001 - only used to word an error that is raised anyway
        return []
