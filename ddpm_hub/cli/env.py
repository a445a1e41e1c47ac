"""`ddpm-hub env`: the versions of ddpm-hub, Python, torch and the libraries it runs on, and the accelerator, as a list
ready to paste into a bug report (the form of `diffusers-cli env`, `accelerate env` and `hf env`).

    ddpm-hub env

It reads package metadata and asks torch what it sees; it prints no environment variable, path, token or
credential.
"""

import argparse
import importlib.metadata
import platform

from ..version import __version__

HELP = "versions of ddpm-hub, Python, torch and its libraries, and the accelerator: for a bug report"

# Distribution names, as `pip install` and importlib.metadata spell them.
REQUIRED = ("diffusers", "transformers", "accelerate", "datasets", "huggingface_hub", "safetensors", "numpy")
OPTIONAL = ("torch-fidelity", "wandb", "scikit-image")  # the `metrics`, `wandb` and `bench` extras
NOT_INSTALLED = "not installed"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`ddpm-hub env` takes no options."""


def run(args: argparse.Namespace) -> int:
    print("Copy and paste the text below into your GitHub issue.\n")
    print(format_environment(environment()))
    return 0


def installed_version(distribution: str) -> str:
    """The installed version of a distribution, or "not installed"."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return NOT_INSTALLED


def environment() -> dict[str, str]:
    """What a bug report needs, in print order: ddpm-hub, Python, the platform, torch and the accelerator, then each
    library (its installed version or "not installed")."""
    info = {
        "ddpm-hub version": __version__,
        "Python version": platform.python_version(),
        "Platform": platform.platform(),
    }
    info.update(torch_environment())
    for distribution in (*REQUIRED, *OPTIONAL):
        info[f"{distribution} version"] = installed_version(distribution)
    return info


def torch_environment() -> dict[str, str]:
    """torch's version, whether CUDA and MPS are available, and the device it would run on, with its name."""
    try:
        import torch
    except ImportError:
        return {"torch version": NOT_INSTALLED}
    cuda = torch.cuda.is_available()
    mps = torch.backends.mps.is_available()
    info = {
        "torch version": installed_version("torch"),
        "CUDA available": f"{cuda} (torch built with CUDA {torch.version.cuda})" if torch.version.cuda else str(cuda),
        "MPS available": str(mps),
    }
    if cuda:
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["Accelerator"] = (
            f"cuda: {len(names)} x {names[0]}" if len(set(names)) == 1 else "cuda: " + ", ".join(names)
        )
    elif mps:
        info["Accelerator"] = f"mps ({platform.processor() or platform.machine()})"
    else:
        info["Accelerator"] = f"none: CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    return info


def format_environment(info: dict[str, str]) -> str:
    """`- key: value` lines, as `diffusers-cli env` prints them."""
    return "\n".join(f"- {key}: {value}" for key, value in info.items()) + "\n"
