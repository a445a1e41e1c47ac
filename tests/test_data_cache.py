"""Data at scale: the decoded cache (`ddpm_hub.data.cache`), parallel decoding (`ddpm_hub.data.parallel`) and
streaming (`ddpm_hub.data.streaming`), on folders of tens of images and parquet shards of tiny ones.

    pytest tests/test_data_cache.py -q --durations=0

Two ranks sharing one cache build and exact resume from the cache after SIGKILL are checked in
tests/test_training_runs.py, on runs it makes anyway (`test_conditional_training_on_two_processes`,
`test_sigkill_and_resume_is_...`).
"""

import io
import json
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import labelled_shards
from PIL import Image
from safetensors.torch import load_file

from ddpm_hub.data import (
    DataOptions,
    SkippedImagesWarning,
    UInt8ImageDataset,
    load_images,
    parallel,
    to_model_range,
)
from ddpm_hub.data import cache as cache_module
from ddpm_hub.data.streaming import open_stream
from ddpm_hub.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def decompression_bomb(path: Path) -> None:
    """A PNG whose header claims 20000 x 20000 pixels: PIL refuses to open it (DecompressionBombError)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    signature = b"\x89PNG\r\n\x1a\n"
    path.write_bytes(
        signature + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def make_folder(root: Path, per_class: int = 6) -> Path:
    """Two class folders of random 12x10 RGB images, and one bad file of each kind."""
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)).save(root / name / f"{i:02d}.png")
    good = (root / "cat" / "00.png").read_bytes()
    (root / "cat" / "03_truncated.png").write_bytes(good[: len(good) // 2])
    Image.new("RGB", (4, 4)).save(root / "dog" / "03_small.png")
    decompression_bomb(root / "dog" / "04_bomb.png")
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


def options(folder: Path, cache: Path, **changes) -> DataOptions:
    return DataOptions(train_data_dir=str(folder), cache_dir=str(cache), **{"resolution": 8, **changes})


def load_quietly(data: DataOptions, channels: int = 3):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedImagesWarning)
        return data.load(channels)


def built(cache: Path) -> list[str]:
    """The cache folders a reader would open (temporary and lock files excluded)."""
    root = cache / cache_module.CACHE_SUBDIR
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []


def forbid_decoding(monkeypatch) -> None:
    def decode_range(*args, **kwargs):
        raise AssertionError("decoded although the cache was complete")

    monkeypatch.setattr(parallel, "decode_range", decode_range)


# ----------------------------------------------------------------------------------------------------------------
# The decoded cache


def test_cache_is_built_once_then_reused_without_decoding_and_reports_the_same_skips(tmp_path, monkeypatch):
    folder, cache = make_folder(tmp_path / "images"), tmp_path / "cache"
    with pytest.warns(SkippedImagesWarning, match="Skipped 4 of 16 items") as first_warnings:
        first = options(folder, cache).load(channels=3)
    assert len([w for w in first_warnings if w.category is SkippedImagesWarning]) == 1
    with pytest.warns(SkippedImagesWarning):
        reference = load_images(None, str(folder), resolution=8, channels=3)
    assert first.file is not None and first.file.name == "images.u8"
    assert torch.equal(first.images, reference.images) and torch.equal(first.labels, reference.labels)
    assert first.label_names == ["cat", "dog"] and first.report == reference.report
    reasons = dict(first.report.skipped)
    assert "DecompressionBombError" in reasons["dog/04_bomb.png"] and "too small" in reasons["dog/03_small.png"]
    assert "truncated" in reasons["cat/03_truncated.png"] and "extension" in reasons["cat/notes.txt"]

    forbid_decoding(monkeypatch)
    with pytest.warns(SkippedImagesWarning, match="Skipped 4 of 16 items .*when the decoded cache .* was built"):
        again = options(folder, cache, preprocessing_num_workers=2).load(channels=3)
    assert torch.equal(again.images, first.images) and again.report == first.report
    assert again.labels.tolist() == first.labels.tolist() and again.label_names == ["cat", "dog"]
    assert len(built(cache)) == 1
    manifest = json.loads((first.file.parent / "manifest.json").read_text())
    assert manifest["shape"] == [12, 3, 8, 8] and len(manifest["skipped"]) == 4
    assert manifest["key_fields"]["decoder_version"] == cache_module.DECODER_VERSION


def test_digits_through_the_cache_equal_the_digits_in_ram(tmp_path):
    cached = DataOptions(resolution=(8, 12), cache_dir=str(tmp_path), max_images=50).load(channels=1)
    in_ram = load_images("builtin:digits", resolution=(8, 12), channels=1, max_images=50)
    assert torch.equal(cached.images, in_ram.images) and torch.equal(cached.labels, in_ram.labels)
    assert cached.label_names == [str(i) for i in range(10)] and built(tmp_path)[0].startswith("digits-8x12-l-crop-")


def test_a_hub_dataset_is_cached_with_its_class_names_and_a_changed_file_makes_a_new_cache(tmp_path, monkeypatch):
    folder = tmp_path / "hub_like"
    write_shards(folder, 2)  # a parquet dataset as datasets.load_dataset reads a Hub repo; one broken row
    data = DataOptions(dataset_name=str(folder), resolution=8, cache_dir=str(tmp_path / "cache"))
    with pytest.warns(SkippedImagesWarning, match="Skipped 1 of 20 items in dataset .*row 3 .broken.png."):
        first = data.load(channels=3)
    reference = load_images(str(folder), resolution=8, channels=3, cache_dir=str(tmp_path / "cache"))
    assert torch.equal(first.images, reference.images) and torch.equal(first.labels, reference.labels)
    assert first.label_names == ["even", "odd"] and first.file is not None
    with monkeypatch.context() as patch:
        forbid_decoding(patch)
        assert load_quietly(data).report == first.report
    (folder / "train-00001-of-00002.parquet").unlink()  # the data files changed: datasets' fingerprint follows
    write_shards(tmp_path / "other", 1)
    shutil.move(tmp_path / "other" / "train-00000-of-00001.parquet", folder / "train-00001-of-00002.parquet")
    assert load_quietly(data).report.num_images == 18 and len(built(tmp_path / "cache")) == 2  # 2 broken rows


def test_changing_the_size_the_crop_the_channels_or_a_file_makes_a_new_cache(tmp_path, monkeypatch):
    folder, cache = make_folder(tmp_path / "images"), tmp_path / "cache"
    variants = [{}, {"resolution": 4}, {"resolution": (4, 8)}, {"center_crop": False}, {"max_images": 5}]
    for changes in variants:
        load_quietly(options(folder, cache, **changes))
    load_quietly(options(folder, cache), channels=1)
    assert len(built(cache)) == 6
    with monkeypatch.context() as patch:
        forbid_decoding(patch)  # each of them is found again
        for changes in variants:
            load_quietly(options(folder, cache, **changes))
    Image.new("RGB", (12, 10), (1, 2, 3)).save(folder / "dog" / "99_new.png")  # the folder changed
    decoded = load_quietly(options(folder, cache))
    assert len(built(cache)) == 7 and decoded.report.num_images == 13


@pytest.mark.parametrize("damage", ["truncate_images", "other_key", "unreadable_manifest"])
def test_a_cache_that_does_not_match_its_key_is_rebuilt(tmp_path, caplog, damage):
    folder, cache = make_folder(tmp_path / "images"), tmp_path / "cache"
    first = load_quietly(options(folder, cache))
    expected, cache_folder = first.images.clone(), first.file.parent
    del first
    manifest_path = cache_folder / "manifest.json"
    if damage == "truncate_images":
        with open(cache_folder / "images.u8", "r+b") as file:
            file.truncate(100)
    elif damage == "other_key":
        manifest_path.write_text(json.dumps({**json.loads(manifest_path.read_text()), "key": "0" * 64}))
    else:
        manifest_path.write_text("{ not json")
    with caplog.at_level("WARNING", logger="ddpm_hub.data.cache"):
        rebuilt = load_quietly(options(folder, cache))
    assert "is not trusted" in caplog.text and "It is rebuilt" in caplog.text
    assert torch.equal(rebuilt.images, expected) and built(cache) == [cache_folder.name]


KILLED_BUILD = """
import os, signal, sys
from ddpm_hub.data import DataOptions, parallel

parallel.MAX_CHUNK_ITEMS = 2  # several chunks for 12 images
decode_range, calls = parallel.decode_range, []

def decode_then_die(*args):
    if len(calls) == 2:  # two chunks were written: die half-way through the build
        os.kill(os.getpid(), signal.SIGKILL)
    calls.append(1)
    return decode_range(*args)

parallel.decode_range = decode_then_die
DataOptions(train_data_dir=sys.argv[1], resolution=8, cache_dir=sys.argv[2], preprocessing_num_workers=1).load(3)
"""


@pytest.mark.slow
def test_a_killed_build_leaves_nothing_trusted_and_the_next_run_rebuilds(tmp_path, caplog):
    folder, cache = make_folder(tmp_path / "images"), tmp_path / "cache"
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_BUILD, str(folder), str(cache)], env=env, capture_output=True, text=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    root = cache / cache_module.CACHE_SUBDIR
    leftovers = [p for p in root.iterdir() if p.is_dir()]
    assert built(cache) == [] and len(leftovers) == 1 and leftovers[0].name.startswith(".tmp-")
    assert (leftovers[0] / "images.u8").stat().st_size < 12 * 3 * 8 * 8  # not all written, and never trusted
    assert not (leftovers[0] / "manifest.json").exists()

    with caplog.at_level("WARNING", logger="ddpm_hub.data.cache"):
        decoded = load_quietly(options(folder, cache))
    assert "left by an interrupted build" in caplog.text
    assert decoded.report.num_images == 12 and [p.name for p in root.iterdir() if p.is_dir()] == built(cache)


# ----------------------------------------------------------------------------------------------------------------
# Parallel decoding and the training view


def test_two_workers_decode_exactly_what_one_decodes_also_when_stopping_at_max_images(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "images", per_class=10)
    monkeypatch.setattr(parallel, "MAX_CHUNK_ITEMS", 3)  # many chunks, taken back in order
    for max_images in (None, 7):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SkippedImagesWarning)
            one, two = (
                load_images(None, str(folder), resolution=8, channels=3, max_images=max_images, num_workers=n)
                for n in (1, 2)
            )
        assert torch.equal(one.images, two.images) and torch.equal(one.labels, two.labels)
        assert one.report == two.report
    # cat/00 .. cat/06 are the first 7 images; of the bad items only those listed or met before them are reported
    assert [item for item, _ in one.report.skipped] == ["cat/notes.txt", "cat/03_truncated.png"]


def test_the_training_view_reads_rows_from_the_file_and_pickles_as_a_file_name(tmp_path):
    folder, cache = make_folder(tmp_path / "images"), tmp_path / "cache"
    decoded = load_quietly(options(folder, cache))
    kept = torch.tensor([1, 4, 5, 7, 11])
    dataset = UInt8ImageDataset(decoded.images, random_flip=True, indices=kept, file=decoded.file)
    assert len(dataset) == 5
    batch = dataset.get_batch([0, 3], torch.Generator().manual_seed(0))
    flips = torch.rand(2, generator=torch.Generator().manual_seed(0)) < 0.5
    expected = to_model_range(decoded.images[[1, 7]])
    expected = torch.where(flips[:, None, None, None], expected.flip(-1), expected)
    assert torch.equal(batch, expected)
    assert torch.equal(dataset.rows(2), decoded.images[5])
    assert torch.equal(dataset.rows([4, 0]), decoded.images[[11, 1]])
    pickled = pickle.dumps(dataset)
    assert len(pickled) < 2000  # the file's name and the shape, not 12 x 3 x 8 x 8 pixels
    copy = pickle.loads(pickled)
    assert torch.equal(copy.get_batch([0, 3], torch.Generator().manual_seed(0)), batch)


# ----------------------------------------------------------------------------------------------------------------
# Streaming


def png(value: int, size: tuple[int, int] = (10, 12)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (value, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_shards(folder: Path, num_shards: int, per_shard: int = 10) -> list[int]:
    """Parquet shards of solid images whose red value is the image's number; row 3 of shard 0 is broken."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["even", "odd"])})
    folder.mkdir(parents=True)
    values = []
    for shard in range(num_shards):
        rows = [shard * per_shard + i for i in range(per_shard)]
        images = [{"bytes": png(v), "path": f"{v}.png"} for v in rows]
        if shard == 0:
            images[3] = {"bytes": b"broken", "path": "broken.png"}
        values += [v for v in rows if not (shard == 0 and v == 3)]
        data = {"image": images, "label": [v % 2 for v in rows]}
        path = folder / f"train-{shard:05d}-of-{num_shards:05d}.parquet"
        datasets.Dataset.from_dict(data, features=features).to_parquet(str(path))
    return values


def stream_options(folder: Path, tmp_path: Path, **changes) -> DataOptions:
    return DataOptions(
        dataset_name=str(folder), streaming=True, resolution=8, cache_dir=str(tmp_path / "hf"), **changes
    )


def take(iterator, count: int) -> list[int]:
    """The numbers (red values) of the next `count` streamed images."""
    return [int(next(iterator)[0][0, 0, 0]) for _ in range(count)]


@pytest.mark.parametrize("num_shards", [4, 3], ids=["whole_shards", "every_other_example"])
def test_each_rank_streams_a_disjoint_part_and_together_they_read_everything(tmp_path, num_shards):
    values = write_shards(tmp_path / "shards", num_shards)
    data = stream_options(tmp_path / "shards", tmp_path)
    parts = []
    for rank in range(2):
        stream = open_stream(data, channels=3, rank=rank, world_size=2)
        numbers = []
        for pixels, label, _captions in stream:
            if stream.epoch == 1:
                break
            numbers.append(int(pixels[0, 0, 0]))
            assert label == numbers[-1] % 2 and pixels.shape == (3, 8, 8)
        parts.append(numbers)
    assert not set(parts[0]) & set(parts[1]) and sorted(parts[0] + parts[1]) == values
    assert 3 not in parts[0] + parts[1]  # the broken row, skipped and counted


def test_a_streamed_rank_resumes_exactly_where_it_stopped_without_a_shuffle_buffer(tmp_path):
    write_shards(tmp_path / "shards", 4)
    data = stream_options(tmp_path / "shards", tmp_path)
    uninterrupted = iter(open_stream(data, 3, rank=1, world_size=2))
    expected = take(uninterrupted, 30)  # 20 images per epoch: the resume point and the rest cross an epoch

    first = open_stream(data, 3, rank=1, world_size=2)
    iterator = iter(first)
    assert take(iterator, 13) == expected[:13]
    state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint holds
    resumed = open_stream(data, 3, rank=1, world_size=2)
    resumed.load_state_dict(state)
    assert take(iter(resumed), 17) == expected[13:]
    assert resumed.epoch == 1 and resumed.images == 30


def test_with_a_shuffle_buffer_resume_loses_at_most_the_buffer_and_repeats_nothing(tmp_path, monkeypatch):
    """The documented limit: datasets does not save the buffer's content; the examples in it are not read again."""
    import datasets

    # datasets sleeps 5 s whenever a shuffled stream is left before its end (an Arrow thread-shutdown workaround);
    # this test leaves four of them
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)
    values = write_shards(tmp_path / "shards", 4)
    data = stream_options(tmp_path / "shards", tmp_path, shuffle_buffer_size=4)
    first = open_stream(data, 3, seed=5)
    iterator = iter(first)
    before = take(iterator, 15)
    uninterrupted_rest = [int(p[0, 0, 0]) for p, *_ in _until_epoch(first, iterator, 1)]
    assert sorted(before + uninterrupted_rest) == values  # a shuffled epoch reads every example once

    replay = open_stream(data, 3, seed=5)
    replay_iterator = iter(replay)
    assert take(replay_iterator, 15) == before  # (seed, epoch) fix the order
    resumed = open_stream(data, 3, seed=5)
    resumed.load_state_dict(json.loads(json.dumps(replay.state_dict())))
    after = [int(p[0, 0, 0]) for p, *_ in _until_epoch(resumed, iter(resumed), 1)]
    assert not set(before) & set(after) and len(set(after)) == len(after)  # nothing read twice
    assert 0 < len(values) - len(before) - len(after) <= 4  # the buffer's examples are lost for this epoch
    next_epoch = [int(p[0, 0, 0]) for p, *_ in _until_epoch(resumed, iter(resumed), 2)]
    assert sorted(next_epoch) == values  # the next epoch reads everything again


def _until_epoch(stream, iterator, epoch: int):
    for item in iterator:
        if stream.epoch == epoch:
            return
        yield item


def test_streaming_options_are_checked_before_any_work(tmp_path):
    from ddpm_hub.training.checks import check_options
    from ddpm_hub.training.options import parse_options

    write_shards(tmp_path / "shards", 2)
    shards = ["--dataset_name", str(tmp_path / "shards"), "--streaming"]
    cases = {
        "--max_train_steps is required": [],
        "--validation_holdout 8 needs a decoded dataset": ["--max_train_steps", "2", "--validation_holdout", "8"],
        "--dataloader_num_workers 2 must be 0": ["--max_train_steps", "2", "--dataloader_num_workers", "2"],
    }
    for message, extra in cases.items():
        with pytest.raises(ValueError, match=message):
            check_options(parse_options([*shards, *extra])[0])
    with pytest.raises(ValueError, match="--streaming applies to Hub datasets .* not to --train_data_dir"):
        check_options(parse_options(["--train_data_dir", str(tmp_path), "--streaming", "--max_train_steps", "2"])[0])
    with pytest.raises(ValueError, match="--shuffle_buffer_size 10 applies to --streaming only"):
        check_options(parse_options(["--shuffle_buffer_size", "10"])[0])
    first = stream_options(tmp_path / "shards", tmp_path, max_images=5).load(channels=3)  # what `eval` reads
    assert first.images.shape == (5, 3, 8, 8) and first.images[:, 0, 0, 0].tolist() == [0, 1, 2, 4, 5]
    assert first.labels.tolist() == [0, 1, 0, 0, 1] and first.report.num_skipped == 1


@pytest.mark.slow
def test_streaming_from_local_shards_trains_on_two_ranks_and_resumes_bit_identically(tmp_path):
    """
    2 ranks, 4 shards (2 per rank), 6 steps crossing each rank's epoch. Run C resumes from checkpoint 2 of run A
    (each rank's stream position is in it) and ends with A's weights, bit for bit.
    """
    from helpers import TINY, check_ok, run_script, summary

    write_shards(tmp_path / "shards", 4)
    a, c = tmp_path / "a", tmp_path / "c"
    tiny = [arg for arg, before in zip(TINY, [None, *TINY]) if "--max_train_samples" not in (arg, before)]
    common = [*tiny, "--dataset_name", str(tmp_path / "shards"), "--streaming", "--cache_dir", str(tmp_path / "hf")]
    common += ["--max_train_steps", "6", "--checkpointing_steps", "2", "--random_flip", "--learning_rate", "1e-3"]
    result = run_script([*common, "--output_dir", str(a)], processes=2)
    check_ok(result)
    assert result.stderr.count("reads whole shards") == 2
    checkpoint = a / "checkpoints" / "checkpoint-2"
    states = [json.loads((checkpoint / f"stream_state_rank_{r}.json").read_text()) for r in range(2)]
    assert [s["images"] for s in states] == [8, 8] and states[0]["num_processes"] == 2

    (c / "checkpoints").mkdir(parents=True)
    (c / "checkpoints" / "checkpoint-2").symlink_to(checkpoint, target_is_directory=True)
    check_ok(run_script([*common, "--output_dir", str(c), "--resume_from_checkpoint", "latest"], processes=2))
    record = summary(c)
    assert record["resumed_from_step"] == 2 and record["epochs"] is None
    # rank 0 reads shards 0 and 2 (19 usable images), then shard 0 again: it meets the broken row twice
    assert record["dataset"]["num_images"] == 6 * 2 * 4 and record["dataset"]["num_skipped"] == 2
    weights = [load_file(run / "unet" / "diffusion_pytorch_model.safetensors") for run in (a, c)]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


# ----------------------------------------------------------------------------------------------------------------
# A streamed label outside the classes is skipped and counted like a bad image, never reaches the class embedding
# (the second reliability probe)


def test_a_streamed_label_outside_the_classes_is_skipped_and_counted(tmp_path):
    from dataclasses import replace

    from ddpm_hub.data import DataOptions
    from ddpm_hub.data.streaming import open_stream
    from ddpm_hub.pipelines.conditioning import TrainingConditioning

    cases = {
        "named": (labelled_shards(tmp_path / "named", [0, 1, -1, 1, 0, 1], ["even", "odd"]), [2], "(0..1)"),
        "unnamed": (labelled_shards(tmp_path / "unnamed", [0, 57, 3, -1, 9, 10]), [1, 3, 5], "(0..9)"),
    }
    conditioning = TrainingConditioning.of({"num_class_embeds": 11})  # 10 classes and the null label 10
    for name, (folder, bad_rows, classes) in cases.items():
        column = None if name == "named" else "label"  # an integer column is a label column when named so
        data = DataOptions(dataset_name=str(folder), streaming=True, resolution=8, cache_dir=str(tmp_path / "hf"))
        stream = open_stream(replace(data, class_column=column), channels=3)
        conditioning.check_stream(stream, str(folder), "tiny-cond")
        read = []
        for pixels, label, _ in stream:
            if stream.epoch == 1:
                break
            read.append((int(pixels[0, 0, 0]) // 10, label))
        assert [row for row, _ in read] == [row for row in range(6) if row not in bad_rows], name
        assert all(0 <= label <= 9 for _, label in read)
        assert stream.skipped == len(bad_rows)
        reasons = [reason for _, reason in stream.skipped_examples]
        assert all(f"in column 'label' is not one of the classes {classes}" in reason for reason in reasons)
        assert stream.skipped_examples[0][0] == f"epoch 0 (row{bad_rows[0]}.png)"


# ----------------------------------------------------------------------------------------------------------------
# The decoded cache trusts nothing it can check cheaply, reads a complete cache without write access, and checks
# its pixels on demand (the second reliability probe)


def two_class_folder(root):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def cached(folder, cache):
    from ddpm_hub.data import DataOptions

    return DataOptions(train_data_dir=str(folder), cache_dir=str(cache), resolution=8).load(channels=3)


def test_a_hand_edited_manifest_or_labels_file_is_not_trusted(tmp_path, caplog):
    import logging

    folder, cache = two_class_folder(tmp_path / "pets"), tmp_path / "cache"
    first = cached(folder, cache)
    (built,) = (cache / "ddpm_hub_decoded").glob("pets-*")
    manifest_path, labels_path = built / "manifest.json", built / "labels.npy"
    manifest = json.loads(manifest_path.read_text())
    assert first.label_names == ["cat", "dog"] and set(manifest["sha256"]) == {"images.u8", "labels.npy"}
    edits = {
        "class names": lambda m: {**m, "label_names": ["cat", "x`<img src=x onerror=alert(1)>`"]},
        "shape": lambda m: {**m, "shape": [m["shape"][0], 1, 8, 24]},  # the same bytes, another shape
        "labels": None,
        "labels, no checksum recorded": lambda m: {k: v for k, v in m.items() if k != "sha256"},
    }
    reasons = {
        "class names": "its class names ['cat', 'x`<img src=x onerror=alert(1)>`'] are not the source's "
        "['cat', 'dog']",
        "shape": "its shape [8, 1, 8, 24] is not of [N x 3 x 8 x 8] images",
        "labels": "labels.npy is not the file the build wrote",
        "labels, no checksum recorded": "labels.npy holds labels 0..57, not class ids 0..1",
    }
    for what, edit in edits.items():
        manifest = json.loads(manifest_path.read_text())
        if edit is not None:
            manifest_path.write_text(json.dumps(edit(manifest)))
        if what.startswith("labels"):
            labels = np.load(labels_path)
            labels[3] = 57
            np.save(labels_path, labels)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ddpm_hub.data.cache"):
            again = cached(folder, cache)
        assert f"The decoded cache {built} is not trusted: {reasons[what]}" in caplog.text, what
        assert "It is rebuilt." in caplog.text
        assert again.label_names == ["cat", "dog"] and again.images.shape == (8, 3, 8, 8)
        assert again.labels.tolist() == first.labels.tolist() and torch.equal(again.images, first.images)


def test_a_complete_cache_is_read_without_write_access_and_a_build_there_is_one_line(tmp_path, read_only):
    import shutil

    from ddpm_hub.data import DataOptions

    folder, built_in = two_class_folder(tmp_path / "pets"), tmp_path / "cache"
    first = cached(folder, built_in)
    shipped = tmp_path / "shipped"  # the cache copied somewhere read-only, without its lock files
    shutil.copytree(built_in, shipped, ignore=shutil.ignore_patterns(".*.lock"))
    read_only(shipped / "ddpm_hub_decoded")
    again = cached(folder, shipped)
    assert torch.equal(again.images, first.images) and again.label_names == ["cat", "dog"]
    other = DataOptions(train_data_dir=str(folder), cache_dir=str(shipped), resolution=(8, 4))
    with pytest.raises(UsageError, match=r"ddpm_hub_decoded is not writable and holds no usable cache pets-8x4-"):
        other.load(channels=3)


def test_flipped_pixel_bytes_are_found_on_demand_not_at_every_open(tmp_path):
    from ddpm_hub.data.cache import verify_cache

    folder, cache = two_class_folder(tmp_path / "pets"), tmp_path / "cache"
    before = cached(folder, cache).images.clone()  # a copy: the decoded images are a mapping of the file
    (built,) = (cache / "ddpm_hub_decoded").glob("pets-*")
    assert verify_cache(built) == []
    with open(built / "images.u8", "r+b") as file:
        file.seek(100)
        byte = file.read(1)
        file.seek(100)
        file.write(bytes([byte[0] ^ 0xFF]))
    recorded = json.loads((built / "manifest.json").read_text())["sha256"]["images.u8"]
    expected = f"{built / 'images.u8'} does not match the sha256 recorded at build ({recorded[:12]}...)"
    assert verify_cache(built) == [expected]
    again = cached(folder, cache)  # opening reads no pixels: the documented decision
    assert int((again.images != before).sum()) == 1
