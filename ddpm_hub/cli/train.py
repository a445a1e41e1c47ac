"""`ddpm-hub train`: training (`ddpm_hub.training.main`, the same `main` as `training/train.py`), every argument after
`train` passed on as it is; under `accelerate launch` it runs on every process.

    ddpm-hub train --config training/configs/ddpm-digits-16.yaml
    accelerate launch --multi_gpu --num_processes 2 -m ddpm_hub.cli train --pipeline ddpm-tiny-8 --max_train_steps 20
    ddpm-hub train --help
"""

import argparse

HELP = "train a pipeline with Accelerate (the options of training/train.py; `ddpm-hub train --help`)"
ADD_HELP = False  # --help is training's own
PASS_THROUGH = True  # `ddpm-hub` hands everything after `train` to `run_arguments`, before its own parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help="the options of training/train.py")


def run(args: argparse.Namespace) -> int:
    return run_arguments(args.arguments)


def run_arguments(arguments: list[str]) -> int:
    """Training with `arguments` as training/train.py takes them."""
    from ..training.main import main  # torch, accelerate and the training parts load only for this command

    try:
        main(arguments)
    except SystemExit as exit:  # training's own parser: --help (0) or a bad option (2), already printed
        return exit.code
    return 0
