"""Experiment trackers through Accelerate's tracker API: `--report_to` (diffusers' name; `--logger` its alias) takes
any tracker Accelerate supports, several, `all` or `none`; the project is `--tracker_project_name`, else the output
folder's name. Losses and metrics go through `accelerator.log`; sample grids through each tracker's `log_images`,
in the form that tracker takes (trackers without images, such as mlflow, have the grids on disk, under
`<output_dir>/<logging_dir>/samples/`).
"""

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import UsageError

# The Python package each tracker needs (pip install <package>), where its name differs from the tracker's.
TRACKER_PACKAGES = {"comet_ml": "comet-ml", "trackio": "trackio"}


def log_with(report_to: str) -> list[str] | None:
    """Accelerate's `log_with` for --report_to: the tracker names, or None for `none`."""
    return None if report_to == "none" else report_to.split(",")


def check_trackers(report_to: str) -> None:
    """Every tracker named is installed (Accelerate would drop a missing one with a debug message and log nothing)."""
    import accelerate.utils.imports as imports  # is_<tracker>_available for each

    names = log_with(report_to) or []
    missing = [name for name in names if name != "all" and not getattr(imports, f"is_{name}_available")()]
    if missing:
        packages = " ".join(TRACKER_PACKAGES.get(name, name) for name in missing)
        raise UsageError(
            f"--report_to {report_to}: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed "
            f"(pip install {packages}); or report to another tracker (tensorboard comes with ddpm-hub), or none."
        )


def project_name(tracker_project_name: str | None, output_dir: str) -> str:
    """The trackers' project: --tracker_project_name, else the output folder's name (`runs/ddpm-digits-16`: that)."""
    return tracker_project_name or Path(output_dir).resolve().name


def _tensorboard(grid: np.ndarray) -> tuple[dict, dict]:
    return {"samples": grid[None]}, {"dataformats": "NHWC"}


def _one(grid: np.ndarray) -> tuple[dict, dict]:
    return {"samples": grid}, {}


def _listed(grid: np.ndarray) -> tuple[dict, dict]:
    return {"samples": [grid]}, {}


# The value each tracker's `log_images` takes: a batch array (tensorboard), one image (aim, clearml), or a list.
IMAGE_VALUES = {"tensorboard": _tensorboard, "aim": _one, "clearml": _one, "wandb": _listed, "swanlab": _listed}


def log_grid(accelerator, grid: Image.Image, step: int) -> list[str]:
    """The grid, as "samples", in every tracker that takes images; returns their names."""
    pixels = np.asarray(grid.convert("RGB"))  # [H x W x 3] uint8
    logged = []
    for tracker in accelerator.trackers:
        values = IMAGE_VALUES.get(tracker.name)
        if values is None:
            continue
        images, kwargs = values(pixels)
        tracker.log_images(images, step=step, **kwargs)
        logged.append(tracker.name)
    return logged
