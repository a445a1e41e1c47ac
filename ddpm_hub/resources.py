"""Files that ship with ddpm_hub but live at the top of the repository: where to find them, installed or not.

In a checkout (and an editable install) `pipelines/`, `training/` and `model_card.md` sit next to the package, as
the design card lays them out. A wheel cannot hold files outside its packages, so `setup.py` copies them into
`ddpm_hub/_bundled/` when it builds one: one copy of each file in the repository, included at build time.
"""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
BUNDLED_DIR = PACKAGE_DIR / "_bundled"  # only in a built wheel / non-editable install
CHECKOUT_DIR = PACKAGE_DIR.parent
# Copied into the wheel by setup.py: (path in the repository, what it is).
BUNDLED = {
    "pipelines": "the pipeline configurations",
    "training": "the training entry (training/train.py), its example configs and Accelerate configs",
    "model_card.md": "the model card template",
}


def resource_path(relative: str) -> Path:
    """
    The installed copy of a top-level file or folder (`"pipelines"`, `"training/train.py"`, `"model_card.md"`): the
    bundled one of a wheel first, else the checkout's. Raises FileNotFoundError naming both places.
    """
    if relative.split("/")[0] not in BUNDLED:
        raise ValueError(f"{relative!r} is not a bundled resource; bundled: {', '.join(BUNDLED)}.")
    candidates = (BUNDLED_DIR / relative, CHECKOUT_DIR / relative)
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"{relative} is neither in {candidates[0]} (a wheel install) nor in {candidates[1]} (a checkout): this "
        "ddpm_hub installation is incomplete. Reinstall it (pip install ddpm-hub, or pip install -e . in a checkout)."
    )
