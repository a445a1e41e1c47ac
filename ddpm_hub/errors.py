"""The project's own error types: what the command lines show as one message instead of a traceback.

Library code raises these where the cause is the user's input (an option, a file, a folder, a repo) and the message
already says what was wrong and what is accepted. Anything else (a bug, an error from inside torch) keeps its type
and its traceback: the command lines catch `DDPMHubError` only.

`UsageError` is also a `ValueError` and `InputNotFoundError` a `FileNotFoundError`, so `except ValueError` around a
library call keeps working.
"""

import contextlib
import sys


class DDPMHubError(Exception):
    """An error whose message is complete: the command lines print it without a traceback."""

    exit_code = 1


class UsageError(DDPMHubError, ValueError):
    """A bad option or input value, found before work was done (exit status 2, as argparse uses)."""

    exit_code = 2


class InputNotFoundError(DDPMHubError, FileNotFoundError):
    """A file, folder or repo named by the user does not exist, or is not what it should be."""

    exit_code = 2


class OutputError(DDPMHubError, OSError):
    """A file could not be written after the work was done (a folder made read-only, a full disk): what was written
    before is kept, and the message says so."""


@contextlib.contextmanager
def writing(path, what: str = "", kept: str = ""):
    """Around a write of `path`: an OSError becomes an `OutputError` naming the file, the cause and what is kept."""
    try:
        yield
    except OSError as error:
        if isinstance(error, DDPMHubError):
            raise
        described = f" ({what})" if what else ""
        raise OutputError(
            f"could not write {path}{described}: {error.strerror or error}.{(' ' + kept) if kept else ''}"
        ) from error


@contextlib.contextmanager
def refused_as_usage(prefix: str):
    """
    Around a call of a pipeline (or other code that cannot import this module, such as the shipped files): its
    refusal of an input, a `ValueError` raised before any work, becomes a `UsageError` whose message starts with
    `prefix` (the option, file or stage it concerns).
    """
    try:
        yield
    except DDPMHubError:
        raise
    except ValueError as error:
        raise UsageError(f"{prefix}: {error}") from None


@contextlib.contextmanager
def exit_on_error(program: str):
    """At a command-line boundary: a `DDPMHubError` becomes `program: error: message` and its exit status."""
    try:
        yield
    except DDPMHubError as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)


def exception_chain(error: BaseException | None):
    """The error and the errors it was raised from or during, innermost last."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def one_line(error: BaseException) -> str:
    """`Type: first line of the message` (or just the type)."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
