"""Options as typed, frozen dataclasses: the command line, config files and checks are generated from the fields.

    @dataclass(frozen=True)
    class MyOptions:
        steps: int = option(10, "how many steps", "run", at_least=1)
        rate: float = option(1e-3, "the step size", "run", above=0)

    parser = argparse.ArgumentParser()
    add_arguments(parser, MyOptions, {"run": "running"})
    options = from_namespace(MyOptions, parser.parse_args())
    check_ranges(options)  # "--steps must be at least 1, got 0"

A field whose type is itself such a dataclass (e.g. `data: DataOptions`) contributes its fields to the same flat
namespace: on the command line, in config files and in `to_flat_dict`, which is what `training_options.json` holds.
Float options must be finite numbers everywhere (`inf` and `nan` are refused with the option's name).
"""

import argparse
import contextlib
import dataclasses
import json
import math
import types
import typing
from pathlib import Path

import yaml

from .errors import InputNotFoundError, UsageError


def option(
    default,
    help: str,
    group: str,
    choices=None,
    aliases: tuple[str, ...] = (),
    at_least: float | None = None,
    above: float | None = None,
    below: float | None = None,
    at_most: float | None = None,
    parse=None,
):
    """
    A dataclass field with what the command line and the checks need: help, group, choices, aliases, range, and
    `parse`, a function that turns a command-line string or a config-file value into the field's value (raising
    ValueError with what is accepted) for fields that are not a plain int, float, str or bool.
    """
    bounds = {"at_least": at_least, "above": above, "below": below, "at_most": at_most}
    metadata = {"help": help, "group": group, "choices": choices, "aliases": aliases, "bounds": bounds}
    metadata["parse"] = parse
    return dataclasses.field(default=default, metadata=metadata)


def field_type(hint) -> type:
    """int, float, str or bool from an annotation such as `int | None`."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else hint


def _is_options(kind) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def flat_fields(cls) -> list[tuple[dataclasses.Field, type, tuple[str, ...]]]:
    """(field, its type, the path of nested dataclass fields above it) for every leaf option of `cls`."""
    hints = typing.get_type_hints(cls)
    leaves = []
    for f in dataclasses.fields(cls):
        kind = field_type(hints[f.name])
        if _is_options(kind):
            leaves += [(leaf, t, (f.name, *path)) for leaf, t, path in flat_fields(kind)]
        else:
            leaves.append((f, hints[f.name], ()))
    return leaves


def aliases(cls) -> dict[str, str]:
    """Every accepted spelling (without '--') -> the field name."""
    names = {}
    for f, _, _ in flat_fields(cls):
        names[f.name] = f.name
        names.update({alias.lstrip("-"): f.name for alias in f.metadata["aliases"]})
    return names


# ----------------------------------------------------------------------------------------------------------------
# The command line


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the docstring's layout and appends every option's default to its help (once)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def finite_float(text: str) -> float:
    """argparse type: a float that is a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def guidance_scale(value) -> float:
    """
    argparse type and config-file parser of a classifier-free guidance scale: a number in the range every pipeline
    call accepts (`conditioning_ddpm_hub.GUIDANCE_SCALE_RANGE`, checked by the same function), so that a bad scale
    fails when the options are read, before any model is loaded.
    """
    from .shipped.conditioning_ddpm_hub import check_guidance_scale

    try:
        number = float(value) if isinstance(value, str) else value
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    try:
        return check_guidance_scale(number)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def int_at_least(minimum: int):
    """argparse type: an integer >= `minimum` (checked when parsing, before any work)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def add_arguments(parser: argparse.ArgumentParser, cls, group_titles: dict[str, str]) -> None:
    """One `--name` (plus aliases) per leaf option, in argument groups titled by `group_titles`."""
    groups = {}
    for f, hint, _ in flat_fields(cls):
        meta = f.metadata
        title = group_titles[meta["group"]]
        group = groups.get(title) or groups.setdefault(title, parser.add_argument_group(title))
        kind = field_type(hint)
        kwargs = {"dest": f.name, "default": f.default, "help": meta["help"]}
        if kind is bool:
            group.add_argument(f"--{f.name}", *meta["aliases"], action=argparse.BooleanOptionalAction, **kwargs)
        else:
            parse = meta.get("parse") or (finite_float if kind is float else kind)
            group.add_argument(f"--{f.name}", *meta["aliases"], type=parse, choices=meta["choices"], **kwargs)


def from_namespace(cls, namespace: argparse.Namespace):
    """The options object from parsed arguments (nested dataclasses filled from the same flat namespace)."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        kind = field_type(hints[f.name])
        values[f.name] = from_namespace(kind, namespace) if _is_options(kind) else getattr(namespace, f.name)
    return cls(**values)


def to_flat_dict(options) -> dict:
    """Leaf options by name: what `training_options.json` holds and what `--config` reads back."""
    flat = {}
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        flat.update(to_flat_dict(value) if dataclasses.is_dataclass(value) else {f.name: value})
    return flat


# ----------------------------------------------------------------------------------------------------------------
# Checks


def check_ranges(options) -> None:
    """Every bound the fields declare (and finiteness of floats), with a message naming the option."""
    flat = to_flat_dict(options)
    for f, _, _ in flat_fields(type(options)):
        value, bounds = flat[f.name], f.metadata["bounds"]
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        name = f"--{f.name}"
        if not math.isfinite(value):
            raise UsageError(f"{name} must be a finite number, got {value}.")
        if bounds["at_least"] is not None and value < bounds["at_least"]:
            raise UsageError(f"{name} must be at least {bounds['at_least']}, got {value}.")
        if bounds["above"] is not None and not value > bounds["above"]:
            raise UsageError(f"{name} must be > {bounds['above']}, got {value}.")
        if bounds["below"] is not None and not value < bounds["below"]:
            raise UsageError(f"{name} must be < {bounds['below']}, got {value}.")
        if bounds["at_most"] is not None and value > bounds["at_most"]:
            raise UsageError(f"{name} must be at most {bounds['at_most']}, got {value}.")


# ----------------------------------------------------------------------------------------------------------------
# Config files


def read_config_file(path: str, cls, secrets: tuple[str, ...] = ()) -> dict:
    """
    A YAML (.yaml/.yml) or JSON mapping of option names (or their aliases) to values, type-checked like the command
    line: field name -> value. Errors name the file, and the line for YAML/JSON syntax errors. A key in `secrets`
    is refused (without echoing its value): a secret does not belong in a file that is copied and shared.
    """
    file = Path(path)
    if not file.is_file():
        raise InputNotFoundError(f"--config {path}: no such file.")
    suffix = file.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise UsageError(f"--config {path}: expected a .yaml, .yml or .json file.")
    text = file.read_text(encoding="utf-8")
    try:
        values = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as error:
        raise UsageError(
            f"--config {path}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}."
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise UsageError(f"--config {path}: invalid YAML{where}: {problem}.") from None
    if not isinstance(values, dict):
        raise UsageError(
            f"--config {path}: expected a mapping of option names to values, got {type(values).__name__}."
        )
    secret = sorted(str(key) for key in values if key in secrets)
    if secret:
        raise UsageError(
            f"--config {path}: {', '.join(secret)} is refused: a secret does not belong in an options file. Set "
            "HF_TOKEN, point HF_TOKEN_PATH at a file holding it, or run `hf auth login`."
        )
    names = aliases(cls)
    unknown = sorted(str(key) for key in values if key not in names)
    if unknown:
        valid = sorted({f.name for f, _, _ in flat_fields(cls)})
        raise UsageError(f"--config {path}: unknown options {unknown}; valid options are {valid}.")
    leaves = {f.name: (f, hint) for f, hint, _ in flat_fields(cls)}
    return {
        names[key]: _check_config_value(path, names[key], value, *leaves[names[key]]) for key, value in values.items()
    }


def _check_config_value(path: str, name: str, value, f: dataclasses.Field, hint):
    kind = field_type(hint)
    optional = type(None) in typing.get_args(hint)
    if value is None and optional:
        return None
    if f.metadata.get("parse") is not None:
        try:
            return f.metadata["parse"](value)
        except (ValueError, TypeError, argparse.ArgumentTypeError) as error:
            raise UsageError(f"--config {path}: {name}: {error}") from None
    if kind is float and not isinstance(value, bool) and isinstance(value, (int, str)):
        with contextlib.suppress(ValueError):  # YAML 1.1 reads 3e-4 as a string; 3.0e-4 would be a float
            value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UsageError(
            f"--config {path}: {name} must be {'null or ' if optional else ''}a {kind.__name__}, got {value!r}."
        )
    if kind is float and not math.isfinite(value):
        raise UsageError(f"--config {path}: {name} must be a finite number, got {value!r}.")
    choices = f.metadata["choices"]
    if choices is not None and value not in choices:
        raise UsageError(f"--config {path}: {name}={value!r} is not one of {list(choices)}.")
    return value
