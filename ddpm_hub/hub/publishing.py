"""Publishing a trained pipeline folder to the Hugging Face Hub (the `ddpm-hub push` command is `ddpm_hub.cli.push`).

    HF_TOKEN=... ddpm-hub push OUTPUT_DIR --repo-id NS/NAME [--private] [--revision BRANCH] [--commit-message MSG]

    from ddpm_hub.hub.publishing import publish
    commit_url = publish("ddpm-digits-16-trained", repo_id="alice/ddpm-digits-16", private=True)

What goes up, in one commit: the pipeline (`model_index.json`, the `unet/` and `scheduler/` configs, safetensors
weights), the code files `model_index.json` names (they let plain diffusers load the repo with
`trust_remote_code=True`), the model card `README.md` rendered from the top-level `model_card.md`, `samples.png`,
`metrics.json`, `sweep.md`, `bits_per_timestep.png`, `training_options.json` (token-like values removed) and
`training_summary.json`, with every local path in them made relative to the folder or cut to its name
(`ddpm_hub.public`). Nothing else: never `checkpoints/`, `logs/`, optimizer states or pickles. Unchanged files
are not uploaded again, and a push with nothing changed makes no commit.

The order makes failures harmless: the folder is checked, then the token (present, valid, allowed to write to the
namespace), then the files and the card are staged in a temporary folder, and only then is the repo created and the
commit made. Transient failures (HTTP 5xx, 408, 429, connection errors) are retried with backoff, a bounded number of
times; the output folder is only ever read. The token comes from `token=` (Python), else `HF_TOKEN`, else the file
`HF_TOKEN_PATH` names or the login cache (`hf auth login`), never from a command-line option; the endpoint from
`HF_ENDPOINT`. In a multi-process run only the main process uploads. The files are chosen and staged by
`ddpm_hub.hub.staging`, the Hub calls retried by `ddpm_hub.hub.retries`.
"""

import logging
import os
import tempfile
from pathlib import Path

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, RepositoryNotFoundError
from huggingface_hub.utils import validate_repo_id

from ..errors import UsageError
from ..loading import hub_errors
from ..loading.components import read_model_index
from ..loading.hub_errors import status_of
from ..run_folder import TrainingSummary
from .model_card import DEFAULT_LICENSE
from .retries import PublishError, deadline, retrying
from .staging import check_no_token, files_to_upload, managed_patterns, stage

logger = logging.getLogger(__name__)

WRITE_ROLES = ("write", "admin", "fineGrained")  # fine-grained tokens: the Hub decides per repo


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
    with deadline():
        return _publish(folder, files, repo_id, private, revision, commit_message, token, license)


def _publish(folder, files, repo_id, private, revision, commit_message, token, license) -> str:
    api, repo_id, existing = _check_access(repo_id, private, token)
    with tempfile.TemporaryDirectory(prefix="ddpm_hub_publish_") as staging:
        stage(folder, files, Path(staging), repo_id, revision, private or bool(existing and existing.private), license)
        check_no_token(Path(staging), api.token)
        if existing is None:
            retrying("create the repo", repo_id, lambda: api.create_repo(repo_id, private=private, exist_ok=True))
        if revision not in (None, "main"):
            retrying(
                f"create the branch {revision!r}",
                repo_id,
                lambda: api.create_branch(repo_id, branch=revision, exist_ok=True),
            )
        commit = retrying(
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
    with deadline():
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
        whoami = retrying("check the token", repo_id, api.whoami)
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
        info = retrying("look up the repo", repo_id, lambda: api.repo_info(repo_id))
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


def _default_commit_message(folder: Path) -> str:
    summary = TrainingSummary.read(folder)
    if summary is None or not isinstance(summary.steps, int):
        return "Upload DDPM pipeline"
    return f"Upload DDPM pipeline ({summary.steps:,} training steps)"
