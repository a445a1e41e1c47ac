"""mkdocs hook: the command-line reference page is generated from the parsers themselves, so it cannot drift.

A page holding the line `<!-- cli-reference -->` gets, in its place, the `--help` text of `ddpm-hub` and of each of
its subcommands, and of `training/train.py`.
"""

import argparse
import os

MARKER = "<!-- cli-reference -->"


def _help(parser: argparse.ArgumentParser) -> str:
    text = parser.format_help()
    return f"```text\n{text.rstrip()}\n```\n"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps its subcommands here; there is no public accessor
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def render() -> str:
    os.environ["COLUMNS"] = "110"  # argparse wraps to the terminal; the page is the same everywhere
    from ddpm_hub.cli import build_parser
    from ddpm_hub.training.options import build_parser as build_training_parser

    parser = build_parser()
    sections = ["## ddpm-hub\n", _help(parser)]
    for name, command in _subparsers(parser).items():
        sections += [f"## ddpm-hub {name}\n", _help(command)]
    sections += [
        "## training/train.py\n",
        "`accelerate launch training/train.py ...`, `ddpm-hub train ...` (the same options), or from an installed "
        "wheel `accelerate launch -m ddpm_hub.train ...`.\n",
        _help(build_training_parser()),
    ]
    return "\n".join(sections)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render())
