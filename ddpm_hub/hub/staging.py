"""What a publish uploads: the files chosen from the pipeline folder, staged with the model card, without secrets.

`files_to_upload` checks the folder and picks the files (`upload_patterns`: the index, the components' configs and
safetensors weights, the run's records; never checkpoints, logs or pickles); `stage` copies them into a temporary
folder with the installed package's code files and the rendered card, the options scrubbed of secrets and every local
path made public (`ddpm_hub.public`); `check_no_token` is the last guard before the commit.
"""

import fnmatch
import json
import logging
import re
import shutil
from pathlib import Path

from ..errors import InputNotFoundError, UsageError
from ..loading import components
from ..loading.components import LIBRARY_COMPONENTS, components_of, read_model_index
from ..public import PublicPaths, is_local_path
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
from .retries import PublishError

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
# Options whose names say they hold a secret, and strings shaped like a Hugging Face token.
SECRET_KEY = re.compile(r"token|secret|password|passwd|api_?key|credential", re.IGNORECASE)
TOKEN_LIKE = re.compile(r"^hf_[A-Za-z0-9]{20,}$")


# ----------------------------------------------------------------------------------------------------------------
# The files of the commit


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
    missing = [path for path in named_code_files(index) if not (folder / path).is_file()]
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


def named_code_files(index: dict) -> list[str]:
    """
    The code files a folder's `model_index.json` names itself: the pipeline's module and custom components' modules
    (what it imports may differ from release to release: a folder saved by an older ddpm_hub has its own set, and
    what goes up is this release's, `code_files`).
    """
    class_name = index.get("_class_name")
    named = [f"{class_name[0]}.py"] if isinstance(class_name, list) and class_name[0] else []
    custom = [
        (name, entry[0]) for name, entry in components_of(index).items() if entry[0] not in (None, *LIBRARY_COMPONENTS)
    ]
    return named + [f"{name}/{module}.py" for name, module in custom]


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
    the run folder or cut to its name (`ddpm_hub.public.PublicPaths`), so that nothing published names this
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
