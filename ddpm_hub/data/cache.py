"""The decoded cache: a source decoded once per machine into a uint8 file that every process memory-maps.

    <cache_dir>/ddpm_hub_decoded/<name>/        name: <source>-<size>-<l|rgb>-<crop|squash>-<16 hex digits of the key>
        images.u8       uint8 [N x C x H x W], C order, no header: image i is bytes [i * C*H*W, (i + 1) * C*H*W)
        labels.npy      int64 [N] class ids (only for a source with labels)
        captions.json   each image's captions, a JSON list of lists of strings (only when captions are read)
        manifest.json   the key and what it was made of, the shape, the class names, every skipped item and why,
                        and how the build went (seconds, processes)

Why a raw file and a manifest rather than an Arrow dataset of arrays: training reads random rows of a fixed size, so
row i is at a fixed offset and a batch is one numpy gather from the mapping, with no per-row decoding of Arrow
list arrays and no copy; worker processes can write their rows in order without a concatenation step; and any tool
reads it with `np.memmap(path, np.uint8, "r", shape=manifest["shape"])`. The mapping is private (copy on write):
the process sees the file's pages, shared through the page cache by every process on the machine, and nothing it
does can change the file. Training reads its rows with `pread` (`UInt8ImageDataset`): the same shared page cache,
without leaving the pages read mapped in the rank, whose resident memory therefore stays flat.

The key (sha256 of JSON) holds what changes the pixels: the cache format, `DECODER_VERSION`, the source's fingerprint
(every file's path, size and time for a folder; datasets' fingerprint, which follows the Hub revision or the data
files, for a Hub dataset; the scikit-learn version for the digits), height and width, channels, centre crop, and
max_images. What opening a cache checks, all of it cheap (no pass over the pixels): the manifest matches its key, its
shape is the settings' and fits the source, the class names are the source's own (a hand-edited manifest cannot put
other names into a model), the files have the sizes the shape says, and the labels (int64, 8 bytes per image: read
whole, their sha256 recorded at build) are ids of the classes. A cache that fails any of these is rebuilt, naming
why. The sha256 of `images.u8` is recorded at build (computed as the rows are written, at no cost) but not checked
at every open: that is a full read of the file per run start (measured 1.1 GB/s on this CPU: 0.13 s for CIFAR-10,
14 s for ImageNet 64x64) to catch flipped bytes whose effect is a wrong pixel in one image, which the filesystem's
checksums or ECC memory are the layer for; `verify_cache(folder)` checks it on demand.

Building: under an exclusive lock (`flock`) on `.<name>.lock`, into `.tmp-<name>-<pid>/`, renamed to `<name>/` when
every file is written and flushed. A build that is killed leaves only the temporary folder, which no reader opens
and the next builder deletes (holding the lock, it knows no build is running). In a multi-process run the local main
process takes the lock before the others are let go (`Coordinator`), so it builds while they wait on the lock (not
in a collective, which would time out on a long build), then open what it built. The lock needs a filesystem with
working `flock` (local disks; NFS v4). Reading a complete cache needs no write access: in a read-only cache directory
the lock file is opened read-only (`flock` works on it), or, where none can be created, a complete cache is read
without a lock (a cache folder only ever appears complete, by rename); only a build needs a writable directory.
"""

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UsageError
from ..version import __version__
from .decode import DECODER_VERSION, size_text
from .parallel import DecodeSettings, decode_all
from .sources import DecodedImages, ImageDatasetReport, SourcePlan, check_and_warn, label_tensor
from .tensors import map_images

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
CACHE_SUBDIR = "ddpm_hub_decoded"
IMAGES_FILE, LABELS_FILE, MANIFEST_FILE = "images.u8", "labels.npy", "manifest.json"
CAPTIONS_FILE = "captions.json"


@dataclass(frozen=True)
class Coordinator:
    """The processes of a distributed run: whether this one is its machine's main process, and a barrier."""

    is_local_main: bool
    wait_for_everyone: Callable[[], None]


def cache_root(cache_dir: str | os.PathLike | None) -> Path:
    """`<cache_dir>/ddpm_hub_decoded`, by default inside the datasets cache (`$HF_DATASETS_CACHE`)."""
    if cache_dir is None:
        import datasets.config

        cache_dir = datasets.config.HF_DATASETS_CACHE
    return Path(cache_dir) / CACHE_SUBDIR


def key_fields(plan: SourcePlan, settings: DecodeSettings, max_images: int | None) -> dict:
    """Everything the decoded pixels depend on."""
    return {
        "format": CACHE_FORMAT,
        "decoder_version": DECODER_VERSION,
        "source": plan.fingerprint,
        "shape": list(settings.shape),
        "center_crop": settings.center_crop,
        "max_images": max_images,
        **({"captions": True} if plan.captions else {}),  # absent otherwise: the keys of earlier caches hold
    }


def cache_key(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def cache_name(plan: SourcePlan, settings: DecodeSettings, key: str) -> str:
    """A folder name a person can read: `digits-16-l-crop-<key>`, `my_images-32-rgb-crop-<key>`."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", plan.name).strip("_.")[:40] or "images"
    channels = "rgb" if settings.channels == 3 else "l"
    crop = "crop" if settings.center_crop else "squash"
    return f"{slug}-{size_text(settings.resolution)}-{channels}-{crop}-{key[:16]}"


def load_cached(
    plan: SourcePlan,
    settings: DecodeSettings,
    max_images: int | None,
    cache_dir: str | os.PathLike | None,
    num_workers: int,
    coordinator: Coordinator | None = None,
) -> DecodedImages:
    """The plan's images from the decoded cache, built first if it is missing or not trusted; memory-mapped."""
    fields = key_fields(plan, settings, max_images)
    key = cache_key(fields)
    root = cache_root(cache_dir)
    folder = root / cache_name(plan, settings, key)
    with build_lock(root, folder.name, coordinator) as writable:
        decoded = open_cache(folder, key, plan, settings)
        if decoded is None:
            if not writable:
                raise UsageError(
                    f"The decoded cache directory {root} is not writable and holds no usable cache {folder.name} (see "
                    "the warning above): give --cache_dir a writable folder, or decode into RAM with "
                    "--no-decoded_cache."
                )
            build_cache(plan, settings, folder, fields, num_workers)
            decoded = open_cache(folder, key, plan, settings)
            note = ""
        else:
            logger.info(
                "Reusing the decoded cache %s: %d images [%s], %d skipped; nothing to decode.",
                folder,
                decoded.report.num_images,
                " x ".join(map(str, decoded.images.shape)),
                decoded.report.num_skipped,
            )
            note = f" (when the decoded cache {folder} was built)"
    check_and_warn(plan.description, decoded.report, stacklevel=2, note=note)
    return decoded


@contextmanager
def build_lock(root: Path, name: str, coordinator: Coordinator | None) -> Iterator[bool]:
    """
    Hold `<root>/.<name>.lock`; yields whether the directory is writable (a build may run). With a coordinator, the
    local main process takes it before the others are let past the barrier, so it builds while they wait on the
    lock; if another process holds it already (another run, or the main process of another machine sharing
    --cache_dir), everyone waits on the lock, none in the barrier. In a read-only directory the lock file is opened
    read-only, or, where there is none, nothing is locked: a complete cache is read as it is, none is built.
    """
    descriptor, writable = _open_lock(root, name)
    try:
        held = descriptor is None
        if coordinator is not None:
            if coordinator.is_local_main and not held:
                held = _try_lock(descriptor)
            coordinator.wait_for_everyone()
        if not held:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield writable
    finally:
        if descriptor is not None:
            os.close(descriptor)  # releases the lock


def _open_lock(root: Path, name: str) -> tuple[int | None, bool]:
    """(the lock file's descriptor or None, whether `root` is writable)."""
    path = root / f".{name}.lock"
    try:
        root.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        if error.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        logger.info(
            "The decoded cache directory %s is read-only (%s): a complete cache is read, none built.",
            root,
            error.strerror,
        )
        try:
            return os.open(path, os.O_RDONLY), False
        except OSError:
            return None, False
    writable = os.access(root, os.W_OK)
    return descriptor, writable


def _try_lock(descriptor: int) -> bool:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def open_cache(folder: Path, key: str, plan: SourcePlan | None = None, settings: DecodeSettings | None = None):
    """
    The cache in `folder` memory-mapped, or None when there is none or it is not trusted (logged, naming why):
    checked against `key`, and against the source's plan and the decode settings when given (see the module
    docstring).
    """
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        problem = _mismatch(folder, manifest, key) or _untrusted(folder, manifest, plan, settings)
    except (OSError, ValueError, KeyError, TypeError) as error:
        problem = f"its manifest cannot be read ({type(error).__name__}: {error})"
    if problem:
        logger.warning("The decoded cache %s is not trusted: %s. It is rebuilt.", folder, problem)
        return None
    shape = tuple(manifest["shape"])
    images, _ = map_images(folder / IMAGES_FILE, shape)
    labels = torch.from_numpy(np.load(folder / LABELS_FILE)) if manifest["labels"] else None
    captions = json.loads((folder / CAPTIONS_FILE).read_text()) if manifest.get("captions") else None
    skipped = [tuple(item) for item in manifest["skipped"]]
    report = ImageDatasetReport(num_images=shape[0], num_skipped=len(skipped), skipped=skipped)
    return DecodedImages(images, labels, manifest["label_names"], report, folder / IMAGES_FILE, captions)


def _mismatch(folder: Path, manifest: dict, key: str) -> str | None:
    """Why the files in `folder` are not the cache of `key`, or None."""
    if manifest.get("format") != CACHE_FORMAT or manifest.get("key") != key:
        return f"its manifest's key {manifest.get('key')!r} (format {manifest.get('format')}) is not {key!r}"
    shape = manifest["shape"]
    expected = int(np.prod(shape))
    size = (folder / IMAGES_FILE).stat().st_size if (folder / IMAGES_FILE).is_file() else None
    if size != expected or not shape[0]:
        return f"{IMAGES_FILE} has {size} bytes, the manifest's shape {shape} needs {expected}"
    if manifest["labels"]:
        labels = np.load(folder / LABELS_FILE, mmap_mode="r")
        if labels.shape != (shape[0],) or labels.dtype != np.int64:
            return f"{LABELS_FILE} holds {labels.dtype} {list(labels.shape)}, not int64 [{shape[0]}]"
    if manifest.get("captions"):
        captions = json.loads((folder / CAPTIONS_FILE).read_text()) if (folder / CAPTIONS_FILE).is_file() else None
        if not isinstance(captions, list) or len(captions) != shape[0]:
            return f"{CAPTIONS_FILE} does not hold the captions of {shape[0]} images"
    return None


def _untrusted(folder: Path, manifest: dict, plan: SourcePlan | None, settings: DecodeSettings | None) -> str | None:
    """Why the manifest and labels do not fit the source and the settings they claim to be of, or None."""
    shape = manifest["shape"]
    if settings is not None and list(shape[1:]) != list(settings.shape):
        return f"its shape {shape} is not of [N x {' x '.join(map(str, settings.shape))}] images"
    if plan is not None and not 0 < shape[0] <= plan.capacity:
        return f"it claims {shape[0]} images, the source has at most {plan.capacity}"
    names = manifest["label_names"]
    if plan is not None and names != (plan.label_names if manifest["labels"] else None):
        return f"its class names {_shown(names)} are not the source's {_shown(plan.label_names)}"
    if not manifest["labels"]:
        return None
    recorded = (manifest.get("sha256") or {}).get(LABELS_FILE)
    if recorded is not None and sha256_file(folder / LABELS_FILE) != recorded:
        return f"{LABELS_FILE} is not the file the build wrote (sha256 {recorded[:12]}... recorded)"
    labels = np.load(folder / LABELS_FILE, mmap_mode="r")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or (names is not None and high >= len(names)):
        classes = f"0..{len(names) - 1}" if names is not None else ">= 0"
        return f"{LABELS_FILE} holds labels {low}..{high}, not class ids {classes}"
    return None


def _shown(names) -> str:
    return "none" if names is None else repr(names[:5])[:-1] + (", ...]" if len(names) > 5 else "]")


def sha256_file(path: Path, chunk: int = 2**24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_cache(folder: str | os.PathLike) -> list[str]:
    """
    The problems of a complete cache that opening it does not look for: its files (images, labels, captions)
    against the sha256 recorded at build (a full read of each). Empty when all match.
    """
    folder = Path(folder)
    recorded = json.loads((folder / MANIFEST_FILE).read_text()).get("sha256") or {}
    if not recorded:
        return [f"{folder / MANIFEST_FILE} records no checksums (built by an older ddpm_hub)"]
    return [
        f"{folder / name} does not match the sha256 recorded at build ({digest[:12]}...)"
        for name, digest in recorded.items()
        if sha256_file(folder / name) != digest
    ]


def build_cache(plan: SourcePlan, settings: DecodeSettings, folder: Path, fields: dict, num_workers: int) -> None:
    """Decode the plan into `.tmp-<name>-<pid>/` and rename it to `folder` once complete. The caller holds the lock."""
    for stale in folder.parent.glob(f".tmp-{folder.name}-*"):  # left by a killed build: no build runs now
        logger.warning("Removing %s, left by an interrupted build of the decoded cache.", stale)
        shutil.rmtree(stale, ignore_errors=True)
    temporary = folder.with_name(f".tmp-{folder.name}-{os.getpid()}")
    try:
        temporary.mkdir()
    except OSError as error:
        raise UsageError(
            f"Cannot build the decoded cache in {folder.parent}: {error.strerror or error}. Give --cache_dir a "
            "writable folder, or decode into RAM with --no-decoded_cache."
        ) from None
    try:
        manifest = _decode_into(plan, settings, temporary, fields, num_workers)
        _write_file(temporary / MANIFEST_FILE, (json.dumps(manifest, indent=1) + "\n").encode())
        _commit(temporary, folder)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    logger.info(
        "Decoded %d images (%d skipped) of %s in %.1f s with %d process(es) (%.0f images/s) into %s (%.1f MB).",
        manifest["shape"][0],
        len(manifest["skipped"]),
        plan.description,
        manifest["build"]["seconds"],
        manifest["build"]["processes"],
        manifest["build"]["items_per_second"],
        folder,
        np.prod(manifest["shape"]) / 2**20,
    )


def _decode_into(plan: SourcePlan, settings: DecodeSettings, folder: Path, fields: dict, num_workers: int) -> dict:
    """Write images.u8 (and labels.npy) into `folder`; returns the manifest."""
    logger.info(
        "Decoding %s into the decoded cache %s with %d process(es).", plan.description, folder.parent, num_workers
    )
    started = time.monotonic()
    digest = hashlib.sha256()  # of images.u8, as its rows are written: no second pass

    with open(folder / IMAGES_FILE, "wb") as file:

        def write(block) -> None:
            digest.update(block)
            file.write(block)

        if plan.decode_directly is not None:
            direct = plan.decode_directly()
            write(direct.images.numpy().tobytes())
            count = len(direct.images)
            labels = direct.labels.tolist() if direct.labels is not None else [None] * count
            skipped, captions = [], direct.captions
        else:
            result = decode_all(plan.items, plan.capacity, settings, num_workers, write, progress=True)
            labels, skipped, count = result.labels, plan.skipped + result.skipped, result.count
            captions = result.captions
        file.flush()
        os.fsync(file.fileno())
    seconds = time.monotonic() - started
    if count == 0:  # an error, and no cache
        check_and_warn(plan.description, ImageDatasetReport(0, len(skipped), skipped))
    ids = label_tensor(labels, plan)  # a missing or negative label is an error
    checksums = {IMAGES_FILE: digest.hexdigest()}
    if ids is not None:
        np.save(folder / LABELS_FILE, ids.numpy())
        checksums[LABELS_FILE] = sha256_file(folder / LABELS_FILE)
    if plan.captions:
        _write_file(folder / CAPTIONS_FILE, json.dumps(captions, ensure_ascii=False).encode())
        checksums[CAPTIONS_FILE] = sha256_file(folder / CAPTIONS_FILE)
    examined = count + len(skipped)
    return {
        "format": CACHE_FORMAT,
        "key": cache_key(fields),
        "key_fields": fields,
        "source": plan.description,
        "shape": [count, *settings.shape],
        "labels": ids is not None,
        "label_names": plan.label_names if ids is not None else None,
        "captions": plan.captions,
        "skipped": [list(item) for item in skipped],
        "sha256": checksums,
        "build": {
            "seconds": round(seconds, 3),
            "processes": num_workers if plan.items is not None else 1,
            "items_per_second": round(examined / max(seconds, 1e-9), 1),
            "ddpm_hub": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    }


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _commit(temporary: Path, folder: Path) -> None:
    """Rename the complete temporary folder to `folder` (an untrusted one there is moved aside and deleted)."""
    if folder.exists():
        stale = folder.with_name(f".stale-{folder.name}-{os.getpid()}")
        os.replace(folder, stale)
        shutil.rmtree(stale, ignore_errors=True)
    os.replace(temporary, folder)
    try:
        descriptor = os.open(folder.parent, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    except OSError:  # not every filesystem syncs folders
        pass
