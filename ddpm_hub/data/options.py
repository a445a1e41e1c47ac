"""`DataOptions`: which images, and how they are decoded; one object for training and `ddpm-hub eval` alike."""

import argparse
import re
from dataclasses import dataclass, replace

from ..errors import UsageError
from ..options import option
from .cache import Coordinator, load_cached
from .decode import Resolution, is_size
from .hub_datasets import check_no_hub_version
from .parallel import DecodeSettings, default_workers
from .sources import BUILTIN_DATASETS, CAPTION_COLUMN, DecodedImages, check_source, load_images, plan_source


def parse_resolution(value) -> Resolution:
    """`16`, `"16"` -> 16; `"8x16"`, `[8, 16]` -> (8, 16) (height x width); a square pair -> its int."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", value)
        if match is None:
            raise argparse.ArgumentTypeError(f"{value!r} is not a size: give N (square) or HxW, e.g. 32 or 8x16")
        value = int(match.group(1)) if match.group(2) is None else (int(match.group(1)), int(match.group(2)))
    if not is_size(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a size: give an integer >= 1 (square) or [height, width] of them"
        )
    sizes = list(value) if isinstance(value, (list, tuple)) else [value]
    return sizes[0] if len(sizes) == 1 or sizes[0] == sizes[1] else (sizes[0], sizes[1])


@dataclass(frozen=True)
class DataOptions:
    """The image source and its decoding. Exactly one of `dataset_name` and `train_data_dir`; neither means digits."""

    dataset_name: str | None = option(
        None,
        f"a Hub dataset name or a datasets.load_dataset path (parquet / webdataset shards), or "
        f"{' / '.join(BUILTIN_DATASETS)} (scikit-learn's digits, offline); default: {BUILTIN_DATASETS[0]} unless "
        "--train_data_dir is given",
        "data",
    )
    dataset_config_name: str | None = option(
        None,
        "the configuration of a Hub dataset that has several (datasets.load_dataset's name, e.g. 'en' or "
        "'cifar10'); default: its only or default one",
        "data",
    )
    dataset_revision: str | None = option(
        None,
        "the branch, tag or commit of a Hub dataset to read: pins the data, so that a resumed run or a later "
        "evaluation reads the same rows (default: main)",
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
    caption_column: str | None = option(
        None,
        f"a text-to-image model's captions: the text column of a Hub dataset or of streamed shards (a string or a "
        f"list of strings per row: one is drawn per epoch), or the key in a folder's metadata.jsonl (default: "
        f"{CAPTION_COLUMN!r}); builtin:digit-pairs has its own",
        "data",
    )
    cache_dir: str | None = option(
        None,
        "where decoded images are cached (in <cache_dir>/ddpm_hub_decoded) and Hub datasets are downloaded "
        "(default: the datasets cache, $HF_DATASETS_CACHE)",
        "data",
    )
    decoded_cache: bool = option(
        True,
        "decode once per machine into a memory-mapped uint8 cache under --cache_dir, shared by the processes of the "
        "machine and reused by later runs and ddpm-hub eval; --no-decoded_cache decodes into each process's RAM",
        "data",
    )
    preprocessing_num_workers: int | None = option(
        None, "processes that decode images (default: the physical cores)", "data", at_least=1
    )
    streaming: bool = option(
        False,
        "stream a Hub dataset (or parquet / webdataset shards) instead of downloading and decoding it first: each "
        "process reads its own part (datasets.distributed.split_dataset_by_node); needs --max_train_steps",
        "data",
    )
    shuffle_buffer_size: int = option(
        0,
        "--streaming: shuffle the shards and a buffer of this many examples per epoch (datasets' shuffle; 0: the "
        "stream's own order). A resumed run is bit-identical only with 0: the examples in the buffer at the "
        "checkpoint are not read again in that epoch",
        "data",
        at_least=0,
    )
    resolution: int | tuple[int, int] | None = option(
        None,
        "image size: N (square) or HxW, e.g. 8x16 (default: the UNet's sample_size)",
        "data",
        at_least=1,
        parse=parse_resolution,
    )
    random_crop: int | tuple[int, int] | None = option(
        None,
        "training: train on a random crop of this size (N or HxW) of each decoded image, drawn per image and batch "
        "from the seeded stream; the images are decoded at --resolution (default: no crop, the whole image)",
        "data",
        at_least=1,
        parse=parse_resolution,
    )
    center_crop: bool = option(
        True, "resize to cover the size and crop the centre; --no-center_crop resizes the whole image instead", "data"
    )
    max_images: int | None = option(
        None,
        "use only the first N usable images (default: all)",
        "data",
        aliases=("--max_train_samples",),
        at_least=1,
    )

    @property
    def training_size(self) -> Resolution:
        """The size training sees: the random crop, else the decoded resolution."""
        return self.random_crop or self.resolution

    def resolved(self, resolution: Resolution | list | None = None) -> "DataOptions":
        """The defaults filled in: digits when no source is given, the model's resolution when none is."""
        dataset_name = self.dataset_name if (self.dataset_name or self.train_data_dir) else BUILTIN_DATASETS[0]
        size = self.resolution or (parse_resolution(resolution) if resolution is not None else None)
        return replace(self, dataset_name=dataset_name, resolution=size)

    def check(self) -> None:
        """The source and the settings that apply to it (a folder that exists), before any work."""
        resolved = self.resolved()
        check_source(resolved.dataset_name, self.train_data_dir, self.image_column, self.dataset_split)
        if self.train_data_dir is not None or resolved.dataset_name in BUILTIN_DATASETS:
            check_no_hub_version(self.source, self.dataset_config_name, self.dataset_revision)
        if self.streaming:
            from .streaming import check_streaming

            check_streaming(self)
        elif self.shuffle_buffer_size:
            raise UsageError(
                f"--shuffle_buffer_size {self.shuffle_buffer_size} applies to --streaming only: a decoded dataset is "
                "shuffled completely every epoch."
            )

    def load(self, channels: int, coordinator: Coordinator | None = None, captions: bool = False) -> DecodedImages:
        """
        The images, decoded once: uint8 `[N x channels x H x W]` memory-mapped from the decoded cache (built by the
        local main process of a distributed run, see `coordinator`), or in RAM with --no-decoded_cache (or the first
        --max_images of a stream with --streaming); labels; with `captions`, each image's captions (an image without
        one is skipped); what was skipped. Training streams with `ddpm_hub.data.streaming.open_stream` instead.
        """
        resolved = self.resolved()
        if self.streaming:
            from .streaming import load_streamed

            return load_streamed(self, channels, captions)
        arguments = dict(
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
            caption_column=self.caption_column_for(captions),
            dataset_config_name=self.dataset_config_name,
            dataset_revision=self.dataset_revision,
        )
        workers = self.preprocessing_num_workers or default_workers()
        if not self.decoded_cache:
            return load_images(**arguments, num_workers=workers)
        settings = DecodeSettings(resolved.resolution, channels, self.center_crop)
        return load_cached(plan_source(**arguments), settings, self.max_images, self.cache_dir, workers, coordinator)

    def caption_column_for(self, captions: bool) -> str | None:
        """The caption column to read: --caption_column, else the default, when captions are wanted; else None."""
        if not captions:
            return None
        return self.caption_column or CAPTION_COLUMN

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
        version = [self.dataset_config_name] * bool(self.dataset_config_name) + [self.split] * bool(self.split)
        version += [f"revision {self.dataset_revision}"] * bool(self.dataset_revision)
        source += f" ({', '.join(version)})" if version else ""
        source += ", streamed" if self.streaming else ""
        return source if self.max_images is None else f"{source}, first {self.max_images}"
