"""The training entry of an installed ddpm_hub: `accelerate launch -m ddpm_hub.train ...` (or `python -m`).

It runs `training/train.py`, the script the README's commands name: from the checkout, or from the copy a wheel
carries (`ddpm_hub.resources`), so both ways run the same file with the same options.
"""

import runpy

from .resources import resource_path

if __name__ == "__main__":
    runpy.run_path(str(resource_path("training/train.py")), run_name="__main__")
