"""The image sources of `ddpm_hub.data` (built-in digits, a folder, a Hub dataset), decoded into one uint8 tensor.

A source is first *planned* (`plan_source`: the folder listed, the Hub dataset loaded, nothing decoded; the plan
knows the source's fingerprint, which the decoded cache's key uses), then decoded: into RAM (`load_images`) or into
the on-disk cache (`ddpm_hub.data.cache`), in both cases by `ddpm_hub.data.parallel`. What a folder holds is read by
`ddpm_hub.data.folders`, a Hub dataset's columns are resolved by `ddpm_hub.data.hub_datasets`.
"""

import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import InputNotFoundError, UsageError
from . import digit_pairs, photos
from .decode import Resolution, image_size, is_size
from .folders import (
    IMAGE_EXTENSIONS,
    METADATA_FILE,
    folder_captions,
    folder_classes,
    folder_fingerprint,
    list_folder,
    metadata_files,
)
from .hub_datasets import (
    check_no_hub_version,
    hub_version,
    raw_image_rows,
    resolve_caption_column,
    resolve_class_column,
    resolve_image_column,
)
from .parallel import DecodeSettings, FolderItems, HubItems, decode_all

logger = logging.getLogger(__name__)

BUILTIN_DATASETS = ("builtin:digits", "builtin:digit-pairs", "builtin:photos")
CAPTION_COLUMN = "text"  # the default text column (diffusers' text-to-image scripts and metadata.jsonl use it)
VALID_CHANNELS = (1, 3)
MAX_REASONS_SHOWN = 5


class SkippedImagesWarning(UserWarning):
    """Emitted once per :func:`load_image_tensor` call when some files or rows were skipped."""


@dataclass
class ImageDatasetReport:
    """What happened while loading.

    Attributes:
        num_images: images decoded into the tensor (its first dimension).
        num_skipped: files or rows that were skipped.
        skipped: ``(file path relative to the folder, or row id, reason)`` for every skipped item, in order.
    """

    num_images: int
    num_skipped: int
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self, max_reasons: int = MAX_REASONS_SHOWN) -> str:
        """One line: the first ``max_reasons`` skipped items with their reasons."""
        shown = "; ".join(f"{item}: {reason}" for item, reason in self.skipped[:max_reasons])
        more = f" (first {max_reasons} shown)" if self.num_skipped > max_reasons else ""
        return f"{shown}{more}"


@dataclass
class DecodedImages:
    """A decoded dataset: the images, and their class labels and captions when the source has them.

    Attributes:
        images: uint8 ``[N x C x H x W]``: in RAM, or memory-mapped from the decoded cache (then ``file`` is set).
        labels: int64 ``[N]`` class ids, or None (a source without labels).
        label_names: the name of each class id (``label_names[i]`` is class i), or None.
        report: what was decoded and skipped.
        file: the cache file ``images`` is memory-mapped from (`ddpm_hub.data.cache`), None for images in RAM.
        captions: each image's captions (a list of one or more strings: training draws one per epoch), or None
            (captions were not asked for).
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    label_names: list[str] | None
    report: ImageDatasetReport
    file: Path | None = None
    captions: list[list[str]] | None = None


@dataclass
class SourcePlan:
    """
    A source opened but not decoded. `items` (`FolderItems` / `HubItems`) are decoded by `ddpm_hub.data.parallel`;
    built-in digits have `decode_directly` instead (one vectorised resize). `fingerprint` changes whenever the
    source's content may have changed (a file's size or time, a Hub dataset's revision or data files).
    """

    description: str  # "train_data_dir '...'", "builtin:digits", "dataset '...' (split 'train')"
    name: str  # short, for file names: the folder's name, "digits", the dataset's name
    fingerprint: dict
    capacity: int  # at most this many images: the items, or max_images
    items: FolderItems | HubItems | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # known before decoding (non-image files)
    label_names: list[str] | None = None
    label_column: str | None = None
    decode_directly: Callable[[], "DecodedImages"] | None = None
    captions: bool = False  # each item's captions are read (a text-to-image model), missing ones skip the item


def load_image_tensor(*args, **kwargs) -> tuple[torch.Tensor, ImageDatasetReport]:
    """`load_images`, without the labels: ``(images, report)``."""
    decoded = load_images(*args, **kwargs)
    return decoded.images, decoded.report


def load_images(
    dataset_name: str | None = "builtin:digits",
    train_data_dir: str | None = None,
    image_column: str | None = None,
    resolution: Resolution = 16,
    channels: int = 1,
    center_crop: bool = True,
    split: str = "train",
    cache_dir: str | None = None,
    max_images: int | None = None,
    class_column: str | None = None,
    num_workers: int = 1,
    caption_column: str | None = None,
    dataset_config_name: str | None = None,
    dataset_revision: str | None = None,
) -> DecodedImages:
    """Decode a whole image dataset once into a uint8 tensor in RAM, with its class labels and captions.

    Args:
        dataset_name: ``"builtin:digits"`` or a name/path for ``datasets.load_dataset``. Pass ``None`` when
            ``train_data_dir`` is given: exactly one of the two must be set.
        train_data_dir: a local folder of images, walked recursively in sorted path order.
        image_column: Hub datasets only; default: the first ``Image``-typed column, else ``"image"`` or ``"img"``.
        resolution: the size of the output images: an int (square) or (height, width).
        channels: 1 (L) or 3 (RGB), the UNet's ``in_channels``.
        center_crop: resize so that the image covers H x W (for a square, the short side becomes H) then crop the
            centre (True), or resize the whole image to H x W (False). See the module docstring.
        split: Hub datasets only.
        cache_dir: passed to ``datasets.load_dataset``.
        max_images: stop after this many usable images (files or rows after that are not examined).
        class_column: Hub datasets only: the label column (default: the first ``ClassLabel`` column, if any).
        num_workers: decode with this many processes (`ddpm_hub.data.parallel`); the result is the same.
        caption_column: read captions (for a text-to-image model): a Hub dataset's text column (a string, or a list
            of strings per row), a folder's `metadata.jsonl` (`file_name` + this key), built-in digit pairs' own; an
            item without a caption is skipped and counted. None: no captions are read.
        dataset_config_name, dataset_revision: Hub datasets only: the configuration (`datasets.load_dataset`'s
            `name`) and the branch, tag or commit to read.

    Labels: the digits' targets ("0".."9"); a folder's first-level subfolders when every image is inside one (the
    ``imagefolder`` convention: ``cat/001.png`` is class "cat", classes in sorted name order); a Hub dataset's
    ``ClassLabel`` column (names from the feature) or the integer column ``class_column`` names.

    Returns:
        `DecodedImages`: ``images`` is a uint8 tensor [N x channels x H x W] with values 0..255;
        ``labels``/``label_names`` as above or None; ``report`` counts the decoded and skipped items and gives a
        reason per skipped item.

    Raises:
        ValueError: bad arguments (listing what is accepted), no usable image, a dataset that cannot be loaded.
        FileNotFoundError: ``train_data_dir`` does not exist.
    """
    plan = plan_source(
        dataset_name, train_data_dir, image_column, resolution, channels, center_crop, split, cache_dir, max_images,
        class_column, caption_column, dataset_config_name, dataset_revision,
    )  # fmt: skip
    decoded = decode_in_ram(plan, DecodeSettings(resolution, channels, center_crop), num_workers)
    check_and_warn(plan.description, decoded.report, stacklevel=2)
    megabytes = decoded.images.numel() / 2**20
    logger.info(
        "Loaded %d images from %s into a uint8 tensor [%s] (%.1f MB); %d skipped.",
        decoded.report.num_images,
        plan.description,
        " x ".join(str(size) for size in decoded.images.shape),
        megabytes,
        decoded.report.num_skipped,
    )
    return decoded


def plan_source(
    dataset_name: str | None,
    train_data_dir: str | None,
    image_column: str | None,
    resolution: Resolution,
    channels: int,
    center_crop: bool,
    split: str,
    cache_dir: str | None,
    max_images: int | None,
    class_column: str | None,
    caption_column: str | None = None,
    dataset_config_name: str | None = None,
    dataset_revision: str | None = None,
) -> SourcePlan:
    """Check the arguments and open the source (list the folder, load the Hub dataset); decode nothing."""
    _check_arguments(dataset_name, train_data_dir, image_column, resolution, channels, split, max_images)
    if train_data_dir is not None or dataset_name in BUILTIN_DATASETS:
        check_no_hub_version(train_data_dir or dataset_name, dataset_config_name, dataset_revision)
    if class_column is not None and (train_data_dir is not None or dataset_name in BUILTIN_DATASETS):
        raise UsageError(f"--class_column applies only to Hub datasets, got {class_column!r}.")
    if train_data_dir is not None:
        return _plan_folder(train_data_dir, resolution, max_images, caption_column)
    if dataset_name == "builtin:digit-pairs":
        return _plan_digit_pairs(resolution, channels, max_images, caption_column is not None)
    if dataset_name == "builtin:photos" and caption_column is None:
        return _plan_photos(resolution, channels, max_images)
    if dataset_name in BUILTIN_DATASETS:
        if caption_column is not None:
            raise UsageError(
                f"{dataset_name} has no captions: a text-to-image model trains on builtin:digit-pairs, an image "
                f"folder with {METADATA_FILE}, or a Hub dataset with a text column."
            )
        return _plan_digits(resolution, channels, max_images)
    return _plan_hub_dataset(
        dataset_name, image_column, class_column, split, cache_dir, max_images, caption_column, dataset_config_name,
        dataset_revision,
    )  # fmt: skip


def decode_in_ram(plan: SourcePlan, settings: DecodeSettings, num_workers: int) -> DecodedImages:
    """The plan's images decoded into a uint8 tensor [N x C x H x W] owned by this process."""
    if plan.decode_directly is not None:
        return plan.decode_directly()
    images = torch.empty((plan.capacity, *settings.shape), dtype=torch.uint8)

    def write(block) -> None:
        images[write.count : write.count + len(block)] = torch.from_numpy(block)
        write.count += len(block)

    write.count = 0
    result = decode_all(plan.items, plan.capacity, settings, num_workers, write)
    if result.count < plan.capacity:
        images = images[: result.count].clone()  # own exactly the usable rows
    captions = result.captions if plan.captions else None
    return with_labels(images, result.labels, plan, plan.skipped + result.skipped, captions=captions)


def with_labels(
    images: torch.Tensor, labels: list, plan: SourcePlan, skipped: list, file=None, captions=None
) -> DecodedImages:
    """`DecodedImages` with the labels checked: all present and >= 0, or none at all."""
    report = ImageDatasetReport(num_images=len(images), num_skipped=len(skipped), skipped=skipped)
    ids = label_tensor(labels, plan)
    return DecodedImages(images, ids, plan.label_names if ids is not None else None, report, file, captions)


def label_tensor(labels: list, plan: SourcePlan) -> torch.Tensor | None:
    """int64 [N] class ids, or None for a source without labels; a missing or negative one is an error."""
    if not labels or labels[0] is None:
        return None
    if any(label is None or label < 0 for label in labels):
        raise UsageError(
            f"the label column {plan.label_column!r} has missing or negative labels; every image needs one."
        )
    return torch.as_tensor(labels, dtype=torch.int64)


def check_and_warn(description: str, report: ImageDatasetReport, stacklevel: int = 2, note: str = "") -> None:
    """No usable image is an error; skipped items are summarised in one `SkippedImagesWarning`."""
    if report.num_images == 0:
        raise UsageError(f"0 images usable in {description}, {report.num_skipped} skipped: {report.summary()}.")
    if report.num_skipped:
        warnings.warn(
            f"Skipped {report.num_skipped} of {report.num_images + report.num_skipped} items in {description}"
            f"{note}: {report.summary()}. The full list is in the report's `skipped`.",
            SkippedImagesWarning,
            stacklevel=stacklevel + 1,
        )


# ----------------------------------------------------------------------------------------------------------------
# Argument checks (before any heavy work)
# ----------------------------------------------------------------------------------------------------------------


def _check_arguments(
    dataset_name: str | None,
    train_data_dir: str | None,
    image_column: str | None,
    resolution: Resolution,
    channels: int,
    split: str,
    max_images: int | None,
) -> None:
    if channels not in VALID_CHANNELS:
        raise UsageError(f"channels must be one of {VALID_CHANNELS} (L or RGB), got {channels!r}.")
    if not is_size(resolution):
        raise UsageError(f"resolution must be an integer >= 1 or a pair (height, width) of them, got {resolution!r}.")
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1):
        raise UsageError(f"max_images must be None (all images) or an integer >= 1, got {max_images!r}.")
    check_source(dataset_name, train_data_dir, image_column, split)


def check_source(dataset_name: str | None, train_data_dir: str | None, image_column: str | None, split: str) -> None:
    """Exactly one image source, and only the settings that apply to it; a folder that exists. Before any work."""
    if (dataset_name is None) == (train_data_dir is None):
        given = "both were given" if dataset_name is not None else "neither was given"
        raise UsageError(
            f"Give exactly one image source, --dataset_name or --train_data_dir; {given} "
            f"(dataset_name={dataset_name!r}, train_data_dir={train_data_dir!r}). Accepted: --dataset_name "
            f"{' or '.join(BUILTIN_DATASETS)} or a Hub dataset name, or --train_data_dir <image folder>."
        )
    if dataset_name is not None:
        if dataset_name == "":
            raise UsageError("dataset_name is empty; give a Hub dataset name or one of " + ", ".join(BUILTIN_DATASETS))
        if dataset_name.startswith("builtin:") and dataset_name not in BUILTIN_DATASETS:
            raise UsageError(
                f"Unknown builtin dataset {dataset_name!r}; valid builtin names: {list(BUILTIN_DATASETS)}."
            )
    hub = dataset_name is not None and dataset_name not in BUILTIN_DATASETS
    if not hub:
        what = f"train_data_dir {train_data_dir!r}" if train_data_dir is not None else dataset_name
        if image_column is not None:
            raise UsageError(f"image_column applies only to Hub datasets, not to {what}; got {image_column!r}.")
        if split != "train":
            raise UsageError(
                f"split applies only to Hub datasets; {what} has the single split 'train', got {split!r}."
            )
    elif not isinstance(split, str) or not split:
        raise UsageError(f"split must be a split name such as 'train', got {split!r}.")
    if train_data_dir is not None:
        if not os.path.exists(train_data_dir):
            raise InputNotFoundError(f"--train_data_dir {train_data_dir!r} does not exist; give a folder of images.")
        if not os.path.isdir(train_data_dir):
            raise UsageError(f"--train_data_dir {train_data_dir!r} is a file, not a folder; give a folder of images.")


# ----------------------------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------------------------


def _plan_digits(resolution: Resolution, channels: int, max_images: int | None) -> SourcePlan:
    import sklearn

    capacity = 1797 if max_images is None else min(max_images, 1797)
    fingerprint = {"builtin": BUILTIN_DATASETS[0], "scikit-learn": sklearn.__version__}
    plan = SourcePlan(BUILTIN_DATASETS[0], "digits", fingerprint, capacity, label_names=[str(i) for i in range(10)])
    plan.decode_directly = lambda: _load_digits(resolution, channels, max_images)
    return plan


def _load_digits(resolution: Resolution, channels: int, max_images: int | None) -> DecodedImages:
    """scikit-learn digits [1797 x 8 x 8] in 0..16 -> uint8 [N x channels x H x W] (resized), labels 0..9."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    digits = bunch.images[:max_images]  # [N x 8 x 8] float64, 0..16
    images = torch.from_numpy(digits).to(torch.float32).mul_(255.0 / 16.0).unsqueeze(1)  # [N x 1 x 8 x 8], 0..255
    size = image_size(resolution)
    if size != tuple(images.shape[-2:]):
        # Bilinear like the folder path; antialias only matters when shrinking below 8x8.
        images = F.interpolate(images, size=size, mode="bilinear", antialias=True)
    images = images.round_().clamp_(0, 255).to(torch.uint8)
    if channels == 3:
        images = images.repeat(1, 3, 1, 1)
    labels = torch.as_tensor(bunch.target[:max_images], dtype=torch.int64)
    report = ImageDatasetReport(num_images=images.shape[0], num_skipped=0)
    return DecodedImages(images, labels, [str(name) for name in bunch.target_names], report)


def _plan_digit_pairs(resolution: Resolution, channels: int, max_images: int | None, captions: bool) -> SourcePlan:
    """`builtin:digit-pairs` (`ddpm_hub.data.digit_pairs`), decoded directly: a resize of the digits and a gather."""
    import sklearn

    capacity = digit_pairs.NUM_CANVASES if max_images is None else min(max_images, digit_pairs.NUM_CANVASES)
    fingerprint = {
        "builtin": "builtin:digit-pairs", "scikit-learn": sklearn.__version__, "canvases": digit_pairs.NUM_CANVASES,
    }  # fmt: skip
    plan = SourcePlan("builtin:digit-pairs", "digit-pairs", fingerprint, capacity, captions=captions)

    def decode() -> DecodedImages:
        height, width = image_size(resolution)
        if width % 2:
            raise UsageError(f"builtin:digit-pairs needs an even width (two halves), got {height}x{width}.")
        digits = _load_digits((height, width // 2), channels, None)  # each half exactly builtin:digits
        canvases, texts = digit_pairs.compose(digits.images, digits.labels.numpy(), capacity, captions)
        report = ImageDatasetReport(num_images=capacity, num_skipped=0)
        return DecodedImages(canvases, None, None, report, captions=texts)

    plan.decode_directly = decode
    return plan


def _plan_photos(resolution: Resolution, channels: int, max_images: int | None) -> SourcePlan:
    """`builtin:photos` (`ddpm_hub.data.photos`): crops of the two scikit-learn photographs, at three scales."""
    import sklearn

    capacity = photos.NUM_CROPS if max_images is None else min(max_images, photos.NUM_CROPS)
    fingerprint = {"builtin": "builtin:photos", "scikit-learn": sklearn.__version__, "crops": photos.NUM_CROPS}
    fingerprint["scales"] = list(photos.SCALES)
    plan = SourcePlan("builtin:photos", "photos", fingerprint, capacity)

    def decode() -> DecodedImages:
        try:
            crops = torch.from_numpy(photos.crop_photos(*image_size(resolution), capacity))
        except ValueError as error:
            raise UsageError(str(error)) from None
        if channels == 1:  # ITU-R 601 luma, as every other source converts to one channel
            luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            crops = (crops.float() * luma).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
        return DecodedImages(crops, None, None, ImageDatasetReport(num_images=capacity, num_skipped=0))

    plan.decode_directly = decode
    return plan


def _plan_folder(root: str, resolution: Resolution, max_images: int | None, caption_column: str | None) -> SourcePlan:
    image_paths, skipped = list_folder(root)
    if not image_paths:
        report = ImageDatasetReport(num_images=0, num_skipped=len(skipped), skipped=skipped)
        raise UsageError(
            f"0 images usable in train_data_dir {root!r}, {len(skipped)} skipped: {report.summary()}. "
            f"Accepted extensions: {', '.join(IMAGE_EXTENSIONS)} (searched recursively)."
        )
    label_names = folder_classes(image_paths)
    class_ids = {name: i for i, name in enumerate(label_names or [])}
    labels = [class_ids[path.split("/")[0]] if label_names else None for path in image_paths]
    capacity = len(image_paths) if max_images is None else min(max_images, len(image_paths))
    captions = folder_captions(root, image_paths, caption_column) if caption_column is not None else None
    metadata = [path for path in metadata_files(root)]
    return SourcePlan(
        description=f"train_data_dir {root!r}",
        name=os.path.basename(os.path.normpath(root)),
        fingerprint={
            "folder": folder_fingerprint(root, image_paths + [path for path, _ in skipped] + metadata),
            **({"captions": caption_column} if caption_column is not None else {}),
        },
        capacity=capacity,
        items=FolderItems(root, image_paths, labels, resolution, captions),
        skipped=skipped,
        label_names=label_names,
        captions=caption_column is not None,
    )


def _plan_hub_dataset(
    dataset_name: str,
    image_column: str | None,
    class_column: str | None,
    split: str,
    cache_dir: str | None,
    max_images: int | None,
    caption_column: str | None = None,
    config_name: str | None = None,
    revision: str | None = None,
) -> SourcePlan:
    import datasets

    version = hub_version(config_name, revision)
    try:
        dataset = datasets.load_dataset(dataset_name, config_name, split=split, cache_dir=cache_dir, revision=revision)
    except Exception as exc:  # ConnectionError offline, DatasetNotFoundError, unknown split, ...
        raise UsageError(
            f"Could not load dataset {dataset_name!r} (split {split!r}{version}) with datasets.load_dataset: "
            f"{type(exc).__name__}: {exc}. This machine may be offline (Hub datasets must then already be in the "
            "datasets cache), or the name or split may be wrong. For a local image folder use train_data_dir "
            "(--train_data_dir DIR); to train without any download use dataset_name='builtin:digits'."
        ) from exc

    column = resolve_image_column(dataset, image_column, dataset_name)
    label_column, label_names = resolve_class_column(dataset, class_column, dataset_name)
    text_column = resolve_caption_column(dataset, caption_column, dataset_name)
    raw = raw_image_rows(dataset, column, label_column, dataset_name, text_column)
    feature = dataset.features[column]
    mode = feature.mode if isinstance(feature, datasets.Image) else None
    return SourcePlan(
        description=f"dataset {dataset_name!r} (split {split!r}{version})",
        name=os.path.basename(os.path.normpath(dataset_name)) if os.path.isdir(dataset_name) else dataset_name,
        # datasets' fingerprint follows the Hub revision or the local data files; the columns pick what is read
        fingerprint={
            "dataset": dataset_name,
            "split": split,
            **({"config": config_name} if config_name else {}),
            **({"revision": revision} if revision else {}),
            "fingerprint": dataset._fingerprint,
            "columns": [column, label_column] + ([text_column] if text_column else []),
        },  # fmt: skip
        capacity=len(raw) if max_images is None else min(max_images, len(raw)),
        items=HubItems(raw, column, label_column, mode, text_column),
        label_names=label_names,
        label_column=label_column,
        captions=text_column is not None,
    )
