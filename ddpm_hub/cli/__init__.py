"""The `ddpm-hub` command line, one module per command: each has `HELP`, `add_arguments(parser)` and `run(args)`.

    info      a configuration's parameters and settings      (info.py)
    sample    grids, trajectories, cascades, sample folders  (sample.py)
    noise     the forward process of an image                (noise.py)
    inpaint   RePaint                                        (inpaint.py)
    img2img   SDEdit                                         (img2img.py)
    upscale   super-resolution                               (upscale.py)
    variations  unCLIP: an image's CLIP embedding decoded again (variations.py)
    unclip    unCLIP: a prior and a decoder as one pipeline  (unclip.py)
    eval      bits/dim, FID/KID, the sampler sweep           (evaluate.py)
    push      publishing to the Hub                          (push.py)
    train     training (training/train.py's options)         (train.py)
    env       versions and accelerator, for a bug report     (env.py)

`ddpm-hub --version` prints the package's version (`ddpm_hub/version.py`).

What the commands that run a model share is in `common.py`. This package is the top layer: it imports the library,
and nothing in the library imports it.
"""

import argparse
import sys

from ..errors import DDPMHubError
from ..version import __version__
from . import env, evaluate, img2img, info, inpaint, noise, push, sample, train, unclip, upscale, variations

COMMANDS = {
    "info": info,
    "sample": sample,
    "noise": noise,
    "inpaint": inpaint,
    "img2img": img2img,
    "upscale": upscale,
    "variations": variations,
    "unclip": unclip,
    "eval": evaluate,
    "push": push,
    "train": train,
    "env": env,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ddpm-hub", description="DDPM on Hugging Face diffusers: " + ", ".join(COMMANDS)
    )
    parser.add_argument("--version", action="version", version=__version__, help="print the version and exit")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        command = commands.add_parser(name, help=module.HELP, add_help=getattr(module, "ADD_HELP", True))
        module.add_arguments(command)
        command.set_defaults(func=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; the project's own errors (`DDPMHubError`) become one line and their exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    name = argv[0] if argv else None
    try:
        if getattr(COMMANDS.get(name), "PASS_THROUGH", False):  # its own parser reads all that follows
            return COMMANDS[name].run_arguments(argv[1:])
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exit:  # argparse: --help (0) or a bad option (2), already printed
            return exit.code
        return args.func(args)
    except DDPMHubError as error:
        print(f"ddpm-hub {name}: error: {error}", file=sys.stderr)
        return error.exit_code
