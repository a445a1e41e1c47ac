"""Image loading for DDPM training: every image is decoded once into one uint8 tensor [N x C x H x W].

Where it goes (`DataOptions.load`): by default into the decoded cache on disk (`ddpm_hub.data.cache`), built once per
machine by worker processes (`ddpm_hub.data.parallel`) and memory-mapped by every process, so that a process's
memory does not grow with the dataset; with ``decoded_cache=False`` (and in `load_images`) into this process's RAM.
A dataset too large for a disk is streamed instead (`ddpm_hub.data.streaming`). Sizes are square (``resolution``)
or (height, width).

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
  resolution) / 2)``, torchvision's ``CenterCrop``). For a (height, width) size the image is resized to just cover
  H x W the same way (the side that limits becomes its target, the other follows) and the centre H x W is cropped.
  diffusers replaces the centre crop by a ``RandomCrop`` when the flag is off; a random crop cannot survive decoding
  once, so here ``center_crop=False`` resizes the whole image to H x W (bilinear, the aspect ratio may change) and
  nothing is cut off. Images are never enlarged: one smaller than H x W is skipped as too small.
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
    decoded = DataOptions(train_data_dir="photos", resolution=(32, 64)).load(channels=3)  # from the decoded cache
"""

from .decode import DECODER_VERSION, SkipImage, image_size
from .folders import IMAGE_EXTENSIONS
from .options import DataOptions, parse_resolution
from .sources import (
    BUILTIN_DATASETS,
    VALID_CHANNELS,
    DecodedImages,
    ImageDatasetReport,
    SkippedImagesWarning,
    load_image_tensor,
    load_images,
)
from .tensors import UInt8ImageDataset, from_model_range, to_model_range

__all__ = [
    "BUILTIN_DATASETS",
    "DECODER_VERSION",
    "IMAGE_EXTENSIONS",
    "VALID_CHANNELS",
    "DataOptions",
    "DecodedImages",
    "ImageDatasetReport",
    "SkipImage",
    "SkippedImagesWarning",
    "UInt8ImageDataset",
    "from_model_range",
    "image_size",
    "load_image_tensor",
    "load_images",
    "parse_resolution",
    "to_model_range",
]
