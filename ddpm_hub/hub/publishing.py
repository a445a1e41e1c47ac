"""Publishing a trained pipeline folder to the Hugging Face Hub (the `ddpm-hub push` command is `ddpm_hub.cli.push`).

    HF_TOKEN=... ddpm-hub push OUTPUT_DIR --repo-id NS/NAME [--private] [--revision BRANCH] [--commit-message MSG]

    from ddpm_hub.hub.publishing import publish
    commit_url = publish("ddpm-digits-16-trained", repo_id="alice/ddpm-digits-16", private=True)

What goes up, in one commit: the pipeline (`model_index.json`, the `unet/` and `scheduler/` configs, safetensors
weights), the code files `model_index.json` names (they let plain diffusers load the repo with
`trust_remote_code=True`), the model card `README.md` rendered from the top-level `model_card.md`, `samples.png`,
`metrics.json`, `sweep.md`, `bits_per_timestep.png`, `training_options.json` (token-like values removed) and
`training_summary.json`, with every local path in them made relative to the folder or cut to its name
(`ddpm_hub.hub.public`). Nothing else: never `checkpoints/`, `logs/`, optimizer states or pickles. Unchanged files
are not uploaded again, and a push with nothing changed makes no commit.

The order makes failures harmless: the folder is checked, then the token (present, valid, allowed to write to the
namespace), then the files and the card are staged in a temporary folder, and only then is the repo created and the
commit made. Transient failures (HTTP 5xx, 408, 429, connection errors) are retried with backoff, a bounded number of
times; the output folder is only ever read. The token comes from `token=` (Python), else `HF_TOKEN`, else the file
`HF_TOKEN_PATH` names or the login cache (`hf auth login`), never from a command-line option; the endpoint from
`HF_ENDPOINT`. In a multi-process run only the main process uploads.
"""

import contextlib
import contextvars
import fnmatch
import importlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from huggingface_hub import HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled, RepositoryNotFoundError
from huggingface_hub.utils import validate_repo_id

from ..errors import DDPMHubError, InputNotFoundError, UsageError
from ..errors import exception_chain as chain
from ..loading import components, hub_errors
from ..loading.components import LIBRARY_COMPONENTS, components_of, read_model_index
from ..loading.hub_errors import brief, status_of
from ..run_folder import (
    BPD_PLOT_FILE,
    CARD_FILE,
    CLASS_ACCURACY_FILE,
    GUIDANCE_FILE,
    METRICS_FILE,
    MODEL_INDEX,
    OPTIONS_FILE,
    SAMPLES_FILE,
    SCHEDULER_CONFIG,
    SR_QUALITY_FILE,
    SUMMARY_FILE,
    SWEEP_FILE,
    TEXT_ACCURACY_FILE,
    UNET_CONFIG,
    TrainingSummary,
    read_json,
)
from ..version import __version__
from .model_card import DEFAULT_LICENSE, render_model_card
from .public import PublicPaths, is_local_path

logger = logging.getLogger(__name__)

# The run's files published from the output folder, besides the components' folders and the code. A `*` stays in one
# folder.
RUN_FILES = (
    SAMPLES_FILE,
    GUIDANCE_FILE,
    CLASS_ACCURACY_FILE,
    METRICS_FILE,
    TEXT_ACCURACY_FILE,
    SR_QUALITY_FILE,
    SWEEP_FILE,
    BPD_PLOT_FILE,
    OPTIONS_FILE,
    SUMMARY_FILE,
)
# The run's records whose strings are published with local paths rewritten (JSON objects, and Markdown tables).
RECORD_FILES = (OPTIONS_FILE, SUMMARY_FILE, METRICS_FILE)
TEXT_FILES = (SWEEP_FILE, CLASS_ACCURACY_FILE)
# In a component's folder: its configs, safetensors weights and a tokenizer's vocabulary; never pickles or code.
COMPONENT_FILES = ("*.json", "*.safetensors", "*.txt", "*.model")
# Seconds to wait before each retry of a transient failure; the client retries some requests itself as well.
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0)
# One deadline over every call and retry of a publish (and of the checks before training): a failing Hub is reported
# after about this long, not after each call's own retries multiplied by ours.
PUBLISH_TIMEOUT = 60.0
_DEADLINE: contextvars.ContextVar = contextvars.ContextVar("ddpm_hub_publish_deadline", default=None)
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
# Options whose names say they hold a secret, and strings shaped like a Hugging Face token.
SECRET_KEY = re.compile(r"token|secret|password|passwd|api_?key|credential", re.IGNORECASE)
TOKEN_LIKE = re.compile(r"^hf_[A-Za-z0-9]{20,}$")
WRITE_ROLES = ("write", "admin", "fineGrained")  # fine-grained tokens: the Hub decides per repo

T = TypeVar("T")


class PublishError(DDPMHubError, RuntimeError):
    """Publishing failed; the message says why, what (if anything) reached the Hub, and what to do."""


# ----------------------------------------------------------------------------------------------------------------
# The API


def publish(
    output_dir: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    license: str = DEFAULT_LICENSE,
) -> str | None:
    """
    Publish a pipeline folder (a training run's `output_dir`, or any `DDPMHubPipeline.save_pretrained` folder).

    Args:
        output_dir: the folder; only read, never changed.
        repo_id: `namespace/name`, or `name` for the token's own namespace.
        private: create the repo private. An existing public repo is refused rather than published to.
        revision: the branch to commit to (created from `main` if missing); default `main`.
        commit_message: default: "Upload DDPM pipeline (N training steps)".
        token: a write token; default `HF_TOKEN`, then the login cache.
        license: the Hub license id of the weights, for the model card.

    Returns:
        The URL of the commit (of the unchanged head when nothing changed), or `None` on a process other than the
        main one of a multi-process run, which publishes nothing.

    Raises:
        FileNotFoundError / ValueError: the folder is not a publishable pipeline, or the repo id is invalid.
        PublishError: no token, a token that cannot write there, or a Hub failure that outlasted the retries.
    """
    if not is_main_process():
        logger.info("Process %s is not the main process: publishing is left to rank 0.", os.environ.get("RANK"))
        return None
    check_repo_id(repo_id)
    folder = Path(output_dir)
    files = files_to_upload(folder)
    with deadline(PUBLISH_TIMEOUT):
        return _publish(folder, files, repo_id, private, revision, commit_message, token, license)


def _publish(folder, files, repo_id, private, revision, commit_message, token, license) -> str:
    api, repo_id, existing = _check_access(repo_id, private, token)
    with tempfile.TemporaryDirectory(prefix="ddpm_hub_publish_") as staging:
        stage(folder, files, Path(staging), repo_id, revision, private or bool(existing and existing.private), license)
        check_no_token(Path(staging), api.token)
        if existing is None:
            _retrying("create the repo", repo_id, lambda: api.create_repo(repo_id, private=private, exist_ok=True))
        if revision not in (None, "main"):
            _retrying(
                f"create the branch {revision!r}",
                repo_id,
                lambda: api.create_branch(repo_id, branch=revision, exist_ok=True),
            )
        commit = _retrying(
            "upload",
            repo_id,
            lambda: api.upload_folder(
                repo_id=repo_id,
                folder_path=staging,
                revision=revision,
                commit_message=commit_message or _default_commit_message(folder),
                delete_patterns=managed_patterns(read_model_index(folder)),
            ),
        )
    logger.info("Published %s to %s: %s", folder, repo_id, commit.commit_url)
    return commit.commit_url


def check_can_publish(repo_id: str, private: bool = False, token: str | None = None) -> str:
    """
    The checks `publish` makes before it changes anything on the Hub, without the folder: a token is there, the
    Hub accepts it, it may write to the namespace, and `private` does not clash with an existing public repo. Call
    it before a long training run that ends with a push. Returns the full `namespace/name`; raises PublishError.
    """
    with deadline(PUBLISH_TIMEOUT):
        return _check_access(repo_id, private, token)[1]


def _check_access(repo_id: str, private: bool, token: str | None):
    """(api, namespace/name, the existing repo's info or None)."""
    check_repo_id(repo_id)
    api = HfApi(token=resolve_token(token))
    repo_id = check_write_access(api, repo_id)
    return api, repo_id, _existing_repo(api, repo_id, private)


MAX_NAME_LENGTH = 96  # the Hub's limit on a repo name (and on a namespace)


def check_repo_id(repo_id: str) -> str:
    """
    `repo_id` is `NAME` or `NAMESPACE/NAME` as the Hub accepts them (huggingface_hub's `validate_repo_id`, plus the
    Hub's length limit), checked before anything is read or sent; otherwise a UsageError naming it and what is
    accepted. Returns it.
    """
    problem = None
    if not isinstance(repo_id, str) or not repo_id:
        problem = "it is empty"
    else:
        try:
            validate_repo_id(repo_id)
        except HFValidationError as error:
            problem = str(error).split(":")[0].rstrip(".")
        if problem is None and any(len(part) > MAX_NAME_LENGTH for part in repo_id.split("/")):
            problem = f"a name is longer than {MAX_NAME_LENGTH} characters"
    if problem:
        raise UsageError(
            f"The repo id {repo_id!r} is not one the Hub accepts ({problem}). Accepted: NAME or NAMESPACE/NAME, each "
            "made of letters, digits, '-', '_' and '.', not starting or ending with '-' or '.', without '--' or '..', "
            f"at most {MAX_NAME_LENGTH} characters, e.g. alice/ddpm-digits-16. Nothing was published."
        )
    return repo_id


def is_main_process() -> bool:
    """Rank 0 of a torch.distributed / Accelerate run (global rank over all machines), or a single process."""
    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


# ----------------------------------------------------------------------------------------------------------------
# Checks before anything is sent


def upload_patterns(index: dict) -> list[str]:
    """What a push takes from the folder: the index, every component's files (`COMPONENT_FILES`), the run's files."""
    components = [f"{name}/{pattern}" for name in components_of(index) for pattern in COMPONENT_FILES]
    return [MODEL_INDEX, *components, *RUN_FILES]


def managed_patterns(index: dict) -> list[str]:
    """
    Remote files a push owns: one of these that the new push does not have is deleted in the same commit, so that a
    stale metrics.json, weights or code file never sits next to new weights. Other files in the repo are left alone.
    """
    return [*upload_patterns(index), CARD_FILE, *(f"{name}/*" for name in components_of(index)), "*.py"]


def files_to_upload(folder: Path) -> list[str]:
    """
    The relative paths to publish from the folder (the code files are staged from the installed package, see
    `code_files`); checks the folder is a loadable pipeline with safetensors weights.
    """
    if not folder.is_dir():
        raise InputNotFoundError(
            f"{folder} is not a folder; pass the output_dir of a training run (a pipeline folder)."
        )
    index = read_model_index(folder)
    present = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    files = [path for path in present if any(_match(path, pattern) for pattern in upload_patterns(index))]
    if not any(_match(path, "unet/*.safetensors") for path in files):
        pickles = [path for path in present if path.startswith("unet/")]
        raise UsageError(
            f"{folder} has no safetensors UNet weights (unet/*.safetensors; found {pickles or 'nothing'} in unet/). "
            "Only safetensors are published: re-save with DDPMHubPipeline.from_pretrained(folder, "
            "allow_pickle=True).save_pretrained(folder) if you trust the pickle."
        )
    for path in (UNET_CONFIG, SCHEDULER_CONFIG):
        if path not in files:
            raise InputNotFoundError(f"{folder} has no {path}: it is not a complete pipeline folder.")
    components.check_finite_weights(folder, [path for path in files if path.endswith(".safetensors")])
    missing = [path for path in code_files(folder, index) if not (folder / path).is_file()]
    if missing:
        raise InputNotFoundError(
            f"{folder}/{MODEL_INDEX} names code files that are not there: {', '.join(missing)}. Without them the "
            "repo cannot load with trust_remote_code=True; save the pipeline again with "
            "DDPMHubPipeline.save_pretrained."
        )
    for name in (METRICS_FILE, OPTIONS_FILE, SUMMARY_FILE):
        read_json(folder / name)  # invalid JSON fails here, before any upload
    TrainingSummary.read(folder)
    return files


def code_files(folder: Path, index: dict) -> dict[str, Path]:
    """
    The code a repo of this folder ships, by path in the repo, as the installed package has it: the pipeline's file
    and what it imports, the task pipelines saved with it, and custom components' modules
    (`ddpm_hub.loading.components`). What goes up is always the code of this release of ddpm_hub, never the copy found
    in the folder.
    """
    files = {path.name: path for path in components.code_files_of(index)}
    for path in sorted(folder.glob("*.py")):  # the task pipelines of its family, saved with it
        installed = components.installed_code_file(path.name)
        if installed is not None:
            files.setdefault(path.name, installed)
    for name, entry in components_of(index).items():
        if entry[0] in (None, *LIBRARY_COMPONENTS):
            continue
        installed = components.installed_code_file(f"{entry[0]}.py")
        if installed is None:
            raise UsageError(
                f"{folder / MODEL_INDEX} names the module {entry[0]}.py for {name}, which is not a file of ddpm_hub; "
                "only ddpm_hub's own code is published."
            )
        files[f"{name}/{installed.name}"] = installed
    return files


def _match(path: str, pattern: str) -> bool:
    """fnmatch per path segment, so that `unet/*.json` never reaches into a subfolder and `*.py` stays at the root."""
    parts, pattern_parts = path.split("/"), pattern.split("/")
    return len(parts) == len(pattern_parts) and all(map(fnmatch.fnmatchcase, parts, pattern_parts))


def resolve_token(token: str | None) -> str:
    """`token`, else HF_TOKEN, else the login cache; a clear error if there is none."""
    token = token or get_token()
    if not token:
        raise PublishError(
            "No Hugging Face token: set HF_TOKEN, run `hf auth login`, or pass token= (Python) with a write token "
            "(https://huggingface.co/settings/tokens). Nothing was published."
        )
    return token


def check_write_access(api: HfApi, repo_id: str) -> str:
    """Ask the Hub who the token belongs to; refuse a read token or a foreign namespace. Returns `namespace/name`."""
    try:
        whoami = _retrying("check the token", repo_id, api.whoami)
    except PublishError as error:
        if isinstance(error.__cause__, HfHubHTTPError) and status_of(error.__cause__) == 401:
            cause = hub_errors.http_cause(error.__cause__, repo_id, api.token)
            raise PublishError(f"Cannot publish {repo_id}: {cause}. Nothing was published.") from error.__cause__
        raise
    user = whoami.get("name")
    namespaces = [user, *(org.get("name") for org in whoami.get("orgs", []))]
    role = whoami.get("auth", {}).get("accessToken", {}).get("role")
    if "/" not in repo_id:
        repo_id = check_repo_id(f"{user}/{repo_id}")
    if role is not None and role not in WRITE_ROLES:
        raise PublishError(
            f"The token of {user} is a {role} token: publishing {repo_id} needs a write token. Create one at "
            "https://huggingface.co/settings/tokens and set HF_TOKEN or run `hf auth login`. "
            "Nothing was published."
        )
    namespace = repo_id.split("/")[0]
    if namespace not in namespaces:
        raise PublishError(
            f"The token of {user} cannot write to {repo_id}: it writes to {', '.join(namespaces)} only. Use a repo "
            "id in one of those namespaces, or a token of an account in the organisation. Nothing was published."
        )
    return repo_id


def _existing_repo(api: HfApi, repo_id: str, private: bool):
    """The repo's info, or None if it does not exist yet; refuses to publish into a public repo asked to be private."""
    try:
        info = _retrying("look up the repo", repo_id, lambda: api.repo_info(repo_id))
    except PublishError as error:
        if isinstance(error.__cause__, RepositoryNotFoundError):
            return None
        raise
    if private and not info.private:
        raise PublishError(
            f"{repo_id} already exists and is public, but a private repo was asked for. Make it private first "
            f"(HfApi().update_repo_settings({repo_id!r}, private=True)) or publish without --private. Nothing was "
            "published."
        )
    return info


# ----------------------------------------------------------------------------------------------------------------
# Staging: the exact tree of the commit


def stage(
    folder: Path,
    files: list[str],
    staging: Path,
    repo_id: str,
    revision: str | None = None,
    private: bool = False,
    license: str = DEFAULT_LICENSE,
) -> None:
    """
    Copy `files` from `folder` to `staging` and render README.md there: the options scrubbed of secrets, and every
    local path in the run's records (options, summary, metrics, the sweep and class-accuracy tables) made relative to
    the run folder or cut to its name (`ddpm_hub.hub.public.PublicPaths`), so that nothing published names this
    machine.
    """
    options = read_json(folder / OPTIONS_FILE, "the training options") or {}
    summary = read_json(folder / SUMMARY_FILE, "a training summary") or {}
    recorded = [*options.values(), summary.get("pipeline"), (summary.get("dataset") or {}).get("source")]
    paths = PublicPaths(folder, [value for value in recorded if isinstance(value, str)])
    for path in files:
        target = staging / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if path in RECORD_FILES:
            data = read_json(folder / path)
            data = scrub_secrets(data) if path == OPTIONS_FILE else data
            target.write_text(json.dumps(paths.json(data), indent=2) + "\n", encoding="utf-8")
        elif path in TEXT_FILES:
            target.write_text(paths.text((folder / path).read_text(encoding="utf-8")), encoding="utf-8")
        else:
            shutil.copyfile(folder / path, target)
    code = code_files(folder, read_model_index(folder))
    for path, source in code.items():
        target = staging / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    warn_about_local_code(folder, code)
    local_dataset = is_local_path(options.get("dataset_name"))  # staged as its name only: say it is not a Hub one
    card = render_model_card(
        staging, repo_id, revision=revision, license=license, private=private, local_dataset=local_dataset
    )
    card.save(staging / CARD_FILE)


def warn_about_local_code(folder: Path, code: dict[str, Path]) -> list[str]:
    """
    The code files of `folder` that are not published as they are, named in one warning: copies that differ from the
    installed package's (edited, or of another release: the installed ones go up instead) and code files that are
    no shipped file of ddpm_hub (never published). Returns their paths.
    """
    local = sorted(p.relative_to(folder).as_posix() for p in [*folder.glob("*.py"), *folder.glob("*/*.py")])
    differing = [path for path in local if path in code and (folder / path).read_bytes() != code[path].read_bytes()]
    foreign = [path for path in local if path not in code]
    if differing or foreign:
        parts = [f"differ from ddpm_hub {__version__}'s: {', '.join(differing)}"] if differing else []
        parts += [f"are not files of ddpm_hub: {', '.join(foreign)}"] if foreign else []
        logger.warning(
            "Code files in %s that are not published: they %s. What goes up is the code of the installed ddpm_hub "
            "%s, so that a repo loaded with trust_remote_code=True runs a released ddpm_hub.",
            folder,
            "; they ".join(parts),
            __version__,
        )
    return differing + foreign


def scrub_secrets(value):
    """Drop entries whose key names a secret (`hub_token`, `api_key`, ...) and strings shaped like HF tokens."""
    if isinstance(value, dict):
        return {
            key: scrub_secrets(item)
            for key, item in value.items()
            if not SECRET_KEY.search(str(key)) and not _token_like(item)
        }
    if isinstance(value, list):
        return [scrub_secrets(item) for item in value if not _token_like(item)]
    return value


def _token_like(value) -> bool:
    return isinstance(value, str) and TOKEN_LIKE.match(value) is not None


def check_no_token(staging: Path, token: str) -> None:
    """The last guard: the token in use appears in no staged file."""
    needle = token.encode()
    for path in sorted(staging.rglob("*"), key=lambda p: p.name == CARD_FILE):  # a source file before the card
        if path.is_file() and needle in path.read_bytes():
            raise PublishError(
                f"{path.relative_to(staging)} contains the Hub token in use; remove it from the output folder. "
                "Nothing was published."
            )


def _default_commit_message(folder: Path) -> str:
    summary = TrainingSummary.read(folder)
    if summary is None or not isinstance(summary.steps, int):
        return "Upload DDPM pipeline"
    return f"Upload DDPM pipeline ({summary.steps:,} training steps)"


# ----------------------------------------------------------------------------------------------------------------
# Retries and error messages


@contextlib.contextmanager
def deadline(seconds: float):
    """One time budget for every Hub call and retry inside (a publish, or the checks before training)."""
    token = _DEADLINE.set((time.monotonic(), time.monotonic() + seconds))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def _retrying(action: str, repo_id: str, call: Callable[[], T]) -> T:
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
