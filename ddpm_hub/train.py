"""The training entry of an installed ddpm_hub: `accelerate launch -m ddpm_hub.train ...` (or `python -m`), the same
`main` as `training/train.py` and `ddpm-hub train` (`ddpm_hub.training.main`)."""

from .errors import exit_on_error
from .training.main import main

if __name__ == "__main__":
    with exit_on_error("train.py"):
        main()
