"""Tests for ddpm_hub.data: decode once into uint8 [N x C x H x W], skip bad files with one warning, clear errors."""

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm_hub.data import (
    IMAGE_EXTENSIONS,
    ImageDatasetReport,
    SkippedImagesWarning,
    UInt8ImageDataset,
    from_model_range,
    load_image_tensor,
    load_images,
    to_model_range,
)

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
# ITU-R 601-2 luma as PIL computes it: L = (19595 R + 38470 G + 7471 B + 2**15) >> 16.
LUMA = {RED: 76, GREEN: 150, BLUE: 29, WHITE: 255}


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _noise_png_bytes(size: int = 24) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return _png_bytes(Image.fromarray(pixels))


@pytest.fixture
def image_folder(tmp_path):
    """4 usable images (sorted: a_red, b_rgba, c_palette, sub/d_gray), 4 files to skip, 2 hidden ones to ignore."""
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    # usable: a pure red RGB PNG, not square (the centre crop keeps it red)
    Image.new("RGB", (30, 20), RED).save(root / "a_red.png")
    # usable: RGBA, fully transparent blue -> composited on white
    Image.new("RGBA", (20, 20), BLUE + (0,)).save(root / "b_rgba.png")
    # usable: palette with a transparent index 0 (left half) and opaque green index 1 (right half)
    palette = Image.new("P", (20, 20), 0)
    palette.putpalette(list(BLUE) + list(GREEN))
    palette.paste(1, (10, 0, 20, 20))
    palette.save(root / "c_palette.png", transparency=0)
    # usable: grayscale JPEG in a subfolder (uppercase extension)
    Image.new("L", (25, 25), 200).save(root / "sub" / "d_gray.JPG", quality=95)
    # skipped: truncated PNG (first half of the bytes of a valid one)
    noise = _noise_png_bytes()
    (root / "e_truncated.png").write_bytes(noise[: len(noise) // 2])
    # skipped: text pretending to be a PNG
    (root / "f_text.png").write_text("this is not an image")
    # skipped: non-image extension
    (root / "notes.txt").write_text("some notes")
    # skipped: smaller than the resolution on its short side
    Image.new("RGB", (40, 8), RED).save(root / "sub" / "g_small.png")
    # ignored silently: hidden files and folders
    (root / ".DS_Store").write_bytes(b"\x00\x01")
    Image.new("RGB", (20, 20), RED).save(root / ".hidden" / "h.png")
    return root


# ------------------------------------------------------------------------------------------------ builtin digits


def test_digits_shape_dtype_range():
    images, report = load_image_tensor("builtin:digits", resolution=16, channels=1)
    assert images.shape == (1797, 1, 16, 16)
    assert images.dtype == torch.uint8
    assert images.min() == 0 and images.max() == 255  # 0..16 scaled to the full range
    assert report == ImageDatasetReport(num_images=1797, num_skipped=0, skipped=[])


def test_digits_native_resolution_is_exact_scaling():
    from sklearn.datasets import load_digits

    images, _ = load_image_tensor("builtin:digits", resolution=8, channels=1, max_images=10)
    expected = np.round(load_digits().images[:10] * 255.0 / 16.0).astype(np.uint8)
    assert images.shape == (10, 1, 8, 8)
    np.testing.assert_array_equal(images[:, 0].numpy(), expected)


def test_digits_three_channels_repeat_the_gray_channel():
    gray, _ = load_image_tensor("builtin:digits", resolution=12, channels=1, max_images=5)
    rgb, _ = load_image_tensor("builtin:digits", resolution=12, channels=3, max_images=5)
    assert rgb.shape == (5, 3, 12, 12)
    for channel in range(3):
        assert torch.equal(rgb[:, channel], gray[:, 0])


# ---------------------------------------------------------------------------------------------------- local folder


def test_folder_counts_single_warning_and_sorted_order(image_folder):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images, report = load_image_tensor(dataset_name=None, train_data_dir=str(image_folder), resolution=16)

    assert images.shape == (4, 1, 16, 16) and images.dtype == torch.uint8
    assert (report.num_images, report.num_skipped) == (4, 4)
    skipped = dict(report.skipped)
    assert set(skipped) == {"e_truncated.png", "f_text.png", "notes.txt", "sub/g_small.png"}
    assert "truncated" in skipped["e_truncated.png"]
    assert "UnidentifiedImageError" in skipped["f_text.png"]
    assert "extension" in skipped["notes.txt"]
    assert "too small" in skipped["sub/g_small.png"] and "8 < resolution 16" in skipped["sub/g_small.png"]

    ours = [w for w in caught if issubclass(w.category, SkippedImagesWarning)]
    assert len(ours) == 1
    assert "Skipped 4 of 8" in str(ours[0].message) and "notes.txt" in str(ours[0].message)

    # Sorted order a_red, b_rgba, c_palette, sub/d_gray: check each by its known colour (channels=1).
    assert torch.all(images[0] == LUMA[RED])  # pure red RGB -> L 76
    assert torch.all(images[1] == 255)  # transparent blue composited on white
    assert torch.all(images[2][:, :, :7] == 255) and torch.all(images[2][:, :, 9:] == LUMA[GREEN])
    assert torch.all((images[3].int() - 200).abs() <= 2)  # JPEG of gray 200


def test_folder_rgb_conversion_values(image_folder):
    with pytest.warns(SkippedImagesWarning, match="Skipped 4"):
        images, report = load_image_tensor(None, str(image_folder), resolution=20, channels=3)
    assert images.shape == (4, 3, 20, 20)
    assert images[0].flatten(1).T.unique(dim=0).tolist() == [list(RED)]
    assert images[1].flatten(1).T.unique(dim=0).tolist() == [list(WHITE)]
    assert torch.all(images[2][:, :, :10] == 255)  # transparent palette entry -> white
    assert images[2][:, :, 10:].flatten(1).T.unique(dim=0).tolist() == [list(GREEN)]
    assert torch.all(images[3][0] == images[3][1]) and torch.all(images[3][1] == images[3][2])  # gray -> R = G = B


def test_folder_center_crop_versus_squash(tmp_path):
    # 40x20, left half red, right half blue: resized to 20x10 then centre-cropped, 5 red and 5 blue columns.
    image = Image.new("RGB", (40, 20), RED)
    image.paste(BLUE, (20, 0, 40, 20))
    image.save(tmp_path / "halves.png")
    tall = Image.new("RGB", (20, 40), RED)
    tall.paste(BLUE, (0, 35, 20, 40))  # bottom eighth blue: cut off by a centre crop, kept by a squash
    tall.save(tmp_path / "tall.png")

    cropped, _ = load_image_tensor(None, str(tmp_path), resolution=10, channels=3, center_crop=True)
    squashed, _ = load_image_tensor(None, str(tmp_path), resolution=10, channels=3, center_crop=False)
    halves_crop, tall_crop = cropped
    assert torch.all(halves_crop[:, :, :4] == torch.tensor(RED, dtype=torch.uint8)[:, None, None])
    assert torch.all(halves_crop[:, :, 6:] == torch.tensor(BLUE, dtype=torch.uint8)[:, None, None])
    assert torch.all(tall_crop == torch.tensor(RED, dtype=torch.uint8)[:, None, None])  # blue quarter cut off
    assert torch.all(squashed[1][2, -1] > squashed[1][0, -1])  # bottom row more blue than red: blue kept
    assert squashed[0][0, :, 0].min() == 255 and squashed[0][2, :, -1].min() == 255  # red left, blue right


def test_folder_modes_16bit_cmyk_la_bilevel(tmp_path):
    Image.fromarray(np.full((16, 16), 128 * 257, dtype=np.uint16)).save(tmp_path / "a_16bit.png")  # 16-bit 128
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "b_cmyk.tif")  # red in CMYK
    Image.new("LA", (16, 16), (0, 0)).save(tmp_path / "c_la.png")  # transparent black -> white
    Image.new("1", (16, 16), 1).save(tmp_path / "d_bilevel.bmp")
    images, report = load_image_tensor(None, str(tmp_path), resolution=16, channels=1)
    assert report.num_skipped == 0
    assert [int(image.unique()) for image in images] == [128, LUMA[RED], 255, 255]


def test_folder_max_images_stops_early(image_folder):
    with pytest.warns(SkippedImagesWarning):  # notes.txt is known from the listing
        images, report = load_image_tensor(None, str(image_folder), resolution=16, max_images=2)
    assert images.shape[0] == 2 and report.num_images == 2
    assert [item for item, _ in report.skipped] == ["notes.txt"]


def test_folder_truncated_detected_even_if_pil_allows_truncated(image_folder, monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.warns(SkippedImagesWarning):
        _, report = load_image_tensor(None, str(image_folder), resolution=16)
    assert "e_truncated.png" in dict(report.skipped)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_folder_without_usable_images(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    (tmp_path / "fake.jpg").write_text("not a jpeg")
    with pytest.raises(ValueError, match="0 images usable.*2 skipped") as error:
        load_image_tensor(None, str(tmp_path), resolution=8)
    assert "fake.jpg" in str(error.value) and "readme.txt" in str(error.value)
    (tmp_path / "fake.jpg").unlink()
    with pytest.raises(ValueError, match="0 images usable.*1 skipped.*Accepted extensions: .bmp"):
        load_image_tensor(None, str(tmp_path), resolution=8)


def test_a_caption_file_naming_an_image_twice_is_refused_naming_both_lines(tmp_path):
    # issue 28: a caption file naming one image twice kept the last caption silently
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    for name in ("a.png", "sub/b.png"):
        Image.new("RGB", (8, 8), RED).save(root / name)
    lines = ['{"file_name": "a.png", "text": "a red square"}', '{"file_name": "sub/b.png", "text": "another"}']
    (root / "metadata.jsonl").write_text("\n".join([*lines, '{"file_name": "a.png", "text": "a blue one"}']) + "\n")
    with pytest.raises(
        ValueError, match="metadata.jsonl line 1 and .*metadata.jsonl line 3 both name the image 'a.png'"
    ):
        load_images(None, str(root), resolution=8, caption_column="text")
    # across files: sub/metadata.jsonl names sub/b.png again, relative to its own folder
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    (root / "sub" / "metadata.jsonl").write_text('{"file_name": "b.png", "text": "again"}\n')
    with pytest.raises(ValueError, match=r"line 2 and .*sub.metadata.jsonl line 1 both name the image 'sub/b.png'"):
        load_images(None, str(root), resolution=8, caption_column="text")
    (root / "sub" / "metadata.jsonl").unlink()
    assert load_images(None, str(root), resolution=8, caption_column="text").captions == [
        ["a red square"],
        ["another"],
    ]


# ------------------------------------------------------------------------------------------------- datasets path


@pytest.fixture
def parquet_dataset(tmp_path):
    """A local folder with one parquet file, loaded by datasets.load_dataset(path) as a Hub name would be."""
    datasets = pytest.importorskip("datasets")
    rows = [
        {"bytes": _png_bytes(Image.new("RGB", (20, 20), RED)), "path": "red.png"},
        {"bytes": b"definitely not an image", "path": "broken.png"},
        {"bytes": _png_bytes(Image.new("RGBA", (24, 20), BLUE + (0,))), "path": None},
        {"bytes": _png_bytes(Image.new("L", (4, 4), 0)), "path": None},
    ]
    dataset = datasets.Dataset.from_dict({"label": [0, 1, 2, 3], "picture": rows})
    dataset = dataset.cast_column("picture", datasets.Image())
    folder = tmp_path / "hub_like"
    (folder / "data").mkdir(parents=True)
    dataset.to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    return str(folder), str(tmp_path / "cache")


def test_datasets_path_decodes_finds_image_column_and_skips(parquet_dataset):
    path, cache_dir = parquet_dataset
    with pytest.warns(SkippedImagesWarning, match="Skipped 2 of 4"):
        images, report = load_image_tensor(path, resolution=16, channels=1, cache_dir=cache_dir)
    assert images.shape == (2, 1, 16, 16)
    assert torch.all(images[0] == LUMA[RED]) and torch.all(images[1] == 255)
    assert [item for item, _ in report.skipped] == ["row 1 (broken.png)", "row 3"]
    assert "too small" in report.skipped[1][1]


def test_datasets_path_missing_image_column(parquet_dataset):
    path, cache_dir = parquet_dataset
    with pytest.raises(ValueError, match="image_column 'image' is not a column.*columns: .'label', 'picture'"):
        load_image_tensor(path, image_column="image", cache_dir=cache_dir)


def test_datasets_path_no_image_column(tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "labels_only"
    folder.mkdir()
    datasets.Dataset.from_dict({"label": [0, 1]}).to_parquet(str(folder / "train.parquet"))
    with pytest.raises(ValueError, match="no Image-typed column.*'label'"):
        load_image_tensor(str(folder), cache_dir=str(tmp_path / "cache"))


def test_datasets_offline_name_gives_clear_error(monkeypatch, tmp_path):
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants

    # Offline mode makes load_dataset fail at once instead of retrying for ~20 s on a machine without network.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError) as error:
        load_image_tensor("ddpm-hub-tests/no-such-dataset", cache_dir=str(tmp_path))
    message = str(error.value)
    assert "'ddpm-hub-tests/no-such-dataset'" in message and "offline" in message
    assert "train_data_dir" in message and "builtin:digits" in message
    assert error.value.__cause__ is not None


# ------------------------------------------------------------------------------------------------ argument errors


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"dataset_name": "builtin:digits", "train_data_dir": "."}, ValueError, "exactly one.*both were given"),
        ({"dataset_name": None}, ValueError, "exactly one.*neither was given"),
        ({"dataset_name": "builtin:cifar"}, ValueError, r"Unknown builtin dataset 'builtin:cifar'.*'builtin:digits'"),
        ({"channels": 2}, ValueError, r"channels must be one of \(1, 3\).*2"),
        ({"resolution": 0}, ValueError, "resolution must be an integer >= 1"),
        ({"max_images": 0}, ValueError, "max_images must be None"),
        ({"split": "test"}, ValueError, "split applies only to Hub datasets"),
        ({"image_column": "img"}, ValueError, "image_column applies only to Hub datasets"),
        ({"dataset_name": None, "train_data_dir": "/no/such/folder"}, FileNotFoundError, "/no/such/folder.*not exist"),
    ],
)
def test_argument_errors(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        load_image_tensor(**kwargs)


def test_train_data_dir_is_a_file(tmp_path):
    path = tmp_path / "image.png"
    Image.new("RGB", (8, 8)).save(path)
    with pytest.raises(ValueError, match="is a file, not a folder"):
        load_image_tensor(None, str(path))


def test_documented_extensions():
    assert set(IMAGE_EXTENSIONS) == {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


# ----------------------------------------------------------------------------------------------- ranges and flips


def test_model_range_round_trip():
    pixels = torch.arange(256, dtype=torch.uint8)
    values = to_model_range(pixels)
    assert values.dtype == torch.float32 and values[0] == -1 and values[-1] == 1
    assert torch.equal(from_model_range(values), pixels)
    assert from_model_range(torch.tensor([-3.0, 3.0])).tolist() == [0, 255]
    with pytest.raises(ValueError, match="uint8"):
        to_model_range(values)
    with pytest.raises(ValueError, match="floating-point"):
        from_model_range(pixels)


def _asymmetric_images() -> torch.Tensor:
    return torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).reshape(2, 3, 4, 4) * 5  # [N x C x H x W]


def test_flip_is_reproducible_with_a_generator():
    images = _asymmetric_images()
    dataset = UInt8ImageDataset(images, random_flip=True)
    first = [dataset.get_item(0, torch.Generator().manual_seed(7 + i)) for i in range(32)]
    again = [dataset.get_item(0, torch.Generator().manual_seed(7 + i)) for i in range(32)]
    plain = to_model_range(images[0])
    flipped = plain.flip(-1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert all(torch.equal(x, plain) or torch.equal(x, flipped) for x in first)
    assert any(torch.equal(x, plain) for x in first) and any(torch.equal(x, flipped) for x in first)
    assert all(x.min() >= -1 and x.max() <= 1 and x.shape == (3, 4, 4) for x in first)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_flip_with_global_rng_follows_torch_manual_seed(num_workers):
    dataset = UInt8ImageDataset(_asymmetric_images(), random_flip=True)
    indices = [i % 2 for i in range(32)]

    def epoch() -> torch.Tensor:
        torch.manual_seed(0)
        loader = torch.utils.data.DataLoader(dataset, batch_size=8, sampler=indices, num_workers=num_workers)
        return torch.cat(list(loader))  # [32 x 3 x 4 x 4]

    first, again = epoch(), epoch()
    assert torch.equal(first, again)
    flipped = [not torch.equal(x, to_model_range(dataset.tensor[i])) for x, i in zip(first, indices)]
    assert 0 < sum(flipped) < len(indices)  # some items flipped, some not


def test_no_flip_draws_no_random_numbers():
    images = _asymmetric_images()
    dataset = UInt8ImageDataset(images, random_flip=False)
    torch.manual_seed(0)
    items = [dataset[1] for _ in range(5)]
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(1))
    assert all(torch.equal(item, to_model_range(images[1])) for item in items)
    assert len(dataset) == 2


def test_dataset_rejects_float_tensor():
    with pytest.raises(ValueError, match=r"uint8 tensor \[N x C x H x W\]"):
        UInt8ImageDataset(torch.zeros(2, 1, 4, 4), random_flip=True)


def test_loaded_images_feed_the_dataset():
    images, _ = load_image_tensor("builtin:digits", resolution=8, channels=3, max_images=4)
    item = UInt8ImageDataset(images, random_flip=False)[3]
    assert item.shape == (3, 8, 8) and item.dtype == torch.float32
    assert item.min() >= -1 and item.max() <= 1


# ------------------------------------------------------------------------------------------------- class labels


def test_digits_carry_their_targets_as_labels():
    from sklearn.datasets import load_digits

    decoded = load_images("builtin:digits", resolution=8, channels=1, max_images=50)
    assert decoded.labels.tolist() == load_digits().target[:50].tolist()
    assert decoded.label_names == [str(i) for i in range(10)]


def test_a_folder_of_class_subfolders_gives_labels_skips_kept_aligned(tmp_path):
    for name, colour in (("cat", RED), ("dog", BLUE)):
        (tmp_path / name / "deeper").mkdir(parents=True)
        Image.new("RGB", (10, 10), colour).save(tmp_path / name / "a.png")
        Image.new("RGB", (10, 10), colour).save(tmp_path / name / "deeper" / "b.png")
    (tmp_path / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.warns(SkippedImagesWarning):
        decoded = load_images(None, str(tmp_path), resolution=8, channels=3)
    assert decoded.label_names == ["cat", "dog"] and decoded.labels.tolist() == [0, 0, 1, 1]
    assert torch.all(decoded.images[decoded.labels == 1][:, 2] == 255)  # the dogs are the blue ones
    Image.new("RGB", (10, 10), RED).save(tmp_path / "loose.png")  # an image outside the class folders: no labels
    assert load_images(None, str(tmp_path), resolution=8, channels=3).labels is None


def test_a_hub_dataset_class_label_column_is_detected_or_chosen(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"bytes": _png_bytes(Image.new("RGB", (12, 12), c)), "path": None} for c in (RED, GREEN, BLUE, WHITE)]
    features = datasets.Features(
        {
            "picture": datasets.Image(),
            "kind": datasets.ClassLabel(names=["warm", "cool"]),
            "index": datasets.Value("int64"),
        }
    )
    dataset = datasets.Dataset.from_dict(
        {"picture": rows, "kind": [0, 1, 1, 0], "index": [5, 6, 7, 8]}, features=features
    )
    folder = tmp_path / "hub_like" / "data"
    folder.mkdir(parents=True)
    dataset.to_parquet(str(folder / "train-00000-of-00001.parquet"))
    path, cache = str(tmp_path / "hub_like"), str(tmp_path / "cache")
    decoded = load_images(path, resolution=8, channels=3, cache_dir=cache)
    assert decoded.labels.tolist() == [0, 1, 1, 0] and decoded.label_names == ["warm", "cool"]
    chosen = load_images(path, resolution=8, channels=3, cache_dir=cache, class_column="index")
    assert chosen.labels.tolist() == [5, 6, 7, 8] and chosen.label_names is None
    with pytest.raises(ValueError, match="--class_column 'picture'.*ClassLabel or an integer column"):
        load_images(path, resolution=8, channels=3, cache_dir=cache, class_column="picture")
    with pytest.raises(ValueError, match="--class_column 'nope' is not a column"):
        load_images(path, resolution=8, channels=3, cache_dir=cache, class_column="nope")
    with pytest.raises(ValueError, match="--class_column applies only to Hub datasets"):
        load_images("builtin:digits", resolution=8, class_column="label")


# ------------------------------------------------------------------------------------------------ non-square sizes


def test_non_square_size_covers_then_crops_the_centre_or_squashes(tmp_path):
    """(height, width) = (8, 16): a tall 20x40 image is resized to 16x32 (width limits) and its centre 8 rows kept."""
    tall = Image.new("RGB", (20, 40), RED)
    tall.paste(BLUE, (0, 0, 20, 10))  # the top quarter: cut off by the crop, kept by the squash
    tall.save(tmp_path / "tall.png")
    Image.new("RGB", (15, 40), RED).save(tmp_path / "narrow.png")  # 15 wide < 16: would need enlarging
    with pytest.warns(SkippedImagesWarning, match="narrow.png: too small: 15x40 .width x height. for resolution 8x16"):
        cropped, _ = load_image_tensor(None, str(tmp_path), resolution=(8, 16), channels=3)
    assert cropped.shape == (1, 3, 8, 16)
    assert torch.all(cropped[0] == torch.tensor(RED, dtype=torch.uint8)[:, None, None])
    with pytest.warns(SkippedImagesWarning):
        squashed, _ = load_image_tensor(None, str(tmp_path), resolution=(8, 16), channels=3, center_crop=False)
    assert torch.all(squashed[0][2, 0] == 255) and torch.all(squashed[0][0, -1] == 255)  # blue on top, red below


def test_digits_at_a_non_square_size():
    images, _ = load_image_tensor("builtin:digits", resolution=(8, 16), channels=1, max_images=3)
    assert images.shape == (3, 1, 8, 16)


@pytest.mark.parametrize(
    "value, expected",
    [("16", 16), ("8x16", (8, 16)), (" 8 X 16 ", (8, 16)), ("16x16", 16), ([8, 16], (8, 16)), (32, 32)],
)
def test_resolution_is_square_or_height_by_width(value, expected):
    from ddpm_hub.data import parse_resolution

    assert parse_resolution(value) == expected


@pytest.mark.parametrize("value", ["8y16", "0", "8x0", [8, 16, 3], True, "x16"])
def test_bad_resolutions_say_what_is_accepted(value):
    import argparse

    from ddpm_hub.data import parse_resolution

    with pytest.raises(argparse.ArgumentTypeError, match="is not a size: give"):
        parse_resolution(value)
