"""Loading and saving pipeline folders with the installed ddpm_hub: the library side of `DDPMHubPipeline`.

Everything follows from the components a folder's `model_index.json` names (`[library, class]` entries: the UNet, the
scheduler, and any other diffusers or transformers component such as a text encoder and its tokenizer):

- `load_components`: each component of a local folder or a Hub repo with the installed classes (no code from the
  folder or repo is run), safetensors weights only unless the caller trusts pickles; the pipeline settings
  (`id2label`, ...) the conditioning kinds declare;
- `load_patterns`: what is downloaded from a repo: the index, and each component's folder without code or pickles;
- `save_with_code`: the code files that let plain diffusers load a saved folder with `trust_remote_code=True`:
  the pipeline's own file, the task pipelines of its family, what they import, and custom components' modules;
- `read_model_index`, `component_class`: what a `model_index.json` names, checked, with errors that name the file.
"""

import ast
import contextlib
import inspect
import json
import os
import shutil
from pathlib import Path

import diffusers
from diffusers import DDPMScheduler
from diffusers.models.modeling_utils import ModelMixin
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from ..errors import DDPMHubError, InputNotFoundError, UsageError
from ..run_folder import MODEL_INDEX, PICKLE_WEIGHT_SUFFIXES, read_json
from ..shipped.conditioning_ddpm_hub import KINDS, EmbeddedGuidance
from ..shipped.prior_ddpm_hub import UNCLIP_SETTINGS
from ..shipped.scheduling_ddpm_hub import DDPMHubScheduler
from . import hub_errors
from .weights import check_finite_weights, check_variant, check_weights  # noqa: F401 - re-exported

# Scheduler classes loadable by name without trust_remote_code; diffusers' own are found in diffusers.
SCHEDULER_CLASSES: dict[str, type] = {"DDPMHubScheduler": DDPMHubScheduler}
# Libraries whose classes diffusers imports by name; anything else is shipped as a code file next to its config.
LIBRARY_COMPONENTS = ("diffusers", "transformers")
# The denoising networks a DDPM pipeline may have: pixel-space UNets, with or without cross-attention.
UNET_CLASSES = ("UNet2DModel", "UNet2DConditionModel")
DOWNLOAD_KWARGS = ("revision", "token", "cache_dir", "local_files_only")
# Pipeline settings saved in model_index.json besides the components, as the conditioning kinds declare them.
# model_index.json entries that are settings, not components: the kinds' and a distilled student's calls
PIPELINE_SETTINGS = (
    *(name for kind in KINDS for name in kind.setting_names),
    *EmbeddedGuidance.setting_names,
    "default_num_inference_steps",
    *UNCLIP_SETTINGS,  # a text-to-image unCLIP folder's call defaults
)
NO_CODE = ["*.py"]  # shipped code is never downloaded: the installed classes are used
SCHEDULER_CONFIG_NAME = "scheduler_config.json"
PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"  # an image processor's (a decoder's CLIP feature_extractor)
# A tokenizer's vocabulary: a fast tokenizer's file, or a slow one's (sentencepiece, BPE, WordPiece).
TOKENIZER_VOCABULARIES = (
    "tokenizer.json",
    "spiece.model",
    "tokenizer.model",
    "sentencepiece.bpe.model",
    "vocab.json",
    "vocab.txt",
)


# ----------------------------------------------------------------------------------------------------------------
# Loading


def load_components(
    name_or_path: str | os.PathLike,
    pipeline_class: type,
    torch_dtype=None,
    allow_pickle: bool = False,
    choose=None,
    variant: str | None = None,
    **kwargs,
) -> tuple[type, dict]:
    """
    `(class, components)`: the components of a pipeline folder or Hub repo for `pipeline_class` (which declares
    them: the arguments of its `__init__`), by name, and its settings; a component given in `kwargs` (e.g.
    `unet=...`) is used instead of loading it. `choose(index)`, if given, picks the class from the model index
    (a base class loading a folder of a subclass). A missing repo, a private repo without access, a missing revision
    or an uncached repo offline raise huggingface_hub's exception types with a message naming the repo, the cause
    and the fix. `variant` reads weights saved as `<name>.<variant>.safetensors` (diffusers' variants, e.g. fp16).
    """
    download_kwargs = {key: kwargs.pop(key) for key in DOWNLOAD_KWARGS if key in kwargs}
    declared = inspect.signature(pipeline_class.__init__).parameters
    unknown = sorted(name for name in kwargs if name not in declared or name in PIPELINE_SETTINGS)
    if unknown:
        raise TypeError(f"{pipeline_class.__name__}.from_pretrained got unexpected arguments: {', '.join(unknown)}.")
    folder = pipeline_folder(name_or_path, allow_pickle, **download_kwargs)
    index = read_model_index(folder, name_or_path)
    pipeline_class = choose(index) if choose is not None else pipeline_class
    declared = inspect.signature(pipeline_class.__init__).parameters
    loaded = {}
    for name, entry in components_of(index).items():
        if name not in declared:  # a component of a larger pipeline (an unCLIP folder's prior, for its decoder)
            continue
        if name in kwargs:
            loaded[name] = kwargs[name]
            continue
        loaded[name] = load_component(
            folder, name, entry, name_or_path, torch_dtype, allow_pickle, download_kwargs, variant
        )
    if loaded.get("tokenizer") is not None and loaded.get("text_encoder") is not None:
        check_vocabulary(
            loaded["tokenizer"], loaded["text_encoder"], f"{name_or_path}: its tokenizer/ and text_encoder/"
        )
    settings = {key: index[key] for key in PIPELINE_SETTINGS if key in index and key in declared}
    return pipeline_class, {**loaded, **settings}


def load_component(
    folder: Path, name: str, entry: list, source, torch_dtype, allow_pickle: bool, download_kwargs, variant=None
):
    """One component from `folder/name` with the installed class its `[library, class]` entry names (None: absent)."""
    if entry[0] is None:  # an optional component the pipeline was saved without ([null, null])
        return None
    klass = component_class(entry, Path(folder, MODEL_INDEX))
    path = Path(folder, name)
    check_component_folder(path, name, entry, klass, source)
    if issubclass(klass, SchedulerMixin):
        return upgrade_ddpm_scheduler(klass.from_pretrained(folder, subfolder=name))
    arguments = (klass, folder, name, path, torch_dtype, allow_pickle, source, download_kwargs, variant)
    if issubclass(klass, ModelMixin) or not _has_weights(klass):
        return _load_model_or_tokenizer(*arguments)
    with quiet_transformers():
        return _load_model_or_tokenizer(*arguments)


def _load_model_or_tokenizer(klass, folder, name, path, torch_dtype, allow_pickle, source, download_kwargs, variant):
    if _has_weights(klass):
        read_json(path / "config.json", f"the {name} configuration")  # a broken file is named, not a traceback
        check_weights(folder, name, source, allow_pickle, download_kwargs)
        check_variant(path, name, source, variant)
        check_finite_weights(folder, [Path(name, file.name).as_posix() for file in sorted(path.glob("*.safetensors"))])
        use_safetensors = None if allow_pickle else True
        given = {"dtype": torch_dtype, "variant": variant}
        extra = {key: value for key, value in given.items() if value is not None}
        if issubclass(klass, ModelMixin):
            return klass.from_pretrained(folder, subfolder=name, use_safetensors=use_safetensors, **extra)
        return klass.from_pretrained(path, use_safetensors=use_safetensors, **extra)
    return klass.from_pretrained(path)  # a tokenizer: vocabulary files, no weights


def check_component_folder(path: Path, name: str, entry: list, klass: type, source) -> None:
    """
    The folder of component `name` holds what its class loads from (a scheduler's or a model's config, a tokenizer's
    vocabulary): a missing or incomplete folder is refused by name here, never passed on to a library that would
    take the path for a Hub repo id.
    """
    named = f"{name}/ ({entry[0]}.{entry[1]}, named in {MODEL_INDEX})"
    if not path.is_dir():
        raise InputNotFoundError(f"{source} has no {named}: the folder is missing. Save the pipeline again.")
    if issubclass(klass, SchedulerMixin) or _has_weights(klass):
        expected = [SCHEDULER_CONFIG_NAME if issubclass(klass, SchedulerMixin) else "config.json"]
    elif _is_image_processor(klass):  # a decoder's feature_extractor (CLIPImageProcessor)
        expected = [PREPROCESSOR_CONFIG_NAME]
    else:
        expected = tokenizer_vocabularies(klass)
    if not any(Path(path, file).is_file() for file in expected):
        found = sorted(p.name for p in path.iterdir()) or ["nothing"]
        raise InputNotFoundError(
            f"{source} has an incomplete {named}: expected {' or '.join(expected)}, found {', '.join(found)}. Save "
            "the pipeline again."
        )


def tokenizer_vocabularies(klass: type | None = None) -> list[str]:
    """
    The files one of which a tokenizer folder must hold (`tokenizer.json`, or a slow tokenizer's vocabulary): those
    `klass` names, or those of any tokenizer transformers reads. A folder with none of them loads as an empty
    vocabulary in which every word is unknown.
    """
    names = getattr(klass, "vocab_files_names", None) or {}
    files = [file for key, file in names.items() if key != "merges_file"] or list(TOKENIZER_VOCABULARIES)
    return list(dict.fromkeys(["tokenizer.json", *files]))


def check_vocabulary(tokenizer, encoder, where: str) -> None:
    """Every id the tokenizer gives (special tokens included) is a row of the encoder's token embedding."""
    rows = getattr(encoder.config, "vocab_size", None)
    if rows is not None and len(tokenizer) > rows:
        raise UsageError(
            f"{where}: the tokenizer has {len(tokenizer)} tokens but the text encoder embeds {rows} (vocab_size): "
            "ids past it would fail inside the encoder. Give a tokenizer and an encoder made for each other."
        )


@contextlib.contextmanager
def quiet_transformers():
    """transformers 5 draws a progress bar for every model it loads or saves, however small: not while loading."""
    from transformers.utils import logging as transformers_logging

    enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            transformers_logging.enable_progress_bar()


def components_of(index: dict) -> dict[str, list]:
    """The `[library, class]` entries of a model index, by component name (settings and `_` keys left out)."""
    return {name: entry for name, entry in index.items() if not name.startswith("_") and isinstance(entry, list)}


def _is_image_processor(klass: type) -> bool:
    import transformers

    return issubclass(klass, transformers.ImageProcessingMixin)


def _has_weights(klass: type) -> bool:
    import transformers

    return issubclass(klass, (ModelMixin, transformers.PreTrainedModel))


def load_patterns(index: dict, allow_pickle: bool = False) -> tuple[list[str], list[str]]:
    """(allow, ignore) patterns of a repo download: the index and every component's folder, no code, no pickles."""
    allow = [MODEL_INDEX] + [f"{name}/*" for name, entry in components_of(index).items() if entry[0] is not None]
    ignore = NO_CODE + ([] if allow_pickle else [f"*{suffix}" for suffix in PICKLE_WEIGHT_SUFFIXES])
    return allow, ignore


def pipeline_folder(
    name_or_path: str | os.PathLike, allow_pickle: bool = False, config_only: bool = False, **download_kwargs
) -> Path:
    """
    A local folder as is; otherwise a snapshot of the Hub repo with only the files loading needs (with
    `config_only`: the index and the components' JSON files).

    What a cached copy promises: when the Hub can be reached it decides. If it answers that the repo does not exist,
    or that this token may not read it (401/403/404), loading fails even when an earlier download is in the cache
    (huggingface_hub alone would return the cached copy). The cache is used offline (HF_HUB_OFFLINE=1,
    `local_files_only=True`) and when the Hub cannot be reached at all.
    """
    if os.path.isdir(name_or_path):
        return Path(name_or_path)
    from huggingface_hub import constants, hf_hub_download, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo_id = str(name_or_path)
    try:
        if not (constants.HF_HUB_OFFLINE or download_kwargs.get("local_files_only")):
            _check_access(repo_id, download_kwargs)
        try:
            index_file = hf_hub_download(repo_id, MODEL_INDEX, **download_kwargs)
        except EntryNotFoundError as error:
            if isinstance(error, LocalEntryNotFoundError):  # offline and not cached: worded below
                raise
            raise InputNotFoundError(
                f"{repo_id} has no {MODEL_INDEX}; it is not a diffusers pipeline folder or repo."
            ) from None
        index = read_model_index(Path(index_file).parent, repo_id)
        allow, ignore = load_patterns(index, allow_pickle)
        if config_only:
            allow = [MODEL_INDEX] + [f"{name}/*.json" for name, entry in components_of(index).items() if entry[0]]
        return Path(snapshot_download(repo_id, allow_patterns=allow, ignore_patterns=ignore, **download_kwargs))
    except DDPMHubError:
        raise
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


def read_model_index(folder: str | os.PathLike, source=None) -> dict:
    """
    The folder's `model_index.json`, checked: every component a `[library, class]` pair, a `unet` that is a pixel
    UNet (`UNet2DModel` or `UNet2DConditionModel`) and a `scheduler`.
    """
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
    if not unet_entry or unet_entry[1] not in UNET_CLASSES or not scheduler_entry or not scheduler_entry[1]:
        components = {k: v for k, v in index.items() if not k.startswith("_")}
        raise UsageError(
            f"{source} is not a DDPM pipeline: expected a 'unet' ({' or '.join(UNET_CLASSES)}) and a 'scheduler' in "
            f"{MODEL_INDEX}, found {components}."
        )
    return index


def component_class(entry: list, where: str | os.PathLike, role: str = "component") -> type:
    """
    The installed class a `[library, class]` entry names: ddpm_hub's scheduler, a diffusers model or scheduler, or a
    transformers model or tokenizer. Nothing else is imported by name.
    """
    library, name = entry
    if name in SCHEDULER_CLASSES:
        return SCHEDULER_CLASSES[name]
    found, allowed = None, ()
    if library == "diffusers":
        found, allowed = getattr(diffusers, name, None), (SchedulerMixin, ModelMixin)
    elif library == "transformers":
        import transformers

        found = getattr(transformers, name, None)
        allowed = (
            transformers.PreTrainedModel,
            transformers.PreTrainedTokenizerBase,
            transformers.ImageProcessingMixin,
        )
    if not (isinstance(found, type) and issubclass(found, allowed)):
        raise UsageError(
            f"{where}: the {role} is {library}.{name}, which is neither a diffusers model or scheduler, a "
            f"transformers model, tokenizer or image processor, nor a class installed here "
            f"({', '.join(SCHEDULER_CLASSES)}). Install ddpm_hub, or load with DiffusionPipeline.from_pretrained(..., "
            "trust_remote_code=True) to run the shipped code."
        )
    return found


def scheduler_class(entry: list, where: str | os.PathLike) -> type:
    """The installed scheduler class a `[library, class]` entry names."""
    found = component_class(entry, where, role="scheduler")
    if not issubclass(found, SchedulerMixin):
        raise UsageError(f"{where}: the scheduler is {entry[0]}.{entry[1]}, which is not a scheduler.")
    return found


def upgrade_ddpm_scheduler(scheduler: SchedulerMixin) -> SchedulerMixin:
    """diffusers' DDPMScheduler becomes DDPMHubScheduler (same chain, bit for bit; adds the likelihood helpers)."""
    if type(scheduler) is not DDPMScheduler:
        return scheduler
    try:
        return DDPMHubScheduler.from_config(scheduler.config)
    except ValueError:  # a configuration ours refuses on purpose (docs/from-diffusers.md): keep diffusers' class
        return scheduler


# ----------------------------------------------------------------------------------------------------------------
# Saving


def save_with_code(pipeline, folder: str | os.PathLike) -> None:
    """
    After diffusers' `save_pretrained`: copy the pipeline's code files (`code_files`) and every non-library
    component's module into the folder, and name them in `model_index.json`, so that plain diffusers can load it
    with trust_remote_code.
    """
    folder = Path(folder)
    index_path = folder / MODEL_INDEX
    index = json.loads(index_path.read_text())
    for source in code_files(type(pipeline)):
        shutil.copyfile(source, folder / source.name)
    index["_class_name"] = [shipped_source(type(pipeline)).stem, type(pipeline).__name__]
    for name, entry in components_of(index).items():
        if entry[0] == "transformers":
            index[name] = ["transformers", portable_transformers_name(entry[1])]
        if entry[0] in LIBRARY_COMPONENTS or entry[0] is None:
            continue
        source = Path(inspect.getsourcefile(type(getattr(pipeline, name))))
        shutil.copyfile(source, folder / name / source.name)
        index[name] = [source.stem, entry[1]]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def portable_transformers_name(name: str) -> str:
    """
    transformers 5 names its fast tokenizers `TokenizersBackend`, of which `PreTrainedTokenizerFast` is an alias that
    transformers 4 knows too, and without torchvision its image processors `CLIPImageProcessorPil`, which
    `CLIPImageProcessor` then names: the index names the alias, so that either version loads the repo.
    """
    import transformers

    for alias in ("PreTrainedTokenizerFast", name.removesuffix("Pil")):
        if alias != name and getattr(transformers, alias, None) is getattr(transformers, name, False):
            return alias
    return name


def code_files(pipeline_class: type) -> list[Path]:
    """
    The shipped files a folder of `pipeline_class` needs at its root: its own `pipeline_*.py`, those of the task
    pipelines of its family (`task_pipelines`: they load from the same folder), and every file they import
    relatively (the base pipeline, `conditioning_ddpm_hub.py`), as diffusers' dynamic-module loader follows them.
    """
    family = [pipeline_class, *getattr(pipeline_class, "task_pipelines", ())]
    return _import_closure([shipped_source(klass) for klass in family])


SHIPPED_DIR = Path(__file__).resolve().parent.parent / "shipped"  # ddpm_hub.shipped: the files repos carry
SHIPPED_NAME = "_ddpm_hub"  # shipped files are named so: pipeline_ddpm_hub*.py, conditioning_ddpm_hub.py, ...


def installed_code_file(name: str) -> Path | None:
    """This package's copy of a shipped code file (`pipeline_ddpm_hub_inpaint.py`), or None if it has none."""
    path = SHIPPED_DIR / name
    return path if SHIPPED_NAME in path.stem and path.suffix == ".py" and path.is_file() else None


def code_files_of(index: dict) -> list[Path]:
    """The installed code files a model index's pipeline module needs: that module and what it imports."""
    class_name = index.get("_class_name")
    module = class_name[0] if isinstance(class_name, list) and class_name[0] else "pipeline_ddpm_hub"
    first = installed_code_file(f"{module}.py")
    if first is None:
        raise UsageError(f"{MODEL_INDEX} names the pipeline module {module}.py, which is not a file of ddpm_hub.")
    return _import_closure([first])


def _import_closure(files: list[Path]) -> list[Path]:
    """`files` and every file they import relatively, transitively (as diffusers' dynamic-module loader follows)."""
    files = list(dict.fromkeys(files))
    for path in files:  # grows while it is walked
        for name in relative_imports(path):
            found = path.parent / f"{name}.py"
            if found not in files:
                files.append(found)
    return files


def relative_imports(path: Path) -> list[str]:
    """The modules a file imports with `from .name import ...`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1]


def shipped_source(pipeline_class: type) -> Path:
    """The self-contained file a pipeline class's sampling code lives in (`pipeline_ddpm_hub*.py`)."""
    for klass in pipeline_class.__mro__:
        source = inspect.getsourcefile(klass)
        if source and Path(source).name.startswith("pipeline_"):
            return Path(source)
    raise TypeError(f"{pipeline_class.__name__} has no shipped pipeline_*.py module in its bases.")
