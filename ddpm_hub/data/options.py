"""`DataOptions`: which images, and how they are decoded; one object for training and `ddpm-hub eval` alike."""

from dataclasses import dataclass, replace

from ..options import option
from .sources import BUILTIN_DATASETS, DecodedImages, check_source, load_images


@dataclass(frozen=True)
class DataOptions:
    """The image source and its decoding. Exactly one of `dataset_name` and `train_data_dir`; neither means digits."""

    dataset_name: str | None = option(
        None,
        f"a Hub dataset name, or {' / '.join(BUILTIN_DATASETS)} (scikit-learn's digits, offline); default: "
        f"{BUILTIN_DATASETS[0]} unless --train_data_dir is given",
        "data",
    )
    dataset_split: str = option("train", "the split of a Hub dataset", "data", aliases=("--split",))
    train_data_dir: str | None = option(
        None, "a local folder of images (recursive); unreadable files are skipped and reported", "data"
    )
    image_column: str | None = option(
        None, "the image column of a Hub dataset (default: its first Image column, else 'image' or 'img')", "data"
    )
    class_column: str | None = option(
        None,
        "the class-label column of a Hub dataset, for a class-conditional model (default: its first ClassLabel "
        "column); folders take their first-level subfolders as classes, builtin:digits its digits",
        "data",
    )
    cache_dir: str | None = option(None, "where Hub datasets are cached (default: the datasets cache)", "data")
    resolution: int | None = option(None, "image size (default: the UNet's sample_size)", "data", at_least=1)
    center_crop: bool = option(
        True, "resize the short side and crop the centre; --no-center_crop resizes the whole image instead", "data"
    )
    max_images: int | None = option(
        None,
        "use only the first N usable images (default: all)",
        "data",
        aliases=("--max_train_samples",),
        at_least=1,
    )

    def resolved(self, resolution: int | None = None) -> "DataOptions":
        """The defaults filled in: digits when no source is given, the model's resolution when none is."""
        dataset_name = self.dataset_name if (self.dataset_name or self.train_data_dir) else BUILTIN_DATASETS[0]
        return replace(self, dataset_name=dataset_name, resolution=self.resolution or resolution)

    def check(self) -> None:
        """The source and the settings that apply to it (a folder that exists), before any work."""
        resolved = self.resolved()
        check_source(resolved.dataset_name, self.train_data_dir, self.image_column, self.dataset_split)

    def load(self, channels: int) -> DecodedImages:
        """Decode the images once: uint8 `[N x channels x resolution x resolution]`, labels, what was skipped."""
        resolved = self.resolved()
        return load_images(
            dataset_name=resolved.dataset_name,
            train_data_dir=self.train_data_dir,
            image_column=self.image_column,
            resolution=resolved.resolution,
            channels=channels,
            center_crop=self.center_crop,
            split=self.dataset_split,
            cache_dir=self.cache_dir,
            max_images=self.max_images,
            class_column=self.class_column,
        )

    @property
    def source(self) -> str:
        """The folder or dataset name, as the run record and the model card give it."""
        return self.train_data_dir or self.resolved().dataset_name

    @property
    def split(self) -> str | None:
        """The split of a Hub dataset; None for a folder or a built-in dataset, which have one."""
        builtin = self.resolved().dataset_name in BUILTIN_DATASETS
        return None if self.train_data_dir or builtin else self.dataset_split

    def label(self) -> str:
        """A human description: `folder X`, `cifar10 (train)`, with `, first N` when limited."""
        source = f"folder {self.train_data_dir}" if self.train_data_dir else self.resolved().dataset_name
        source += f" ({self.split})" if self.split else ""
        return source if self.max_images is None else f"{source}, first {self.max_images}"
