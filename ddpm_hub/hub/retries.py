"""The Hub calls of a publish: retried on transient failures within one deadline, and explained when they fail.

A transient failure (HTTP 5xx, 408, 429, a connection error) is retried after each of `RETRY_DELAYS` while the
deadline (`PUBLISH_TIMEOUT` over a whole publish, or over the checks before training) allows another attempt; a Hub
failure that outlasts them becomes a `PublishError` that says what was tried, for how long, and what to do.
"""

import contextlib
import contextvars
import importlib
import logging
import math
import time
from collections.abc import Callable
from typing import TypeVar

from huggingface_hub import constants
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from ..errors import DDPMHubError
from ..errors import exception_chain as chain
from ..loading import hub_errors
from ..loading.hub_errors import brief, status_of

logger = logging.getLogger(__name__)

# Seconds to wait before each retry of a transient failure; the client retries some requests itself as well.
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0)
# One deadline over every call and retry of a publish (and of the checks before training): a failing Hub is reported
# after about this long, not after each call's own retries multiplied by ours.
PUBLISH_TIMEOUT = 60.0
_DEADLINE: contextvars.ContextVar = contextvars.ContextVar("ddpm_hub_publish_deadline", default=None)
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)

T = TypeVar("T")


class PublishError(DDPMHubError, RuntimeError):
    """Publishing failed; the message says why, what (if anything) reached the Hub, and what to do."""


@contextlib.contextmanager
def deadline(seconds: float | None = None):
    """
    One time budget, `seconds` (default `PUBLISH_TIMEOUT`), for every Hub call and retry inside (a publish, or the
    checks before training).
    """
    seconds = PUBLISH_TIMEOUT if seconds is None else seconds
    token = _DEADLINE.set((time.monotonic(), time.monotonic() + seconds))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def retrying(action: str, repo_id: str, call: Callable[[], T]) -> T:
    """
    `call()`, retried after each of RETRY_DELAYS on a transient failure while the deadline allows another attempt
    as long as the last one (huggingface_hub retries some requests itself, so one attempt can take many seconds).
    A Hub failure becomes a PublishError that says how many attempts were made over how long.
    """
    started, ends = _DEADLINE.get() or (time.monotonic(), math.inf)
    attempts = len(RETRY_DELAYS) + 1
    for attempt in range(1, attempts + 1):
        tick = time.monotonic()
        try:
            return call()
        except Exception as error:
            transient = _transient(error)
            now = time.monotonic()
            delay = RETRY_DELAYS[attempt - 1] if attempt < attempts else math.inf
            if transient and now + delay + (now - tick) <= ends:
                logger.warning("Could not %s %s (%s); retrying in %g s.", action, repo_id, brief(error), delay)
                time.sleep(delay)
                continue
            if transient or any(isinstance(e, (HfHubHTTPError, OfflineModeIsEnabled)) for e in chain(error)):
                raise PublishError(_explain(action, repo_id, error, attempt, now - started)) from error
            raise
    raise AssertionError("unreachable")


def _explain(action: str, repo_id: str, error: Exception, attempts: int, seconds: float) -> str:
    untouched = "The local output folder is untouched."
    if _transient(error):
        return (
            f"Could not {action} {repo_id}: the Hub at {constants.ENDPOINT} kept failing ({brief(error)}) after "
            f"{attempts} attempts over {seconds:.0f} s (a publish gives up after {PUBLISH_TIMEOUT:g} s). No commit "
            f"was made by this push. {untouched} Run the same command again later: files already uploaded are not "
            "sent twice."
        )
    message = hub_errors.describe(error, repo_id) or hub_errors.http_cause(error, repo_id, token=True)
    return f"Could not {action} {repo_id}: {message}. {untouched}"


def _transport_errors() -> tuple[type[Exception], ...]:
    """Connection-level failures of the HTTP library huggingface_hub uses (httpx2 in 2.x, httpx in 1.x)."""
    errors: list[type[Exception]] = [ConnectionError, TimeoutError]
    for name in ("httpx2", "httpx"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        errors += [module.TimeoutException, module.NetworkError, module.RemoteProtocolError]
    return tuple(errors)


TRANSPORT_ERRORS = _transport_errors()


def _transient(error: BaseException) -> bool:
    """A 5xx/408/429 answer or a connection failure, anywhere in the exception chain."""
    for cause in chain(error):
        if isinstance(cause, OfflineModeIsEnabled):
            return False
        if status_of(cause) in RETRY_STATUSES or isinstance(cause, TRANSPORT_ERRORS):
            return True
    return False
