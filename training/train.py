"""
Train a DDPM with Accelerate: the script the README and the docs name, a shim over `ddpm_hub.training.main` (whose
docstring, also `--help`'s description, opens with the commands).

    accelerate launch --num_processes 1 training/train.py --config training/configs/ddpm-digits-16.yaml
    accelerate launch --multi_gpu --num_processes 2 training/train.py --pipeline ddpm-tiny-8 --max_train_steps 20
    python training/train.py --help
"""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("ddpm_hub") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ddpm_hub.errors import exit_on_error
from ddpm_hub.training.main import main

if __name__ == "__main__":
    with exit_on_error("train.py"):
        main()
