"""How ddpm_hub words a failure of the Hugging Face Hub, once, for loading (`ddpm_hub.loading.components`) and
publishing (`ddpm_hub.hub.publishing`): the repo, the cause, and the fix. The exception types stay huggingface_hub's,
so that
`except RepositoryNotFoundError` and the like keep working around our calls.
"""

from huggingface_hub import constants, errors, get_token

from ..errors import exception_chain as chain
from ..errors import one_line

TOKEN_HELP = "create one at https://huggingface.co/settings/tokens, then set HF_TOKEN or run `hf auth login`"
# Why a token is never an option value, and how to pass it instead.
TOKEN_ADVICE = (
    "a token on the command line is printed by launchers when a run fails (accelerate launch shows the whole "
    "command), and kept in shell history and process lists. Set HF_TOKEN in the environment, point HF_TOKEN_PATH at "
    "a file holding it, or run `hf auth login` once; ddpm_hub reads it from there. If you typed a real token, treat "
    "it as exposed and rotate it at https://huggingface.co/settings/tokens"
)


def status_of(error: BaseException) -> int | None:
    return getattr(getattr(error, "response", None), "status_code", None)


def token_phrase(token: str | bool | None) -> str:
    """Which token was sent, in words (never the token itself)."""
    if token is False:
        return "no token was sent (token=False)"
    if token is None:
        if get_token() is None:
            return "no token was sent (HF_TOKEN unset, not logged in)"
        return "the token in use (HF_TOKEN or the login cache) has no access to it"
    return "the token given has no access to it"


def describe(
    error: BaseException,
    repo_id: str,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | None = None,
    local_files_only: bool = False,
) -> str | None:
    """One message for a Hub failure about `repo_id`: what happened and what to do. None if it is not one."""
    revision = revision or "main"
    endpoint = constants.ENDPOINT
    if isinstance(error, errors.HFValidationError):
        return f"{repo_id!r} is neither a local folder nor a valid Hub repo id ('namespace/name'): {error}"
    if isinstance(error, errors.OfflineModeIsEnabled):
        return f"{repo_id}: HF_HUB_OFFLINE=1 disables the network; unset it to reach the Hub."
    if isinstance(error, errors.GatedRepoError):
        return (
            f"{repo_id} is a gated repo: accept its conditions at {endpoint}/{repo_id} and use a token of an account "
            "with access (HF_TOKEN or `hf auth login`)."
        )
    if isinstance(error, errors.RepositoryNotFoundError):
        return (
            f"Repository {repo_id!r} not found at {endpoint}: it does not exist, or it is private and "
            f"{token_phrase(token)}. Check the repo id; for a private repo use a token that can read it (HF_TOKEN or "
            "`hf auth login`). There is no local folder of that name either."
        )
    if isinstance(error, errors.RevisionNotFoundError):
        return (
            f"{repo_id} has no revision {revision!r} (branch, tag or commit) at {endpoint}. "
            f"List its branches and tags with huggingface_hub.HfApi().list_repo_refs({repo_id!r})."
        )
    if isinstance(error, errors.LocalEntryNotFoundError):
        cache = cache_dir or constants.HF_HUB_CACHE
        if constants.HF_HUB_OFFLINE or local_files_only:
            return (
                f"{repo_id} (revision {revision!r}) is not in the Hub cache {cache}, and downloads are disabled "
                "(HF_HUB_OFFLINE=1 or local_files_only=True). Load it once with network access, or point "
                "cache_dir/HF_HOME at the cache that has it."
            )
        return (
            f"Could not download {repo_id} (revision {revision!r}) from {endpoint}, and it is not in the Hub cache "
            f"{cache}: the Hub could not be reached or failed ({brief(error)}). Check the network and HF_ENDPOINT, "
            "then try again."
        )
    return None


def http_cause(error: BaseException, repo_id: str, token: str | bool | None = None) -> str | None:
    """The cause of an HTTP failure anywhere in the exception chain, as a clause; None if there is none."""
    http = next((e for e in chain(error) if isinstance(e, errors.HfHubHTTPError)), None)
    if http is None:
        return None
    status = status_of(http)
    if status == 401:
        return (
            f"the Hub at {constants.ENDPOINT} rejected the token (401: invalid or expired; {token_phrase(token)}); "
            f"{TOKEN_HELP}"
        )
    if status == 403:
        return f"the token may not do this on {repo_id} (403: {brief(http)}); use a token of its owner"
    return f"the Hub answered {brief(http)}"


def same_type(error: Exception, message: str) -> Exception:
    """`error`'s class with `message`, so that callers can still catch huggingface_hub's types."""
    try:
        if isinstance(error, errors.HfHubHTTPError):
            return type(error)(message, response=error.response, server_message=error.server_message)
        return type(error)(message)
    except Exception:  # noqa: BLE001 - an exception class with another signature: keep the message
        return OSError(message)


def brief(error: BaseException) -> str:
    """One line: the status and the server's message, or the exception's type and first line."""
    status, server_message = status_of(error), getattr(error, "server_message", None)
    if status is not None:
        return f"HTTP {status}" + (f": {server_message}" if server_message else "")
    return one_line(error)


def endpoint() -> str:
    return constants.ENDPOINT
