"""One contract for the folders ddpm_hub reads and writes: the file names, their schemas, and what a folder is.

A *pipeline configuration* (`pipelines/<name>/`) is a pipeline folder without weights; a *trained folder* has UNet
weights too (safetensors, or pickles that loading refuses unless told to trust them). A training run's `output_dir`
is a trained folder with the run's record next to the weights:

    model_index.json unet/ scheduler/ *.py   the pipeline (save_pretrained)
    samples.png                              a grid sampled from it                    (training, publishing)
    guidance.png                             a conditional model: classes x guidance   (training, model card)
    class_accuracy.md / .json                samples classified by label and w         (eval --class_accuracy, card)
    text_accuracy.md / .json                 digit pairs read as the prompt asks, by w (eval --text_accuracy, card)
    sr_quality.md / .json                    super-resolution against bicubic on unseen photos (eval --sr_quality)
    training_options.json                    the resolved options (a valid --config)    (training, model card)
    training_summary.json                    `TrainingSummary`                          (training, model card)
    metrics.json                             `Metric` entries by key: bpd, fid, kid     (ddpm-hub eval, model card)
    bpd.json bits_per_timestep.png           the likelihood report                      (ddpm-hub eval --bpd)
    fid.json sweep.md sweep.json             sample quality                             (ddpm-hub eval --fid/--sweep)
    checkpoints/ logs/                       resumable state, tracker logs              (never published)
    .training.lock                           held by the run writing the folder         (training; never published)

Training, evaluation, the model card and publishing all take the names and the schemas from here.
"""

import contextlib
import errno
import json
import math
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .errors import UsageError

MODEL_INDEX = "model_index.json"
UNET_CONFIG = "unet/config.json"
SCHEDULER_CONFIG = "scheduler/scheduler_config.json"
SAMPLES_FILE = "samples.png"
GUIDANCE_FILE = "guidance.png"  # a conditional model: a row per class at guidance scales 0, 1, 2, 4
CLASS_ACCURACY_FILE = "class_accuracy.md"  # ddpm-hub eval --class_accuracy (ddpm_hub.evaluation.accuracy)
TEXT_ACCURACY_FILE = "text_accuracy.md"  # ddpm-hub eval --text_accuracy (ddpm_hub.evaluation.accuracy)
SR_QUALITY_FILE = "sr_quality.md"  # ddpm-hub eval --sr_quality (ddpm_hub.evaluation.sr_quality)
SR_QUALITY_JSON_FILE = "sr_quality.json"
OPTIONS_FILE = "training_options.json"
SUMMARY_FILE = "training_summary.json"
METRICS_FILE = "metrics.json"
BPD_FILE = "bpd.json"
BPD_PLOT_FILE = "bits_per_timestep.png"
FID_FILE = "fid.json"
SWEEP_FILE = "sweep.md"
SWEEP_JSON_FILE = "sweep.json"
CARD_FILE = "README.md"
CHECKPOINTS_DIR = "checkpoints"
LOCK_FILE = ".training.lock"  # locked (flock) by the run that writes the folder, for the whole run

SAFE_WEIGHT_SUFFIXES = (".safetensors",)
PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


# ----------------------------------------------------------------------------------------------------------------
# What a folder is


def weight_files(folder: str | os.PathLike, component: str = "unet") -> list[str]:
    """A component's weight files in a pipeline folder, any format, as `<component>/<name>` paths (sorted)."""
    path = Path(folder, component)
    if not path.is_dir():
        return []
    suffixes = SAFE_WEIGHT_SUFFIXES + PICKLE_WEIGHT_SUFFIXES
    return sorted(f"{component}/{p.name}" for p in path.iterdir() if p.is_file() and p.name.endswith(suffixes))


def is_pipeline_folder(folder: str | os.PathLike) -> bool:
    """A folder with a `model_index.json`: a configuration or a trained pipeline."""
    return Path(folder, MODEL_INDEX).is_file()


def check_writable_folder(folder: str | os.PathLike, option: str) -> None:
    """
    `folder` is a folder, or can be created, and a file can be written in it (a real write: root ignores modes):
    checked before any work, so that an output folder nobody can write to fails first, not after the work.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{option} {folder} is a file, not a folder; choose a folder (it is created if missing).")
    existing = next(parent for parent in (folder, *folder.parents) if parent.exists())
    if not existing.is_dir():
        raise UsageError(f"{option} {folder} cannot be created: {existing} is a file.")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise UsageError(f"{option} {folder} is not writable ({existing}: {error.strerror or error}).") from None


def folder_relation(folder: str | os.PathLike, other: str | os.PathLike) -> str | None:
    """How `folder` lies against `other` (both resolved, links followed): "is", "is inside", "contains", or None."""
    folder, other = Path(folder).resolve(), Path(other).resolve()
    if folder == other:
        return "is"
    if other in folder.parents:
        return "is inside"
    if folder in other.parents:
        return "contains"
    return None


def check_apart_from_sources(folder: str | os.PathLike, option: str, sources: dict[str, tuple[str, str]]) -> None:
    """
    An output folder is not a source of the run, nor inside one, nor around one: `sources` maps each option that
    names a local folder the run reads (`--pipeline`, `--train_data_dir`, ...) to `(folder, what writing there
    would do)`. Checked before any work: a run that writes where it reads overwrites its model or trains on its own
    output.
    """
    for source_option, (source, harm) in sources.items():
        relation = folder_relation(folder, source)
        if relation is not None:
            raise UsageError(
                f"{option} {folder} {relation} the {source_option} folder {source}: a run must not write where it "
                f"reads ({harm}). Choose an {option} outside {source} that does not contain it."
            )


class RunFolderLock:
    """
    A run folder locked against a second writer: an exclusive POSIX lock (`fcntl.lockf`) on its `LOCK_FILE`, which
    holds the holder's process id. The lock belongs to the process that took it: processes it forks (data loader
    workers) do not hold it, and the kernel releases it when that process ends, however it ends, so a run killed
    with SIGKILL leaves a lock file that blocks nobody. Taken with `lock`, released with `release`.
    """

    _held: set[Path] = set()  # folders this process holds: a POSIX lock does not exclude its own process

    def __init__(self, path: Path | None = None, handle=None, made: tuple[Path, ...] = (), previous: str = ""):
        self.path, self.handle = path, handle  # the lock file, resolved, and the open file that holds the lock
        self.made = made  # what taking the lock created (the lock file, the folder), resolved: `release(tidy=True)`
        self.previous = previous  # removes it, and puts back what the lock file held before

    @classmethod
    def lock(cls, folder: str | os.PathLike, option: str) -> "RunFolderLock":
        """Create `folder` if needed and lock it; a folder another run holds is refused, naming it."""
        try:
            import fcntl
        except ImportError:  # not POSIX (Windows)
            warnings.warn(f"{option} {folder} is not locked against a second run on this platform.", stacklevel=2)
            return cls()
        path = Path(folder, LOCK_FILE)
        made = tuple(p for p in (path, path.parent) if not p.exists())
        path.parent.mkdir(parents=True, exist_ok=True)
        key, made = path.resolve(), tuple(made_path.resolve() for made_path in made)
        if key in cls._held:
            raise held_message(folder, option, path, str(os.getpid()))
        handle = open(path, "a+", encoding="utf-8")  # not truncated before the lock is ours
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EACCES, errno.EAGAIN):  # a file system without locks (ENOLCK, ...)
                handle.close()
                warnings.warn(f"{option} {folder} is not locked against a second run: {error.strerror}.", stacklevel=2)
                return cls()
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            raise held_message(folder, option, path, holder) from None
        handle.seek(0)
        previous = handle.read()  # an earlier run's process id, put back if this run stops at its start
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        cls._held.add(key)
        return cls(key, handle, made, previous)

    def release(self, tidy: bool = False) -> None:
        """
        Unlock (closing the file releases the lock). The file stays, so that no two runs lock two inodes; with
        `tidy` (a run that stopped with an error), what taking the lock created goes (the lock file, and the folder
        if it is empty) and a lock file that was there holds what it held, so that a run refused at its start leaves
        the folder as it found it.
        """
        if self.handle is None:
            return
        if tidy and self.path not in self.made:  # the file was there before: as it was
            self.handle.seek(0)
            self.handle.truncate()
            self.handle.write(self.previous)
        self.handle.close()
        self._held.discard(self.path)
        self.handle = None
        if tidy:
            for made in self.made:
                with contextlib.suppress(OSError):  # a folder the run wrote into is not empty: it stays
                    if made.name == LOCK_FILE:
                        made.unlink()
                    else:
                        made.rmdir()


def held_message(folder, option: str, path: Path, holder: str) -> UsageError:
    who = f"process {holder}, " if holder else ""
    return UsageError(
        f"{option} {folder} is held by another run ({who}lock {path}): two runs must not write one folder. Wait for "
        f"it to end, or choose another {option}."
    )


def is_trained_folder(folder: str | os.PathLike) -> bool:
    """
    A pipeline folder with UNet weights in any format. Pickle-only weights count: such a folder is trained, and
    loading it refuses the pickles with a message (it is never mistaken for a configuration and re-initialised).
    """
    return is_pipeline_folder(folder) and bool(weight_files(folder, "unet"))


# ----------------------------------------------------------------------------------------------------------------
# JSON files


def read_json(path: str | os.PathLike, what: str = "") -> dict | None:
    """
    A JSON object file; `None` if it does not exist. Invalid JSON or another type raises a `UsageError` naming the
    file, the position and what was expected (`what`, e.g. "the UNet configuration").
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        described = f" ({what})" if what else ""
        raise UsageError(f"{path}{described} is not valid JSON: {error}. Fix the file or remove it.") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold a JSON object, got {type(data).__name__}.")
    return data


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write under a temporary name, then rename: a crash never leaves half a file."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


# ----------------------------------------------------------------------------------------------------------------
# training_summary.json


@dataclass
class DatasetRecord:
    source: str | None = None
    num_images: int | None = None
    num_skipped: int | None = None
    skipped: list = field(default_factory=list)  # [item, reason] pairs, the first 20


@dataclass
class SamplesRecord:
    file: str = SAMPLES_FILE
    num_images: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None  # a conditional model's grid: one row per class or prompt at this scale
    prompts: list | None = None  # a text-to-image model's grid: its prompts, one row each


@dataclass
class TrainingSummary:
    """What a training run did, written by training and read by the model card (`training_summary.json`)."""

    steps: int
    max_train_steps: int | None = None
    stopped_by: str | None = None  # max_train_steps | max_train_minutes
    resumed_from_step: int | None = None
    images_seen: int | None = None
    epochs: float | None = None
    wall_time_seconds: float | None = None
    images_per_second: float | None = None
    final_loss: float | None = None
    mean_loss_last_100_steps: float | None = None
    final_learning_rate: float | None = None
    device: str | None = None
    num_processes: int | None = None
    mixed_precision: str | None = None
    global_batch_size: int | None = None
    ema: bool | None = None
    parameters: int | None = None
    pipeline: str | None = None
    dataset: DatasetRecord = field(default_factory=DatasetRecord)
    samples: SamplesRecord = field(default_factory=SamplesRecord)
    weights_sha256_per_rank: list = field(default_factory=list)
    validation: dict | None = None  # held-out metrics: held_out_images, loss, bits_per_dim, ...
    distillation: dict | None = None  # a distilled student: the method, its teacher, the calls it samples in, ...

    def write(self, folder: str | os.PathLike) -> None:
        write_json(Path(folder, SUMMARY_FILE), asdict(self))

    @classmethod
    def read(cls, folder: str | os.PathLike) -> "TrainingSummary | None":
        """The folder's summary, `None` if it has none; keys of newer versions are ignored."""
        data = read_json(Path(folder, SUMMARY_FILE), "a training summary")
        if data is None:
            return None
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "steps" not in values:
            raise UsageError(f"{Path(folder, SUMMARY_FILE)} has no 'steps': it is not a ddpm_hub training summary.")
        values["dataset"] = _record(DatasetRecord, values.get("dataset"))
        values["samples"] = _record(SamplesRecord, values.get("samples"))
        return cls(**values)


def _record(kind, data):
    known = {f.name for f in fields(kind)}
    return kind(**{k: v for k, v in (data or {}).items() if k in known})


# ----------------------------------------------------------------------------------------------------------------
# metrics.json


@dataclass
class Metric:
    """
    One entry of `metrics.json`, as the model card shows it. On disk an entry is a JSON object with the number under
    `value` (or `bits_per_dim` for `bpd`), its spread under `standard_error`/`stderr` or `std`, and `num_images`,
    `method` (or `bound`), `dataset`, `split`, `seed`, `command`.
    """

    key: str
    value: float
    spread: float | None = None
    spread_kind: str | None = None  # "s.e." or "s.d."
    num_images: int | None = None
    method: str | None = None
    dataset: str | None = None
    split: str | None = None
    command: str | None = None

    @classmethod
    def from_json(cls, key: str, entry) -> "Metric | None":
        """The entry as a Metric; `None` for an entry without a number. A non-finite number raises (`check_finite`)."""
        entry = entry if isinstance(entry, dict) else {"value": entry}
        check_finite(entry, f"the metric {key!r}")
        value = next((entry[k] for k in ("value", "bits_per_dim", "mean", key) if _is_number(entry.get(k))), None)
        if value is None:
            return None
        spread = next(((k, entry[k]) for k in SPREAD_KINDS if _is_number(entry.get(k))), (None, None))
        return cls(
            key=key,
            value=float(value),
            spread=spread[1],
            spread_kind=SPREAD_KINDS.get(spread[0]),
            num_images=entry.get("num_images") if isinstance(entry.get("num_images"), int) else None,
            method=entry.get("method") or entry.get("bound"),
            dataset=entry.get("dataset"),
            split=entry.get("split"),
            command=entry.get("command"),
        )


SPREAD_KINDS = {"stderr": "s.e.", "standard_error": "s.e.", "std": "s.d."}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def non_finite_numbers(data, path: str = "") -> list[str]:
    """Where `data` (JSON-like: dicts, lists, numbers) holds NaN or an infinity, as `key.subkey` paths."""
    if isinstance(data, dict):
        return [found for key, value in data.items() for found in non_finite_numbers(value, f"{path}.{key}")]
    if isinstance(data, (list, tuple)):
        return [found for i, value in enumerate(data) for found in non_finite_numbers(value, f"{path}[{i}]")]
    if _is_number(data) and not math.isfinite(data):
        return [f"{path.lstrip('.') or 'the value'} = {data}"]
    return []


def check_finite(data, what: str) -> None:
    """
    No metric with NaN or an infinity is ever written or published: a UsageError naming `what` and where. (A sample
    set drawn by a diverged model or from NaN guidance gives such numbers, or a finite one that means nothing: the
    guidance scale is refused where it enters, `conditioning_ddpm_hub.check_guidance_scale`.)
    """
    bad = non_finite_numbers(data)
    if bad:
        raise UsageError(
            f"{what} is not a finite number ({', '.join(bad[:3])}): a non-finite metric is neither written nor "
            "published. Check the model's weights and the evaluation's settings, then measure again."
        )


def read_metrics(folder: str | os.PathLike) -> list[Metric]:
    """The metrics of a folder, in file order; a non-finite number is refused, naming the file and the entry."""
    path = Path(folder, METRICS_FILE)
    data = read_json(path, "the evaluation metrics") or {}
    try:
        metrics = [Metric.from_json(key, entry) for key, entry in data.items()]
    except UsageError as error:
        raise UsageError(f"{path}: {error}") from None
    return [metric for metric in metrics if metric is not None]


def update_metrics(folder: str | os.PathLike, entries: dict) -> Path:
    """
    Merge `entries` into `folder/metrics.json`: a new evaluation replaces its own keys, keeps the others. Entries
    with a non-finite number are refused before anything is written.
    """
    for key, entry in entries.items():
        check_finite(entry, f"the metric {key!r}")
    path = Path(folder, METRICS_FILE)
    metrics = read_json(path, "the evaluation metrics") or {}
    metrics.update(entries)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, metrics)
    return path
