"""The values of training options that are not a plain number or string: lists of prompts, of calls, a range of
guidance scales. Each turns a command-line string or a config-file value into the option's value, or raises
`argparse.ArgumentTypeError` saying what is accepted."""

import argparse


def parse_prompts(value) -> tuple[str, ...]:
    """`"3 left of 7|one right of two"` (or a list of strings in a config file) -> the prompts."""
    items = value.split("|") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(item, str) and item.strip() for item in items):
        raise argparse.ArgumentTypeError(f"{value!r} is not a list of prompts: give 'first prompt|second prompt'")
    return tuple(item.strip() for item in items)


def parse_calls(value) -> tuple[int, ...]:
    """`"32,16,8,4,2,1"` (or a list in a config file) -> the student's calls, stage by stage."""
    items = value.split(",") if isinstance(value, str) else value
    try:
        calls = tuple(int(item) for item in items)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{value!r} is not a list of numbers of calls: give e.g. 32,16,8,4") from None
    if not calls or any(c < 1 for c in calls) or any(a != 2 * b for a, b in zip(calls, calls[1:])):
        raise argparse.ArgumentTypeError(f"{value!r}: the calls halve stage by stage, e.g. 32,16,8,4,2,1")
    return calls


def parse_guidance_range(value) -> tuple[float, float]:
    """`"1,5"` (or a list in a config file) -> the [low, high] of the guidance scales a student learns to read."""
    items = value.split(",") if isinstance(value, str) else value
    try:
        low, high = (float(item) for item in items)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{value!r} is not two guidance scales LOW,HIGH: give e.g. 1,5") from None
    if not 0 <= low < high <= 100:  # GUIDANCE_SCALE_RANGE; NaN fails too
        raise argparse.ArgumentTypeError(f"{value!r}: give LOW,HIGH with 0 <= LOW < HIGH <= 100, e.g. 1,5")
    return low, high


def parse_trackers(value) -> str:
    """
    `"wandb"`, `"tensorboard,wandb"` (or a list in a config file), `"all"` or `"none"` -> the trackers, comma
    separated: names Accelerate supports (`accelerate.utils.LoggerType`).
    """
    from accelerate.utils import LoggerType

    known = [kind.value for kind in LoggerType if kind.value != "all"]
    items = value.split(",") if isinstance(value, str) else value
    typed = isinstance(items, (list, tuple)) and all(isinstance(item, str) for item in items)
    names = [item.strip() for item in items if item.strip()] if typed else []
    unknown = [name for name in names if name not in (*known, "all", "none")]
    if not names or unknown or (len(names) > 1 and ({"all", "none"} & set(names))):
        raise argparse.ArgumentTypeError(
            f"{value!r}: give trackers Accelerate supports, comma separated ({', '.join(known)}), or all (every one "
            "installed) or none"
        )
    return ",".join(dict.fromkeys(names))
