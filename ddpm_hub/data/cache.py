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
max_images. A cache whose manifest does not match its key, or whose files have the wrong size, is rebuilt.

Building: under an exclusive lock (`flock`) on `.<name>.lock`, into `.tmp-<name>-<pid>/`, renamed to `<name>/` when
every file is written and flushed. A build that is killed leaves only the temporary folder, which no reader opens
and the next builder deletes (holding the lock, it knows no build is running). In a multi-process run the local main
process takes the lock before the others are let go (`Coordinator`), so it builds while they wait on the lock (not
in a collective, which would time out on a long build), then open what it built. The lock needs a filesystem with
working `flock` (local disks; NFS v4).
"""

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
    with build_lock(root, folder.name, coordinator):
        decoded = open_cache(folder, key)
        if decoded is None:
            build_cache(plan, settings, folder, fields, num_workers)
            decoded = open_cache(folder, key)
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
def build_lock(root: Path, name: str, coordinator: Coordinator | None) -> Iterator[None]:
    """
    Hold `<root>/.<name>.lock`. With a coordinator, the local main process takes it before the others are let past
    the barrier, so it builds while they wait on the lock; if another process holds it already (another run, or the
    main process of another machine sharing --cache_dir), everyone waits on the lock, none in the barrier.
    """
    root.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(root / f".{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        held = False
        if coordinator is not None:
            if coordinator.is_local_main:
                held = _try_lock(descriptor)
            coordinator.wait_for_everyone()
        if not held:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _try_lock(descriptor: int) -> bool:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def open_cache(folder: Path, key: str) -> DecodedImages | None:
    """The cache in `folder` memory-mapped, or None when there is none or it does not match `key` (logged)."""
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        problem = _mismatch(folder, manifest, key)
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


def build_cache(plan: SourcePlan, settings: DecodeSettings, folder: Path, fields: dict, num_workers: int) -> None:
    """Decode the plan into `.tmp-<name>-<pid>/` and rename it to `folder` once complete. The caller holds the lock."""
    for stale in folder.parent.glob(f".tmp-{folder.name}-*"):  # left by a killed build: no build runs now
        logger.warning("Removing %s, left by an interrupted build of the decoded cache.", stale)
        shutil.rmtree(stale, ignore_errors=True)
    temporary = folder.with_name(f".tmp-{folder.name}-{os.getpid()}")
    temporary.mkdir()
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
    with open(folder / IMAGES_FILE, "wb") as file:
        if plan.decode_directly is not None:
            direct = plan.decode_directly()
            file.write(direct.images.numpy().tobytes())
            count = len(direct.images)
            labels = direct.labels.tolist() if direct.labels is not None else [None] * count
            skipped, captions = [], direct.captions
        else:
            result = decode_all(plan.items, plan.capacity, settings, num_workers, file.write, progress=True)
            labels, skipped, count = result.labels, plan.skipped + result.skipped, result.count
            captions = result.captions
        file.flush()
        os.fsync(file.fileno())
    seconds = time.monotonic() - started
    if count == 0:  # an error, and no cache
        check_and_warn(plan.description, ImageDatasetReport(0, len(skipped), skipped))
    ids = label_tensor(labels, plan)  # a missing or negative label is an error
    if ids is not None:
        np.save(folder / LABELS_FILE, ids.numpy())
    if plan.captions:
        _write_file(folder / CAPTIONS_FILE, json.dumps(captions, ensure_ascii=False).encode())
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
