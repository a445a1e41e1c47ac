"""Image loading for DDPM training: every image is decoded once into one uint8 tensor [N x C x H x W].

Three sources, exactly one per call:

- ``dataset_name="builtin:digits"``: scikit-learn's 8x8 handwritten digits (1797 images, ships with scikit-learn,
  works offline); values 0..16 are scaled to 0..255 (white strokes on black) and upsampled to ``resolution``.
- ``dataset_name="<hub name>"`` (``"cifar10"``, ``"huggan/smithsonian_butterflies_subset"``, or a local folder of
  parquet/image files that ``datasets.load_dataset`` accepts): decoded through the ``datasets`` ``Image`` feature.
- ``train_data_dir="<folder>"``: every image file under the folder, recursively, in sorted path order.

Choices (the tests check each one):

- Resize and crop, as diffusers' ``train_unconditional.py`` does with ``--center_crop``: ``center_crop=True`` resizes
  (bilinear, antialiased by PIL) so the short side equals ``resolution`` (long side ``int(resolution * long /
  short)``, torchvision's ``Resize(int)`` arithmetic) and then crops the centre square (offset ``round((size -
  resolution) / 2)``, torchvision's ``CenterCrop``). diffusers replaces the centre crop by a ``RandomCrop`` when the
  flag is off; a random crop cannot survive decoding once, so here ``center_crop=False`` resizes the whole image to
  ``resolution x resolution`` (bilinear, the aspect ratio may change) and nothing is cut off.
- Alpha: images with transparency (RGBA, LA, PA, palette or L/RGB with a ``transparency`` entry) are composited on a
  white background (diffusers' ``image.convert("RGB")`` drops alpha instead, which turns the transparent background
  of a logo into whatever colour the hidden pixels hold, often black).
- Channels: ``channels=3`` converts every mode to RGB (CMYK and YCbCr by PIL's conversion, ``1``/``L`` repeated);
  ``channels=1`` converts to RGB first and then to L with ITU-R 601-2 luma ``L = 0.299 R + 0.587 G + 0.114 B``
  (pure red gives 76). 16-bit images (``I;16*`` and ``I``) are scaled by 255 / 65535; float images (``F``) are read
  as values in [0, 1]. Multi-frame files (GIF, TIFF) give their first frame. EXIF orientation is applied.
- Skipped, counted in the report and summarised in ONE :class:`SkippedImagesWarning`: files that are not images
  (by extension, or because PIL cannot open them), corrupt or truncated images (decoded fully with PIL's
  ``LOAD_TRUNCATED_IMAGES`` forced off), images whose short side is smaller than ``resolution`` and modes PIL
  cannot convert. Hidden files and folders (name starting with ``.``) are ignored silently.
- Random horizontal flip is not baked into the tensor: :class:`UInt8ImageDataset` draws it per item (see there).

Example::

    images, report = load_image_tensor("builtin:digits", resolution=16, channels=1)  # uint8 [1797 x 1 x 16 x 16]
    dataset = UInt8ImageDataset(images, random_flip=True)  # items: float32 [1 x 16 x 16] in [-1, 1]
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ExifTags, Image, ImageFile, ImageOps

logger = logging.getLogger(__name__)

BUILTIN_DATASETS = ("builtin:digits",)
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
VALID_CHANNELS = (1, 3)
MAX_REASONS_SHOWN = 5

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_WHITE = (255, 255, 255, 255)


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


class _SkipImage(Exception):
    """Internal: one file or row cannot be used; the message is the reason recorded in the report."""


# ----------------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------------


def load_image_tensor(
    dataset_name: str | None = "builtin:digits",
    train_data_dir: str | None = None,
    image_column: str | None = None,
    resolution: int = 16,
    channels: int = 1,
    center_crop: bool = True,
    split: str = "train",
    cache_dir: str | None = None,
    max_images: int | None = None,
) -> tuple[torch.Tensor, ImageDatasetReport]:
    """Decode a whole image dataset once into a uint8 tensor.

    Args:
        dataset_name: ``"builtin:digits"`` or a name/path for ``datasets.load_dataset``. Pass ``None`` when
            ``train_data_dir`` is given: exactly one of the two must be set.
        train_data_dir: a local folder of images, walked recursively in sorted path order.
        image_column: Hub datasets only; default: the first ``Image``-typed column, else ``"image"`` or ``"img"``.
        resolution: height and width of the output images.
        channels: 1 (L) or 3 (RGB), the UNet's ``in_channels``.
        center_crop: resize the short side to ``resolution`` then crop the centre (True), or resize the whole image
            to ``resolution x resolution`` (False). See the module docstring.
        split: Hub datasets only.
        cache_dir: passed to ``datasets.load_dataset``.
        max_images: stop after this many usable images (files or rows after that are not examined).

    Returns:
        ``(images, report)``: ``images`` is a uint8 tensor [N x channels x resolution x resolution] with values
        0..255; ``report`` counts the decoded and skipped items and gives a reason per skipped item.

    Raises:
        ValueError: bad arguments (listing what is accepted), no usable image, a dataset that cannot be loaded.
        FileNotFoundError: ``train_data_dir`` does not exist.
    """
    _check_arguments(dataset_name, train_data_dir, image_column, resolution, channels, split, max_images)
    if train_data_dir is not None:
        source = f"train_data_dir {train_data_dir!r}"
        images, report = _load_folder(train_data_dir, resolution, channels, center_crop, max_images)
    elif dataset_name in BUILTIN_DATASETS:
        source = dataset_name
        images, report = _load_digits(resolution, channels, max_images)
    else:
        source = f"dataset {dataset_name!r} (split {split!r})"
        images, report = _load_hub_dataset(
            dataset_name, image_column, resolution, channels, center_crop, split, cache_dir, max_images
        )

    if report.num_images == 0:
        raise ValueError(f"0 images usable in {source}, {report.num_skipped} skipped: {report.summary()}.")
    if report.num_skipped:
        warnings.warn(
            f"Skipped {report.num_skipped} of {report.num_images + report.num_skipped} items in {source}: "
            f"{report.summary()}. The full list is in the report's `skipped`.",
            SkippedImagesWarning,
            stacklevel=2,
        )
    megabytes = images.numel() * images.element_size() / 2**20
    logger.info(
        "Loaded %d images from %s into a uint8 tensor [%s] (%.1f MB); %d skipped.",
        report.num_images,
        source,
        " x ".join(str(size) for size in images.shape),
        megabytes,
        report.num_skipped,
    )
    return images, report


def to_model_range(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Map uint8 pixels 0..255 to `dtype` in [-1, 1] (``x / 127.5 - 1``), the range the DDPM is trained on.

    Args:
        images: uint8 tensor of any shape, e.g. [N x C x H x W] or [C x H x W].
        dtype: float32 for training; the likelihood uses float64 (the pixels are then the exact bin centres).
    """
    if images.dtype != torch.uint8:
        raise ValueError(f"to_model_range expects a uint8 tensor with values 0..255, got dtype {images.dtype}.")
    return images.to(dtype) / 127.5 - 1.0


def from_model_range(images: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_model_range`: float in [-1, 1] to uint8 0..255 (``round((x + 1) * 127.5)``, clamped).

    Args:
        images: floating-point tensor of any shape, e.g. [N x C x H x W].
    """
    if not images.is_floating_point():
        raise ValueError(f"from_model_range expects a floating-point tensor in [-1, 1], got dtype {images.dtype}.")
    return ((images.to(torch.float32) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


class UInt8ImageDataset(torch.utils.data.Dataset):
    """Serve a uint8 image tensor as float32 [C x H x W] items in [-1, 1], with an optional horizontal flip.

    The flip is drawn per item as ``torch.rand(1, generator=generator) < 0.5`` (the draw torchvision's
    ``RandomHorizontalFlip`` makes, so the flips match diffusers' training script for the same RNG state):

    - ``dataset[i]`` (what ``DataLoader`` calls) uses the global torch RNG. It is reproducible after
      ``torch.manual_seed(seed)``: with ``num_workers=0`` the flips come from the main process RNG; with workers,
      PyTorch seeds each worker from the main RNG (or the DataLoader's ``generator``), so a fixed seed and a fixed
      ``num_workers`` give the same flips.
    - ``dataset.get_item(i, generator)`` draws from the given ``torch.Generator`` instead, for full control.

    With ``random_flip=False`` no random number is drawn, so the RNG stream is the same as without this dataset.

    Args:
        tensor: uint8 images [N x C x H x W] (from :func:`load_image_tensor`).
        random_flip: flip each item left-right with probability 1/2.
    """

    def __init__(self, tensor: torch.Tensor, random_flip: bool = False):
        if tensor.dtype != torch.uint8 or tensor.ndim != 4:
            raise ValueError(
                f"UInt8ImageDataset expects a uint8 tensor [N x C x H x W], got dtype {tensor.dtype} "
                f"and shape {list(tensor.shape)}."
            )
        self.tensor = tensor
        self.random_flip = random_flip

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.get_item(index)

    def get_item(self, index: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Item ``index`` as float32 [C x H x W] in [-1, 1], the flip drawn from ``generator`` (None: global RNG)."""
        image = to_model_range(self.tensor[index])
        if self.random_flip and torch.rand(1, generator=generator).item() < 0.5:
            image = image.flip(-1)
        return image


# ----------------------------------------------------------------------------------------------------------------
# Argument checks (before any heavy work)
# ----------------------------------------------------------------------------------------------------------------


def _check_arguments(
    dataset_name: str | None,
    train_data_dir: str | None,
    image_column: str | None,
    resolution: int,
    channels: int,
    split: str,
    max_images: int | None,
) -> None:
    if channels not in VALID_CHANNELS:
        raise ValueError(f"channels must be one of {VALID_CHANNELS} (L or RGB), got {channels!r}.")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be an integer >= 1, got {resolution!r}.")
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1):
        raise ValueError(f"max_images must be None (all images) or an integer >= 1, got {max_images!r}.")
    if (dataset_name is None) == (train_data_dir is None):
        given = "both were given" if dataset_name is not None else "neither was given"
        raise ValueError(
            f"Give exactly one image source, dataset_name or train_data_dir; {given} "
            f"(dataset_name={dataset_name!r}, train_data_dir={train_data_dir!r}). Accepted: dataset_name="
            f"{' or '.join(BUILTIN_DATASETS)} or a Hub dataset name, or train_data_dir=<image folder> with "
            "dataset_name=None."
        )
    if dataset_name is not None:
        if dataset_name == "":
            raise ValueError("dataset_name is empty; give a Hub dataset name or one of " + ", ".join(BUILTIN_DATASETS))
        if dataset_name.startswith("builtin:") and dataset_name not in BUILTIN_DATASETS:
            raise ValueError(
                f"Unknown builtin dataset {dataset_name!r}; valid builtin names: {list(BUILTIN_DATASETS)}."
            )
    hub = dataset_name is not None and dataset_name not in BUILTIN_DATASETS
    if not hub:
        what = f"train_data_dir {train_data_dir!r}" if train_data_dir is not None else dataset_name
        if image_column is not None:
            raise ValueError(f"image_column applies only to Hub datasets, not to {what}; got {image_column!r}.")
        if split != "train":
            raise ValueError(
                f"split applies only to Hub datasets; {what} has the single split 'train', got {split!r}."
            )
    elif not isinstance(split, str) or not split:
        raise ValueError(f"split must be a split name such as 'train', got {split!r}.")
    if train_data_dir is not None:
        if not os.path.exists(train_data_dir):
            raise FileNotFoundError(f"train_data_dir {train_data_dir!r} does not exist; give a folder of images.")
        if not os.path.isdir(train_data_dir):
            raise ValueError(f"train_data_dir {train_data_dir!r} is a file, not a folder; give a folder of images.")


# ----------------------------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------------------------


def _load_digits(resolution: int, channels: int, max_images: int | None) -> tuple[torch.Tensor, ImageDatasetReport]:
    """scikit-learn digits [1797 x 8 x 8] in 0..16 -> uint8 [N x channels x resolution x resolution]."""
    from sklearn.datasets import load_digits

    digits = load_digits().images[:max_images]  # [N x 8 x 8] float64, 0..16
    images = torch.from_numpy(digits).to(torch.float32).mul_(255.0 / 16.0).unsqueeze(1)  # [N x 1 x 8 x 8], 0..255
    if resolution != images.shape[-1]:
        # Bilinear like the folder path; antialias only matters when shrinking below 8x8.
        images = F.interpolate(images, size=(resolution, resolution), mode="bilinear", antialias=True)
    images = images.round_().clamp_(0, 255).to(torch.uint8)
    if channels == 3:
        images = images.repeat(1, 3, 1, 1)
    return images, ImageDatasetReport(num_images=images.shape[0], num_skipped=0)


def _load_folder(
    root: str, resolution: int, channels: int, center_crop: bool, max_images: int | None
) -> tuple[torch.Tensor, ImageDatasetReport]:
    image_paths, skipped = _list_folder(root)
    if not image_paths:
        report = ImageDatasetReport(num_images=0, num_skipped=len(skipped), skipped=skipped)
        raise ValueError(
            f"0 images usable in train_data_dir {root!r}, {len(skipped)} skipped: {report.summary()}. "
            f"Accepted extensions: {', '.join(IMAGE_EXTENSIONS)} (searched recursively)."
        )

    def items() -> Iterator[tuple[str, Callable[[], Image.Image]]]:
        for relative_path in image_paths:
            path = os.path.join(root, relative_path)
            yield relative_path, lambda path=path: _open_file(path, resolution)

    capacity = len(image_paths) if max_images is None else min(max_images, len(image_paths))
    return _decode_into_tensor(items(), capacity, resolution, channels, center_crop, skipped)


def _list_folder(root: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Relative paths (``/``-separated, sorted) of files with an image extension, and the other files as skipped."""
    image_paths, other_paths = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [name for name in dirnames if not name.startswith(".")]  # .git, .ipynb_checkpoints
        for name in filenames:
            if name.startswith("."):  # .DS_Store and friends
                continue
            relative_path = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            extension = os.path.splitext(name)[1].lower()
            (image_paths if extension in IMAGE_EXTENSIONS else other_paths).append(relative_path)
    skipped = [
        (path, f"not an image file extension (accepted: {', '.join(IMAGE_EXTENSIONS)})")
        for path in sorted(other_paths)
    ]
    return sorted(image_paths), skipped


def _open_file(path: str, resolution: int) -> Image.Image:
    """Open and fully decode one image file; too small images are rejected before decoding the pixels."""
    try:
        with Image.open(path) as image:
            _check_size(image, resolution)
            image.load()  # decode everything now: truncated files fail here, not later in training
            if image.getexif().get(ExifTags.Base.Orientation) is not None:
                image = ImageOps.exif_transpose(image)
            return image
    except _SkipImage:
        raise
    except Exception as exc:  # PIL plugins raise many types on bad data (OSError, SyntaxError, struct.error, ...)
        raise _SkipImage(f"cannot decode as an image ({type(exc).__name__}: {exc})") from exc


def _load_hub_dataset(
    dataset_name: str,
    image_column: str | None,
    resolution: int,
    channels: int,
    center_crop: bool,
    split: str,
    cache_dir: str | None,
    max_images: int | None,
) -> tuple[torch.Tensor, ImageDatasetReport]:
    import datasets

    try:
        dataset = datasets.load_dataset(dataset_name, split=split, cache_dir=cache_dir)
    except Exception as exc:  # ConnectionError offline, DatasetNotFoundError, unknown split, ...
        raise ValueError(
            f"Could not load dataset {dataset_name!r} (split {split!r}) with datasets.load_dataset: "
            f"{type(exc).__name__}: {exc}. This machine may be offline (Hub datasets must then already be in the "
            "datasets cache), or the name or split may be wrong. For a local image folder use train_data_dir "
            "(--train_data_dir DIR); to train without any download use dataset_name='builtin:digits'."
        ) from exc

    column = _resolve_image_column(dataset, image_column, dataset_name)
    feature = dataset.features[column]
    # Read the raw {"bytes", "path"} values and decode one row at a time, so that a bad row is skipped, not fatal.
    try:
        raw = dataset.select_columns([column]).cast_column(column, datasets.Image(decode=False))
    except Exception as exc:
        raise ValueError(
            f"Column {column!r} of dataset {dataset_name!r} has type {feature} and cannot be read as images; "
            f"give image_column=<an Image column>. Columns: {dataset.column_names}."
        ) from exc
    decoder = datasets.Image(mode=feature.mode if isinstance(feature, datasets.Image) else None)

    def items() -> Iterator[tuple[str, Callable[[], Image.Image]]]:
        row = 0
        for batch in raw.iter(batch_size=256):
            for value in batch[column]:
                name = value.get("path") if isinstance(value, dict) else None
                item_id = f"row {row}" + (f" ({name})" if name else "")
                yield item_id, lambda value=value: _decode_hub_value(decoder, value)
                row += 1

    capacity = len(raw) if max_images is None else min(max_images, len(raw))
    return _decode_into_tensor(items(), capacity, resolution, channels, center_crop, skipped=[])


def _resolve_image_column(dataset, image_column: str | None, dataset_name: str) -> str:
    import datasets

    columns = dataset.column_names
    if image_column is not None:
        if image_column not in columns:
            raise ValueError(
                f"image_column {image_column!r} is not a column of dataset {dataset_name!r}; columns: {columns}."
            )
        return image_column
    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):
            return name
    for name in ("image", "img"):
        if name in columns:
            return name
    raise ValueError(
        f"Dataset {dataset_name!r} has no Image-typed column and no column named 'image' or 'img'; its columns are "
        f"{columns}. Give image_column=<column>."
    )


def _decode_hub_value(decoder, value) -> Image.Image:
    if value is None:
        raise _SkipImage("no image in this row (None)")
    try:
        image = decoder.decode_example(value)
    except Exception as exc:  # as in _open_file: PIL raises many types on bad data
        raise _SkipImage(f"cannot decode as an image ({type(exc).__name__}: {exc})") from exc
    if image is None:
        raise _SkipImage("no image in this row (None)")
    return image


# ----------------------------------------------------------------------------------------------------------------
# Decoding: one image at a time into a preallocated tensor
# ----------------------------------------------------------------------------------------------------------------


@contextmanager
def _strict_truncation_check() -> Iterator[None]:
    """Make PIL raise on truncated files even if some other code turned ``LOAD_TRUNCATED_IMAGES`` on."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _decode_into_tensor(
    items: Iterable[tuple[str, Callable[[], Image.Image]]],
    capacity: int,
    resolution: int,
    channels: int,
    center_crop: bool,
    skipped: list[tuple[str, str]],
) -> tuple[torch.Tensor, ImageDatasetReport]:
    """Fill a preallocated uint8 [capacity x C x H x W] tensor; only one PIL image is alive at a time."""
    images = torch.empty((capacity, channels, resolution, resolution), dtype=torch.uint8)
    count = 0
    with _strict_truncation_check():
        for item_id, load in items:
            if count == capacity:
                break
            try:
                images[count] = _image_to_tensor(load(), resolution, channels, center_crop)
            except _SkipImage as reason:
                skipped.append((item_id, str(reason)))
                continue
            count += 1
    if count < capacity:
        images = images[:count].clone()  # own exactly the usable rows
    return images, ImageDatasetReport(num_images=count, num_skipped=len(skipped), skipped=skipped)


def _check_size(image: Image.Image, resolution: int) -> None:
    width, height = image.size
    if min(width, height) < resolution:
        raise _SkipImage(f"too small: {width}x{height}, short side {min(width, height)} < resolution {resolution}")


def _image_to_tensor(image: Image.Image, resolution: int, channels: int, center_crop: bool) -> torch.Tensor:
    """A decoded PIL image of any mode and size -> uint8 [channels x resolution x resolution]."""
    _check_size(image, resolution)
    image = _resize(_convert_mode(image, channels), resolution, center_crop)
    pixels = np.asarray(image, dtype=np.uint8)  # [H x W] (L) or [H x W x 3] (RGB)
    pixels = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(pixels))


def _convert_mode(image: Image.Image, channels: int) -> Image.Image:
    """Any PIL mode -> "L" (channels=1) or "RGB" (channels=3); alpha is composited on white."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.float64) * (255.0 / 65535.0)
        image = Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))
    elif mode == "F":
        values = np.asarray(image).astype(np.float64) * 255.0
        image = Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))
    elif mode in _ALPHA_MODES or "transparency" in image.info:
        background = Image.new("RGBA", image.size, _WHITE)
        image = Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")

    target = "L" if channels == 1 else "RGB"
    try:
        if channels == 1 and image.mode not in ("1", "L", "RGB"):
            image = image.convert("RGB")  # CMYK, YCbCr, P, ... -> RGB first so every mode gets the same luma
        return image if image.mode == target else image.convert(target)
    except ValueError as exc:
        raise _SkipImage(f"unsupported image mode {mode!r} ({exc})") from exc


def _resize(image: Image.Image, resolution: int, center_crop: bool) -> Image.Image:
    """Short side to ``resolution`` + centre crop (torchvision Resize(int) + CenterCrop arithmetic), or squash."""
    if not center_crop:
        return image.resize((resolution, resolution), Image.Resampling.BILINEAR)
    width, height = image.size
    if width <= height:
        new_width, new_height = resolution, int(resolution * height / width)
    else:
        new_width, new_height = int(resolution * width / height), resolution
    if (new_width, new_height) != (width, height):
        image = image.resize((new_width, new_height), Image.Resampling.BILINEAR)
    left = int(round((new_width - resolution) / 2.0))
    top = int(round((new_height - resolution) / 2.0))
    return image.crop((left, top, left + resolution, top + resolution))
