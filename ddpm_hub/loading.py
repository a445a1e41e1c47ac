"""Loading and saving pipeline folders with the installed ddpm_hub: the library side of `DDPMHubPipeline`.

- `load_components`: the UNet and the scheduler of a local folder or a Hub repo, in ddpm_hub's layout or in diffusers'
  `DDPMPipeline` layout, with the installed classes (no code from the folder or repo is run); safetensors only unless
  the caller trusts pickles.
- `save_with_code`: the code files that let plain diffusers load a saved folder with `trust_remote_code=True`.
- `read_model_index`, `scheduler_class`: what a `model_index.json` names, checked, with errors that name the file.
"""

import inspect
import json
import os
import shutil
from pathlib import Path

import diffusers
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from . import hub_errors
from .errors import InputNotFoundError, UsageError
from .run_folder import MODEL_INDEX, PICKLE_WEIGHT_SUFFIXES, UNET_CONFIG, read_json, unet_weight_files
from .scheduling_ddpm_hub import DDPMHubScheduler

# Scheduler classes loadable by name without trust_remote_code; diffusers' own are found in diffusers.
SCHEDULER_CLASSES: dict[str, type] = {"DDPMHubScheduler": DDPMHubScheduler}
# Libraries whose classes diffusers imports by name; anything else is shipped as a code file next to its config.
LIBRARY_COMPONENTS = ("diffusers", "transformers")
# Only these files are downloaded: no shipped code (the installed classes are used), no pickles unless allowed.
LOAD_PATTERNS = [MODEL_INDEX, "scheduler/*.json", "unet/*.json", "unet/*.safetensors"]
PICKLE_PATTERNS = ["unet/*.bin"]
DOWNLOAD_KWARGS = ("revision", "token", "cache_dir", "local_files_only")
# Pipeline settings saved in model_index.json besides the components (diffusers' DiTPipeline keeps id2label there).
PIPELINE_SETTINGS = ("id2label", "null_class_label")


# ----------------------------------------------------------------------------------------------------------------
# Loading


def load_components(
    name_or_path: str | os.PathLike,
    unet: UNet2DModel | None = None,
    scheduler: SchedulerMixin | None = None,
    torch_dtype=None,
    allow_pickle: bool = False,
    **download_kwargs,
) -> dict:
    """
    `{"unet": ..., "scheduler": ...}` of a pipeline folder or Hub repo; a component given is used instead of loading
    it. A missing repo, a private repo without access, a missing revision or an uncached repo offline raise
    huggingface_hub's exception types with a message naming the repo, the cause and the fix.
    """
    unknown = sorted(set(download_kwargs) - set(DOWNLOAD_KWARGS))
    if unknown:
        raise TypeError(f"DDPMHubPipeline.from_pretrained got unexpected arguments: {', '.join(unknown)}.")
    folder = pipeline_folder(name_or_path, allow_pickle, **download_kwargs)
    index = read_model_index(folder, name_or_path)
    if unet is None:
        read_json(Path(folder, UNET_CONFIG), "the UNet configuration")  # a broken file is named, not a traceback
        check_unet_weights(folder, name_or_path, allow_pickle, download_kwargs)
        unet = UNet2DModel.from_pretrained(
            folder, subfolder="unet", torch_dtype=torch_dtype, use_safetensors=None if allow_pickle else True
        )
    if scheduler is None:
        scheduler_type = scheduler_class(index["scheduler"], Path(folder, MODEL_INDEX))
        scheduler = upgrade_ddpm_scheduler(scheduler_type.from_pretrained(folder, subfolder="scheduler"))
    labels = {key: index.get(key) for key in PIPELINE_SETTINGS}  # class names and the null label, if any
    return {"unet": unet, "scheduler": scheduler, **labels}


def pipeline_folder(name_or_path: str | os.PathLike, allow_pickle: bool = False, **download_kwargs) -> Path:
    """
    A local folder as is; otherwise a snapshot of the Hub repo with only the files loading needs.

    What a cached copy promises: when the Hub can be reached it decides. If it answers that the repo does not exist,
    or that this token may not read it (401/403/404), loading fails even when an earlier download is in the cache
    (huggingface_hub alone would return the cached copy). The cache is used offline (HF_HUB_OFFLINE=1,
    `local_files_only=True`) and when the Hub cannot be reached at all.
    """
    if os.path.isdir(name_or_path):
        return Path(name_or_path)
    from huggingface_hub import constants, snapshot_download

    repo_id = str(name_or_path)
    patterns = LOAD_PATTERNS + (PICKLE_PATTERNS if allow_pickle else [])
    try:
        if not (constants.HF_HUB_OFFLINE or download_kwargs.get("local_files_only")):
            _check_access(repo_id, download_kwargs)
        return Path(snapshot_download(repo_id, allow_patterns=patterns, **download_kwargs))
    except Exception as error:
        message = hub_errors.describe(error, repo_id, **download_kwargs)
        cause = None if message else hub_errors.http_cause(error, repo_id, download_kwargs.get("token"))
        if cause is not None:
            revision = download_kwargs.get("revision") or "main"
            message = f"Could not load {repo_id} (revision {revision!r}) from {hub_errors.endpoint()}: {cause}."
        if message is None:
            raise
        raise hub_errors.same_type(error, message) from error


def _check_access(repo_id: str, download_kwargs: dict) -> None:
    """Ask the Hub whether this token may read the repo; a refusal raises, an unreachable Hub does not."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        HfApi().repo_info(repo_id, revision=download_kwargs.get("revision"), token=download_kwargs.get("token"))
    except HfHubHTTPError as error:
        if hub_errors.status_of(error) in (401, 403, 404) or isinstance(
            error, hub_errors.errors.RevisionNotFoundError
        ):
            raise
    except Exception:  # noqa: BLE001 - unreachable: snapshot_download decides, from the cache if it has it
        pass


def check_unet_weights(folder: Path, source, allow_pickle: bool, download_kwargs: dict) -> None:
    """Safetensors UNet weights, or pickle weights the caller opted in to; otherwise say what exists and what to do."""
    if any(folder.glob("unet/*.safetensors")):
        return
    files = unet_weight_files(folder) if os.path.isdir(source) else _remote_files(str(source), download_kwargs)
    pickles = sorted(f for f in files if f.startswith("unet/") and f.endswith(PICKLE_WEIGHT_SUFFIXES))
    if not pickles:
        raise InputNotFoundError(
            f"{source} has no UNet weights: expected unet/diffusion_pytorch_model.safetensors next to "
            "unet/config.json."
        )
    if not allow_pickle:
        raise UsageError(
            f"{source} has only pickle weights ({', '.join(pickles)}), no safetensors. Unpickling can run arbitrary "
            "code, so they are not loaded by default. If you trust this source, pass allow_pickle=True to "
            "from_pretrained (then save_pretrained writes safetensors)."
        )
    if not any(f.endswith(".bin") for f in pickles):  # allow_pickle: diffusers reads unet/*.bin only
        raise InputNotFoundError(
            f"{source} has UNet weights only as {', '.join(pickles)}; diffusers loads "
            "unet/diffusion_pytorch_model.safetensors or unet/diffusion_pytorch_model.bin."
        )


def _remote_files(repo_id: str, download_kwargs: dict) -> list[str]:
    """The repo's file list, or [] where it cannot be had (offline)."""
    from huggingface_hub import HfApi

    try:
        return HfApi().list_repo_files(
            repo_id, revision=download_kwargs.get("revision"), token=download_kwargs.get("token")
        )
    except Exception:  # noqa: BLE001 - only used to word an error that is raised anyway
        return []


def read_model_index(folder: str | os.PathLike, source=None) -> dict:
    """The folder's `model_index.json`, checked to name a UNet2DModel `unet` and a `scheduler` ([library, class])."""
    source = folder if source is None else source
    path = Path(folder, MODEL_INDEX)
    index = read_json(path, "the pipeline's model index")
    if index is None:
        raise InputNotFoundError(f"{source} has no {MODEL_INDEX}; it is not a diffusers pipeline folder or repo.")
    for name, entry in index.items():
        if (
            not name.startswith("_")
            and name not in PIPELINE_SETTINGS
            and not (isinstance(entry, list) and len(entry) == 2)
        ):
            raise UsageError(
                f'{path}: the entry {name!r} must be a [library, class] pair such as ["diffusers", '
                f'"UNet2DModel"], got {entry!r}.'
            )
    unet_entry, scheduler_entry = index.get("unet"), index.get("scheduler")
    if not unet_entry or unet_entry[1] != "UNet2DModel" or not scheduler_entry or not scheduler_entry[1]:
        components = {k: v for k, v in index.items() if not k.startswith("_")}
        raise UsageError(
            f"{source} is not a DDPM pipeline: expected a UNet2DModel 'unet' and a 'scheduler' in {MODEL_INDEX}, "
            f"found {components}."
        )
    return index


def scheduler_class(entry: list, where: str | os.PathLike) -> type:
    """The installed class a `[library, class]` scheduler entry names: ddpm_hub's, or a diffusers scheduler."""
    library, name = entry
    if name in SCHEDULER_CLASSES:
        return SCHEDULER_CLASSES[name]
    found = getattr(diffusers, name, None) if library == "diffusers" else None
    if not (isinstance(found, type) and issubclass(found, SchedulerMixin)):
        raise UsageError(
            f"{where}: the scheduler is {library}.{name}, which is neither a diffusers scheduler nor one installed "
            f"here ({', '.join(SCHEDULER_CLASSES)}). Install ddpm_hub, or load with "
            "DiffusionPipeline.from_pretrained(..., trust_remote_code=True) to run the shipped code."
        )
    return found


def upgrade_ddpm_scheduler(scheduler: SchedulerMixin) -> SchedulerMixin:
    """diffusers' DDPMScheduler becomes DDPMHubScheduler (same chain, bit for bit; adds the likelihood helpers)."""
    if type(scheduler) is not DDPMScheduler:
        return scheduler
    try:
        return DDPMHubScheduler.from_config(scheduler.config)
    except ValueError:  # a variance type only diffusers has (fixed_small_log, learned): keep its class
        return scheduler


# ----------------------------------------------------------------------------------------------------------------
# Saving


def save_with_code(pipeline, folder: str | os.PathLike) -> None:
    """
    After diffusers' `save_pretrained`: copy the shipped pipeline file and every non-library component's module into
    the folder, and name them in `model_index.json`, so that plain diffusers can load it with trust_remote_code.
    """
    folder = Path(folder)
    index_path = folder / MODEL_INDEX
    index = json.loads(index_path.read_text())
    pipeline_file = shipped_source(type(pipeline))
    for task_file in sorted(pipeline_file.parent.glob("pipeline_ddpm_hub*.py")):  # every task reads every folder
        shutil.copyfile(task_file, folder / task_file.name)
    index["_class_name"] = [pipeline_file.stem, type(pipeline).__name__]
    for name, entry in list(index.items()):
        if name.startswith("_") or name in PIPELINE_SETTINGS or entry[0] in LIBRARY_COMPONENTS or entry[0] is None:
            continue
        source = Path(inspect.getsourcefile(type(getattr(pipeline, name))))
        shutil.copyfile(source, folder / name / source.name)
        index[name] = [source.stem, entry[1]]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def shipped_source(pipeline_class: type) -> Path:
    """The self-contained file a pipeline class's sampling code lives in (`pipeline_ddpm_hub*.py`)."""
    for klass in pipeline_class.__mro__:
        source = inspect.getsourcefile(klass)
        if source and Path(source).name.startswith("pipeline_"):
            return Path(source)
    raise TypeError(f"{pipeline_class.__name__} has no shipped pipeline_*.py module in its bases.")
