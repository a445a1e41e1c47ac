"""Reliability, part 2: each failure of the second hostile probe (issue 20), reproduced, and what happens now.

1. a streamed label outside the classes is skipped and counted like a bad image, never reaches the embedding;
2. `ddpm-hub sample --output_dir` records what was sampled (the weights' sha256) and checks the folder first;
3. one range for the guidance scale wherever it enters; no non-finite metric is written or published;
4. everything user-supplied in the model card is escaped for Markdown and HTML;
5. the shipped code files published are the installed package's, and a tampered copy is named;
6. a checkpoint records the model's configuration, and resuming with another one names what differs;
7. images of every bit depth take one decoding path; masks follow diffusers' conventions;
8. a model knows the class ids it was trained on;
9. the decoded cache trusts nothing it can check cheaply, and reads a complete cache without write access;
and the tracebacks that became one-line errors, the README's snippets, local paths, and the noise of every run.
"""

import json
import math
import re

import numpy as np
import pytest
import torch

from ddpm_hub import DDPMHubImg2ImgPipeline, DDPMHubInpaintPipeline, DDPMHubPipeline, cli
from ddpm_hub.configs import build_pipeline
from ddpm_hub.errors import UsageError
from ddpm_hub.model_card import render_model_card
from ddpm_hub.run_folder import METRICS_FILE, read_metrics, update_metrics
from ddpm_hub.training.options import parse_options

NON_FINITE_OR_OUT_OF_RANGE = [float("nan"), float("inf"), 1e308, -2.0, 101.0]


def conditional(num_classes: int = 10, null: int | None = 10, **settings) -> DDPMHubPipeline:
    """ddpm-tiny-8 with 11 class embeddings (random, distinct), `num_classes` named classes and the null label 10."""
    base = build_pipeline("ddpm-tiny-8", seed=0, unet_overrides={"num_class_embeds": 11})
    with torch.no_grad():
        base.unet.class_embedding.weight.normal_(0, 1, generator=torch.Generator().manual_seed(1))
    names = {i: f"c{i}" for i in range(num_classes)}
    pipeline = DDPMHubPipeline(base.unet, base.scheduler, id2label=names, null_class_label=null, **settings)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def error_of(capsys) -> str:
    """The one line a command printed to stderr (progress bars aside)."""
    return capsys.readouterr().err.strip().splitlines()[-1]


# ----------------------------------------------------------------------------------------------------------------
# 3. Guidance: one range wherever it enters; no non-finite metric written or published


@pytest.mark.parametrize("scale", NON_FINITE_OR_OUT_OF_RANGE)
def test_every_pipeline_refuses_a_guidance_scale_out_of_the_one_range(scale):
    pipeline = conditional()
    image = torch.zeros(1, 3, 8, 8)
    calls = [
        lambda: pipeline(class_labels=1, guidance_scale=scale, num_inference_steps=2),
        lambda: DDPMHubImg2ImgPipeline.from_pipe(pipeline)(image, class_labels=1, guidance_scale=scale),
        lambda: DDPMHubInpaintPipeline.from_pipe(pipeline)(image, image, class_labels=1, guidance_scale=scale),
        lambda: build_pipeline("ddpm-tiny-8")(guidance_scale=scale, num_inference_steps=2),  # unconditional too
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"guidance_scale must be a number in \[0, 100\]"):
            call()
    # the edges of the range are valid
    for valid in (0.0, 100):
        assert pipeline(class_labels=1, guidance_scale=valid, num_inference_steps=1, output_type="np").images.shape


def test_the_command_lines_and_training_refuse_the_same_range_before_any_work(tmp_path, capsys):
    model = tmp_path / "model"
    conditional().save_pretrained(model)
    for scale in ("nan", "inf", "1e308", "-2"):
        output = tmp_path / f"grid-{scale}.png"
        assert cli.main(["sample", str(model), "--guidance_scale", scale, "--output", str(output)]) == 2
        assert "guidance_scale must be a number in [0, 100]" in error_of(capsys) and not output.exists()
        assert cli.main(["eval", str(model), "--fid", "--guidance_scale", scale, "--output_dir", str(tmp_path)]) == 2
        assert "guidance_scale must be a number in [0, 100]" in error_of(capsys)
    assert not (tmp_path / METRICS_FILE).exists()
    for scale in ("nan", "1e308", "-1", "200"):
        with pytest.raises(SystemExit):
            parse_options(["--validation_guidance_scale", scale])
        assert "guidance_scale must be a number in [0, 100]" in error_of(capsys)
    config = tmp_path / "run.yaml"
    config.write_text("validation_guidance_scale: 1.0e+308\n")
    with pytest.raises(UsageError, match=r"validation_guidance_scale: guidance_scale must be a number in \[0, 100\]"):
        parse_options(["--config", str(config)])


def test_a_non_finite_metric_is_neither_written_nor_published(tmp_path):
    folder = tmp_path / "model"
    build_pipeline("ddpm-tiny-8").save_pretrained(folder)
    update_metrics(folder, {"bpd": {"bits_per_dim": 2.5, "standard_error": 0.1}})
    for bad in ({"fid": {"value": math.nan}}, {"kid": {"value": 0.1, "std": math.inf}}, {"fid": -math.inf}):
        with pytest.raises(UsageError, match="is not a finite number"):
            update_metrics(folder, bad)
    assert json.loads((folder / METRICS_FILE).read_text()) == {"bpd": {"bits_per_dim": 2.5, "standard_error": 0.1}}
    # written by hand (or by an older version): the card refuses it instead of leaving it out silently
    (folder / METRICS_FILE).write_text('{"bpd": {"bits_per_dim": 2.5}, "fid": {"value": NaN}}')
    with pytest.raises(UsageError, match=r"metrics.json: the metric 'fid' is not a finite number \(value = nan\)"):
        read_metrics(folder)
    with pytest.raises(UsageError, match="not a finite number"):
        render_model_card(folder, "alice/model")


# ----------------------------------------------------------------------------------------------------------------
# 8. A model knows the class ids it was trained on


def test_only_the_trained_classes_are_labels_and_the_null_label_is_not_advertised():
    pipeline = conditional(num_classes=6)  # 11 embeddings: 6 classes trained, the null label 10, rows 6..9 never
    images = pipeline(class_labels=[0, 5], num_inference_steps=1, output_type="np").images
    assert images.shape == (2, 8, 8, 3)
    for untrained in (6, 7, 9, -1):
        with pytest.raises(ValueError) as refused:
            pipeline(class_labels=untrained, num_inference_steps=1)
        message = str(refused.value)
        assert f"got {untrained}" in message and "the 6 classes this model was trained on (ids 0..5: c0, c1" in message
        assert "10" not in message  # the null label is never offered as a label
    with pytest.raises(ValueError, match=r"class label 10 is the null label .* leave class_labels out"):
        pipeline(class_labels=10, num_inference_steps=1)
    with pytest.raises(ValueError, match="integer ids or class names, got 2.5"):
        pipeline(class_labels=[2.5], num_inference_steps=1)
    # the null label stays reachable the documented ways: no labels, or guidance 0
    null = pipeline(batch_size=1, num_inference_steps=2, output_type="np", generator=torch.manual_seed(0)).images
    guided = pipeline(
        class_labels=3, guidance_scale=0, num_inference_steps=2, output_type="np", generator=torch.manual_seed(0)
    ).images
    np.testing.assert_array_equal(null, guided)
    assert pipeline.conditioning.classes.num_classes == 6


def test_the_number_of_trained_classes_is_a_saved_setting_read_by_both_loaders(tmp_path):
    from diffusers import DiffusionPipeline

    from ddpm_hub.conditioning import Conditioning
    from ddpm_hub.training.options import ConditioningOptions

    base = build_pipeline("ddpm-tiny-8", seed=0, unet_overrides={"num_class_embeds": 11})
    data = type("Data", (), {"label_names": None, "num_labels": 4})()  # four unnamed integer labels
    kind = Conditioning.of(base.unet.config).trained(data, ConditioningOptions(class_dropout_prob=0.1))
    settings = kind.settings()
    assert settings == {"id2label": None, "null_class_label": 10, "num_classes": 4}  # unnamed integer labels 0..3
    base.register_to_config(**settings)
    base.save_pretrained(tmp_path / "model")
    assert json.loads((tmp_path / "model" / "model_index.json").read_text())["num_classes"] == 4
    loaded = DDPMHubPipeline.from_pretrained(tmp_path / "model")
    plain = DiffusionPipeline.from_pretrained(tmp_path / "model", trust_remote_code=True)
    for pipeline in (loaded, plain):
        pipeline.set_progress_bar_config(disable=True)
        assert pipeline(class_labels=3, num_inference_steps=1, output_type="np").images.shape == (1, 8, 8, 3)
        with pytest.raises(ValueError, match=r"ids or names of the 4 classes this model was trained on \(ids 0..3\)"):
            pipeline(class_labels=4, num_inference_steps=1)


def test_a_run_counts_the_classes_of_unnamed_integer_labels(tmp_path):
    import contextlib
    import io

    import datasets
    from PIL import Image

    from ddpm_hub.conditioning import Conditioning
    from ddpm_hub.data import DataOptions
    from ddpm_hub.training.data import load_training_data

    def png(value: int) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (value, 0, 0)).save(buffer, format="PNG")
        return buffer.getvalue()

    folder = tmp_path / "parquet" / "data"
    folder.mkdir(parents=True)
    rows = {"image": [{"bytes": png(v), "path": f"{v}.png"} for v in range(8)], "kind": [0, 1, 2, 3, 0, 1, 2, 3]}
    features = datasets.Features({"image": datasets.Image(), "kind": datasets.Value("int64")})
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    data = DataOptions(dataset_name=str(folder.parent), class_column="kind", resolution=8, decoded_cache=False)
    data = data.resolved()
    conditioning = Conditioning.of({"num_class_embeds": 11})

    class OneProcess:
        is_local_main_process = True

        def main_process_first(self):
            return contextlib.nullcontext()

    from accelerate import PartialState

    PartialState(cpu=True)  # the training modules log through accelerate
    dataset = load_training_data(data, 0, 0, conditioning, 3, "tiny-cond", OneProcess())
    assert dataset.label_names is None and dataset.num_labels == 4


def test_class_labels_that_are_neither_ids_nor_names_are_one_line(tmp_path, capsys):
    model = tmp_path / "model"
    conditional(num_classes=6).save_pretrained(model)
    common = ["--steps", "1", "--num_images", "2", "--output", str(tmp_path / "grid.png")]
    for given in ("--3", "²", "3.5"):
        assert cli.main(["sample", str(model), f"--class_labels={given}", *common]) == 2
        assert f"Unknown label {given!r}: this model takes ids or names of the 6 classes" in error_of(capsys)
    assert cli.main(["sample", str(model), "--class_labels", "7", *common]) == 2
    assert "class labels must be ids or names of the 6 classes this model was trained on" in error_of(capsys)
    assert cli.main(["sample", str(model), "--class_labels", "-3", *common]) == 2
    assert "got -3" in error_of(capsys) and not (tmp_path / "grid.png").exists()


@pytest.mark.slow
def test_a_model_trained_on_a_six_class_folder_refuses_class_seven(tmp_path, capsys):
    from helpers import TINY, check_ok, conditional_config, run_script
    from PIL import Image

    folder = tmp_path / "six"
    for c in range(6):
        (folder / f"class{c}").mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (40 * c, 20 * i, 0)).save(folder / f"class{c}" / f"{i}.png")
    out = tmp_path / "run"
    args = [*TINY, "--pipeline", str(conditional_config(tmp_path)), "--train_data_dir", str(folder)]
    args += ["--output_dir", str(out), "--max_train_steps", "1", "--cache_dir", str(tmp_path / "cache")]
    check_ok(run_script(args))
    index = json.loads((out / "model_index.json").read_text())
    assert index["num_classes"] == 6 and index["null_class_label"] == 10 and len(index["id2label"]) == 6
    grid = ["--steps", "1", "--num_images", "2", "--output", str(tmp_path / "g.png")]
    assert cli.main(["sample", str(out), "--class_labels", "7", *grid]) == 2
    assert "the 6 classes this model was trained on (ids 0..5: class0" in error_of(capsys)
    assert cli.main(["sample", str(out), "--class_labels", "class5", *grid]) == 0


# ----------------------------------------------------------------------------------------------------------------
# 7. One decoding path for every image that enters; masks by diffusers' conventions


def ramp(dtype, scale: float) -> np.ndarray:
    """An 8x8 ramp of squares in [0, 1] (mean 0.336, so that clipping or a wrong scale shows), in `dtype` units."""
    return (np.linspace(0, 1, 64).reshape(8, 8) ** 2 * scale).astype(dtype)


def saved(image, path):
    from PIL import Image

    image.save(path)
    with Image.open(path) as loaded:
        loaded.load()
        return loaded


def test_sixteen_bit_and_float_images_decode_as_training_decodes_them(tmp_path):
    from PIL import Image

    from ddpm_hub.data.decode import image_to_array

    pipeline = build_pipeline("ddpm-tiny-8")
    sixteen = saved(Image.fromarray(ramp(np.uint16, 65535)), tmp_path / "sixteen.png")
    floats = saved(Image.fromarray(ramp(np.float32, 1.0), mode="F"), tmp_path / "float.tif")
    assert (sixteen.mode, floats.mode) == ("I;16", "F")
    true_mean = float(ramp(np.float64, 1.0).mean())
    for image in (sixteen, floats):
        training = image_to_array(image, 8, 3, center_crop=True).astype(np.float32) / 255  # [C x H x W]
        given = pipeline.preprocess(image, 3)[0].numpy()
        np.testing.assert_array_equal(given, training)  # the same pixels, bit for bit
        assert abs(given.mean() - true_mean) < 1 / 255
    for array in (ramp(np.uint16, 65535), ramp(np.float32, 1.0), ramp(np.float64, 1.0)):
        assert abs(pipeline.preprocess(array, 1).mean().item() - true_mean) < 1e-4
    with pytest.raises(ValueError, match="dtype int32 has no known range; pass uint8 .*, uint16"):
        pipeline.preprocess(ramp(np.int32, 65535), 3)


def test_the_command_lines_read_image_files_through_the_training_decoder(tmp_path, capsys):
    from PIL import Image

    from ddpm_hub.data.decode import image_to_array

    saved(Image.fromarray(ramp(np.uint16, 65535)), tmp_path / "sixteen.png")
    output = tmp_path / "forward.png"
    args = ["noise", str(tmp_path / "sixteen.png"), "--timesteps", "0", "--scale", "1", "--output", str(output)]
    assert cli.main(args) == 0
    frame = np.asarray(Image.open(output).convert("L"))[2:10, 2:10].astype(np.float32)  # t = 0: x_0, in the padding
    with Image.open(tmp_path / "sixteen.png") as image:
        training = image_to_array(image, 8, 1, center_crop=True)[0].astype(np.float32)
    assert np.abs(frame - training).max() <= 1  # was clipped to white: mean 0.95 instead of 0.34
    assert abs(frame.mean() / 255 - 0.336) < 0.01


def test_masks_follow_diffusers_conventions_and_transparency_keeps_pixels():
    from diffusers.image_processor import VaeImageProcessor
    from PIL import Image

    pipeline = build_pipeline("ddpm-tiny-8")
    right_half = np.zeros((8, 8), np.uint8)
    right_half[:, 4:] = 1
    expected = right_half.astype(np.float32)

    def generated(mask) -> np.ndarray:
        return pipeline.preprocess_mask(mask)[0, 0].numpy()

    for mask in (right_half, right_half * 255, right_half.astype(bool), torch.from_numpy(right_half)):
        np.testing.assert_array_equal(generated(mask), expected)  # 0/1 and 0/255 alike: values, not /255
    rgba = np.full((8, 8, 4), 255, np.uint8)  # white everywhere; only the right half opaque
    rgba[:, :4, 3] = 0
    np.testing.assert_array_equal(generated(Image.fromarray(rgba, "RGBA")), expected)  # transparent = kept
    la = Image.fromarray(rgba, "RGBA").convert("LA")
    np.testing.assert_array_equal(generated(la), expected)
    # an opaque mask reads exactly as diffusers' mask processor reads it (PIL / 255 and numpy values, at 0.5)
    reference = VaeImageProcessor(do_normalize=False, do_binarize=True, do_convert_grayscale=True)
    gray = np.linspace(0, 255, 64).reshape(8, 8).astype(np.uint8)
    values = np.linspace(0, 1, 64).reshape(8, 8).astype(np.float32)
    for mask in (Image.fromarray(gray), Image.fromarray(gray).convert("RGB"), values[..., None]):
        ours = generated(mask)
        theirs = reference.preprocess(mask, height=8, width=8)[0, 0].numpy()
        np.testing.assert_array_equal(ours, theirs)


def test_inpainting_honours_a_transparent_mask_and_a_uint8_mask_of_zeros_and_ones():
    from PIL import Image

    pipeline = DDPMHubInpaintPipeline.from_pipe(build_pipeline("ddpm-tiny-8"))
    pipeline.set_progress_bar_config(disable=True)
    image = np.full((8, 8, 3), 0.25, np.float32)
    rgba = np.full((8, 8, 4), 255, np.uint8)
    rgba[:, :4, 3] = 0
    ones = np.zeros((8, 8), np.uint8)
    ones[:, 4:] = 1
    for mask in (Image.fromarray(rgba, "RGBA"), ones):
        call = {"num_inference_steps": 2, "jump_n_sample": 1, "output_type": "np"}
        result = pipeline(image=image, mask_image=mask, generator=torch.manual_seed(0), **call).images[0]
        np.testing.assert_allclose(result[:, :4], 0.25, atol=1e-6)  # the left half kept exactly
        assert np.abs(result[:, 4:] - 0.25).max() > 0.05  # the right half generated


def test_a_list_of_images_of_two_sizes_and_a_noise_of_the_wrong_shape(recwarn):
    from PIL import Image

    base = build_pipeline("ddpm-tiny-8")
    inpaint = DDPMHubInpaintPipeline.from_pipe(base)
    inpaint.set_progress_bar_config(disable=True)
    small, large = Image.new("RGB", (8, 8), (200, 0, 0)), Image.new("RGB", (16, 16), (200, 0, 0))
    batch = inpaint.preprocess([small, large], 3)
    assert batch.shape == (2, 3, 8, 8) and torch.allclose(batch[0], batch[1])  # each resized: the same red
    call = {"num_inference_steps": 1, "jump_n_sample": 1, "output_type": "np"}
    assert inpaint([small, large], Image.new("L", (8, 8), 255), **call).images.shape == (2, 8, 8, 3)
    assert any("(16, 16) resized to the model's (8, 8)" in str(w.message) for w in recwarn)
    img2img = DDPMHubImg2ImgPipeline.from_pipe(base)
    img2img.set_progress_bar_config(disable=True)
    with pytest.raises(ValueError, match=r"noise must have shape \(1, 3, 8, 8\) .* got \(1, 3, 4, 4\)"):
        img2img(small, strength=0.5, num_inference_steps=2, noise=torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match=r"noise must have shape \(2, 3, 8, 8\)"):
        img2img([small, small], strength=0.5, num_inference_steps=2, noise=torch.randn(1, 3, 8, 8))


# ----------------------------------------------------------------------------------------------------------------
# 2. `ddpm-hub sample --output_dir` records what was sampled and checks the folder first; output paths


@pytest.fixture
def read_only():
    """Makes folders read-only for this process (chmod; as root, which ignores modes, the immutable attribute)."""
    import os
    import subprocess
    import tempfile

    made = []

    def make(folder):
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o555)
        made.append(folder)
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError:
            return folder
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("no way to make a folder read-only for this user here")
        return folder

    yield make
    for folder in made:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        os.chmod(folder, 0o755)


def sample_into(model, out, *extra) -> list[str]:
    return ["sample", str(model), "--num_images", "3", "--steps", "1", "--output_dir", str(out), *extra]


def test_an_export_refuses_to_complete_samples_of_other_weights_at_the_same_path(tmp_path, capsys):
    model, out = tmp_path / "model", tmp_path / "samples"
    build_pipeline("ddpm-tiny-8", seed=1).save_pretrained(model)
    assert cli.main(sample_into(model, out)) == 0
    manifest = json.loads((out / "samples.json").read_text())
    from ddpm_hub.configs import weights_checksum

    assert manifest["weights_sha256"] == {"unet": weights_checksum(DDPMHubPipeline.from_pretrained(model).unet)}
    assert len(manifest["config_sha256"]) == 64
    capsys.readouterr()
    build_pipeline("ddpm-tiny-8", seed=2).save_pretrained(model)  # other weights at the same path
    assert cli.main(sample_into(model, out, "--num_images", "6")) == 2
    assert f"holds samples of other weights than {model} has now" in error_of(capsys)  # named, not None
    assert sorted(p.name for p in out.glob("*.png")) == ["000000.png", "000001.png", "000002.png"]  # nothing mixed
    manifest.pop("weights_sha256")  # a manifest of an older version: it cannot tell
    (out / "samples.json").write_text(json.dumps(manifest))
    assert cli.main(sample_into(model, out)) == 2
    assert "does not record which weights its samples were drawn from" in error_of(capsys)


def test_an_export_checks_the_folder_before_sampling(tmp_path, capsys):
    from PIL import Image

    model, out = tmp_path / "model", tmp_path / "samples"
    build_pipeline("ddpm-tiny-8", seed=1).save_pretrained(model)
    assert cli.main(sample_into(model, out)) == 0
    capsys.readouterr()
    good = (out / "000001.png").read_bytes()
    foreign = {
        "another size": lambda path: Image.new("RGB", (16, 16)).save(path, format="PNG"),
        "another mode": lambda path: Image.new("L", (8, 8)).save(path, format="PNG"),
        "not a PNG": lambda path: Image.new("RGB", (8, 8)).save(path, format="JPEG"),
        "not an image": lambda path: path.write_bytes(b"hello"),
    }
    for what, write in foreign.items():
        write(out / "000001.png")
        assert cli.main(sample_into(model, out, "--num_images", "5", "--format", "npz")) == 2, what
        assert f"{out / '000001.png'} is not a sample of this model" in error_of(capsys)
        assert not (out / "000003.png").exists() and not list(out.glob("*.npz"))  # refused before sampling
    (out / "000001.png").write_bytes(good)
    (out / "samples.json").write_text('{"model": "x", "sampler"')  # truncated
    assert cli.main(sample_into(model, out)) == 2
    assert "samples.json (the samples' manifest) is not valid JSON" in error_of(capsys)


def test_output_paths_are_checked_before_any_sampling_and_a_failed_write_is_one_line(
    tmp_path, capsys, read_only, monkeypatch
):
    import ddpm_hub.commands

    model = tmp_path / "model"
    build_pipeline("ddpm-tiny-8").save_pretrained(model)
    sampled = []
    monkeypatch.setattr(ddpm_hub.commands, "load_model", lambda args: sampled.append(1) or _load(args))
    grid = ["sample", str(model), "--steps", "1", "--num_images", "2"]
    (tmp_path / "a file").write_text("x")
    locked = read_only(tmp_path / "locked")
    cases = {
        "x.jpgx": ".jpgx is not an image format PIL writes; use .png, .jpg",
        "noextension": "no extension is not an image format PIL writes",
        "locked/grid.png": "the folder " + str(locked) + " is not writable",
        "a file/grid.png": str(tmp_path / "a file") + " is a file, not a folder",
    }
    for output, message in cases.items():
        assert cli.main([*grid, "--output", str(tmp_path / output)]) == 2
        assert message in error_of(capsys), output
    for folder in (tmp_path / "a file", locked / "samples"):
        assert cli.main([*grid, "--output_dir", str(folder)]) == 2
        assert "--output_dir" in error_of(capsys)
    assert cli.main(["noise", str(tmp_path / "a file"), "--output", str(tmp_path / "forward.jpgx")]) == 2
    assert sampled == []  # all refused before a model was loaded
    # a folder that becomes read-only while sampling: one line, no traceback
    late = tmp_path / "late"
    monkeypatch.setattr(ddpm_hub.commands, "load_model", lambda args: (read_only(late), _load(args))[1])
    assert cli.main([*grid, "--output", str(late / "grid.png")]) == 1
    assert f"could not write {late / 'grid.png'} (--output):" in error_of(capsys)
    # an export whose folder becomes read-only after its first image: that image is kept, the message says so
    import ddpm_hub.export

    batches = ddpm_hub.export.sample_batches
    late = tmp_path / "late-export"

    def then_read_only(*args, **kwargs):
        for number, batch in enumerate(batches(*args, **kwargs)):
            if number == 1:
                read_only(late)
            yield batch

    monkeypatch.setattr(ddpm_hub.commands, "load_model", _load)
    monkeypatch.setattr(ddpm_hub.export, "sample_batches", then_read_only)
    assert cli.main(sample_into(model, late, "--batch_size", "1")) == 1
    message = error_of(capsys)
    assert f"could not write {late / '000001.png'}" in message and "written before are complete and kept" in message
    assert sorted(p.name for p in late.glob("*.png")) == ["000000.png"]


def _load(args):
    from ddpm_hub.resolver import load_pipeline

    return load_pipeline(args.model, seed=args.seed).to(args.device)


# ----------------------------------------------------------------------------------------------------------------
# 4. Markup injection into the model card; local paths in published files

HOSTILE = ["x`<img src=x onerror=alert(1)>`y", "a|b", "new\nline", "**bold** [link](http://evil) ~~s~~ $x$ &amp;"]


def rendered_html(markdown: str) -> str:
    markdown_it = pytest.importorskip("markdown_it")
    return markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(markdown)


def test_hostile_class_and_dataset_names_are_shown_literally_in_the_card(tmp_path):
    import html

    folder = tmp_path / "model"
    base = build_pipeline("ddpm-tiny-8", seed=0, unet_overrides={"num_class_embeds": 5})
    DDPMHubPipeline(base.unet, base.scheduler, id2label=dict(enumerate(HOSTILE)), null_class_label=4).save_pretrained(
        folder
    )
    evil = "evil|set<script>alert(1)</script>"
    (folder / "training_options.json").write_text(
        json.dumps({"dataset_name": evil, "dataset_split": "tr|ain\n<b>x</b>", "pipeline": "p`<i>q"})
    )
    (folder / "training_summary.json").write_text(json.dumps({"steps": 3, "dataset": {"source": evil}}))
    metric = {"value": 1.5, "dataset": evil, "split": "a|b", "method": "<u>m</u>|x", "command": "eval `x` | <b>"}
    (folder / METRICS_FILE).write_text(json.dumps({"fid": metric}))
    card = str(render_model_card(folder, "alice/hostile"))
    page = rendered_html(card.split("---", 2)[2])
    for tag in ("<img", "<script", "<b>", "<i>", "<u>", "<strong>", "<del>", 'href="http://evil"'):
        assert tag not in page, tag
    text = html.unescape(re.sub(r"</?code>", "", page))  # the text a reader sees
    for name in (
        "x`<img src=x onerror=alert(1)>`y",
        "a|b",
        "new line",
        "**bold** [link](http://evil) ~~s~~ $x$ &amp;",
    ):
        assert name in text  # shown, literally
    classes = next(line for line in card.splitlines() if line.startswith("| classes |"))
    cells = [cell for cell in re.split(r"(?<!\\)\|", classes)][1:-1]
    assert len(cells) == 2  # one row, two cells: no name split the table
    assert "a dataset (evil|set<script>alert(1)</script>), split tr|ain <b>x</b>." in text.replace("local ", "")


def test_published_files_carry_no_local_paths(tmp_path):
    from ddpm_hub.hub import files_to_upload, stage

    run, data = tmp_path / "runs" / "digits", tmp_path / "my data" / "photos"
    data.mkdir(parents=True)
    build_pipeline("ddpm-tiny-8").save_pretrained(run)
    options = {
        "output_dir": str(run),
        "train_data_dir": str(data),
        "cache_dir": str(tmp_path / "cache"),
        "pipeline": str(tmp_path / "pipelines" / "ddpm-tiny-8"),
        "resume_from_checkpoint": str(run / "checkpoints" / "checkpoint-30"),
        "logging_dir": "logs",
        "seed": 0,
    }
    (run / "training_options.json").write_text(json.dumps(options))
    skipped = [["cat/broken.png", f"cannot identify image file '{data}/cat/broken.png'"]]
    summary = {"steps": 3, "pipeline": options["pipeline"], "dataset": {"source": str(data), "skipped": skipped}}
    (run / "training_summary.json").write_text(json.dumps(summary))
    (run / METRICS_FILE).write_text(json.dumps({"fid": {"value": 3.0, "dataset": str(data), "method": "m"}}))
    (run / "sweep.md").write_text(
        f"| a |\n| --- |\n| 1 |\n\nProduced by `ddpm-hub eval {run} --train_data_dir {data}`.\n"
    )
    staging = tmp_path / "staging"
    staging.mkdir()
    stage(run, files_to_upload(run), staging, "alice/digits")
    published = {
        path.relative_to(staging).as_posix(): path.read_bytes() for path in staging.rglob("*") if path.is_file()
    }
    leaks = [name for name, content in published.items() if str(tmp_path).encode() in content]
    assert not leaks
    staged = json.loads(published["training_options.json"])
    assert staged["output_dir"] == "." and staged["train_data_dir"] == "photos" and staged["cache_dir"] == "cache"
    assert staged["pipeline"] == "ddpm-tiny-8" and staged["resume_from_checkpoint"] == "checkpoints/checkpoint-30"
    assert staged["logging_dir"] == "logs" and staged["seed"] == 0
    record = json.loads(published["training_summary.json"])
    assert record["dataset"]["skipped"] == [["cat/broken.png", "cannot identify image file 'photos/cat/broken.png'"]]
    assert b"Produced by `ddpm-hub eval . --train_data_dir photos`" in published["sweep.md"]
    assert b"a local image folder (`photos`)" in published["README.md"]


# ----------------------------------------------------------------------------------------------------------------
# 5. The code published is the installed package's; push refuses a repo id the Hub would refuse


def test_a_tampered_code_file_is_never_published_and_is_named(tmp_path, hub_server, hub_cache, caplog):
    import logging
    from pathlib import Path

    from huggingface_hub import hf_hub_download

    import ddpm_hub
    from ddpm_hub.hub import publish

    folder = tmp_path / "model"
    build_pipeline("ddpm-tiny-8").save_pretrained(folder)
    pipeline_file, scheduler_file = folder / "pipeline_ddpm_hub.py", folder / "scheduler" / "scheduling_ddpm_hub.py"
    pipeline_file.write_text(pipeline_file.read_text() + "\nimport os\nos.system('echo pwned')\n")
    scheduler_file.write_text("raise SystemExit('tampered')\n")
    (folder / "helper_of_mine.py").write_text("x = 1\n")
    repo_id = f"alice/tampered-{tmp_path.name[-8:]}"
    with caplog.at_level(logging.WARNING, logger="ddpm_hub.hub"):
        publish(folder, repo_id, token="hf_alice_write")
    installed = Path(ddpm_hub.__file__).parent
    for name, source in (("pipeline_ddpm_hub.py", "pipeline_ddpm_hub.py"), ("scheduler/scheduling_ddpm_hub.py", None)):
        remote = Path(hf_hub_download(repo_id, name, cache_dir=hub_cache))
        assert remote.read_bytes() == (installed / (source or "scheduling_ddpm_hub.py")).read_bytes()
    warning = " ".join(record.getMessage() for record in caplog.records)
    assert "differ from ddpm_hub" in warning and "pipeline_ddpm_hub.py, scheduler/scheduling_ddpm_hub.py" in warning
    assert "are not files of ddpm_hub: helper_of_mine.py" in warning


@pytest.mark.parametrize(
    "repo_id", ["probe/bad name", "../../etc", "probe/x/y", "-probe/x", "probe/", "p" * 120, "probe/" + "x" * 100]
)
def test_push_refuses_an_invalid_repo_id_in_one_line_before_any_work(tmp_path, capsys, repo_id, monkeypatch):
    import ddpm_hub.hub

    folder = tmp_path / "model"
    build_pipeline("ddpm-tiny-8").save_pretrained(folder)
    monkeypatch.setenv("HF_TOKEN", "hf_alice_write")
    monkeypatch.setattr(ddpm_hub.hub, "files_to_upload", lambda folder: pytest.fail("the folder was read"))
    assert cli.main(["push", str(folder), f"--repo-id={repo_id}"]) == 2
    message = error_of(capsys)
    assert f"The repo id {repo_id!r} is not one the Hub accepts (" in message
    assert "Accepted: NAME or NAMESPACE/NAME, each made of letters, digits" in message


# ----------------------------------------------------------------------------------------------------------------
# 6. Resume: the checkpoint records its model; another one is named, and the checkpoint is never called damaged


def test_record_differences_name_each_changed_value_and_the_option_that_sets_it():
    from ddpm_hub.training.checkpoint_folders import TrainingState, record_differences

    saved = {
        "unet": {"in_channels": 3, "num_class_embeds": 11, "sample_size": 8, "block_out_channels": [32, 64]},
        "scheduler": {"prediction_type": "epsilon", "beta_schedule": "linear", "num_train_timesteps": 1000},
        "conditioning": {"id2label": {"0": "cat"}, "null_class_label": 10},
        "objective": {"snr_gamma": None},
    }
    same = {
        **saved,
        "unet": {**saved["unet"], "block_out_channels": (32, 64)},
        "conditioning": {"id2label": {0: "cat"}},
    }
    assert record_differences(saved, same) == []  # tuples and int keys are what JSON made of them
    other = {
        "unet": {**saved["unet"], "num_class_embeds": None, "new_field_of_a_newer_diffusers": 1},
        "scheduler": {**saved["scheduler"], "prediction_type": "v_prediction", "beta_schedule": "cosine"},
        "objective": {"snr_gamma": 5.0},
    }
    assert record_differences(saved, other) == [
        "objective.snr_gamma: None in the checkpoint, 5.0 in this run (--snr_gamma)",
        "scheduler.beta_schedule: 'linear' in the checkpoint, 'cosine' in this run (--ddpm_beta_schedule)",
        "scheduler.prediction_type: 'epsilon' in the checkpoint, 'v_prediction' in this run (--prediction_type)",
        "unet.num_class_embeds: 11 in the checkpoint, None in this run (--pipeline)",
    ]
    state = TrainingState(4, 4, 0, 4, 0, 4, 1, 64, None, saved)
    assert state.model == saved


@pytest.mark.slow
def test_resuming_with_another_model_or_objective_names_what_differs_and_keeps_the_checkpoint(tmp_path):
    from helpers import TINY, check_ok, conditional_config, run_script

    out = tmp_path / "run"
    common = [*TINY, "--output_dir", str(out), "--max_train_steps", "2", "--checkpointing_steps", "2"]
    check_ok(run_script(common))
    checkpoint = out / "checkpoints" / "checkpoint-2"
    state = json.loads((checkpoint / "training_state.json").read_text())
    assert state["model"]["scheduler"]["prediction_type"] == "epsilon" and state["model"]["unet"]["in_channels"] == 3
    resume = [
        *common[:-4],
        "--max_train_steps",
        "4",
        "--checkpointing_steps",
        "2",
        "--resume_from_checkpoint",
        "latest",
    ]
    beta = "scheduler.beta_schedule: 'linear' in the checkpoint, 'squaredcos_cap_v2' in this run"
    cases = {
        ("--prediction_type", "v_prediction"): "scheduler.prediction_type: 'epsilon' in the checkpoint, "
        "'v_prediction' in this run (--prediction_type)",
        ("--ddpm_beta_schedule", "cosine"): f"{beta} (--ddpm_beta_schedule)",
        ("--pipeline", str(conditional_config(tmp_path))): "unet.num_class_embeds: None in the checkpoint, 11 in this",
    }  # fmt: skip
    for extra, message in cases.items():
        result = run_script([*resume, *extra])
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert message in result.stderr and "The checkpoint is intact" in result.stderr
        assert "damaged" not in result.stderr and "delete" not in result.stderr
    assert (checkpoint / "model.safetensors").is_file() and state == json.loads(
        (checkpoint / "training_state.json").read_text()
    )
    check_ok(run_script(resume))  # the same options resume


# ----------------------------------------------------------------------------------------------------------------
# 1. A streamed label outside the classes is skipped and counted, never reaches the class embedding


def labelled_shards(folder, labels: list, names: list[str] | None = None):
    """One parquet shard of 8x8 images (red = the row's number) with `labels` (a ClassLabel column with `names`)."""
    import io

    import datasets
    from PIL import Image

    def png(value: int) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (value * 10, 0, 0)).save(buffer, format="PNG")
        return buffer.getvalue()

    label = datasets.ClassLabel(names=names) if names else datasets.Value("int64")
    features = datasets.Features({"image": datasets.Image(), "label": label})
    rows = {"image": [{"bytes": png(i), "path": f"row{i}.png"} for i in range(len(labels))], "label": labels}
    folder.mkdir(parents=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    return folder


def test_a_streamed_label_outside_the_classes_is_skipped_and_counted(tmp_path):
    from dataclasses import replace

    from ddpm_hub.conditioning import Conditioning
    from ddpm_hub.data import DataOptions
    from ddpm_hub.data.streaming import open_stream

    cases = {
        "named": (labelled_shards(tmp_path / "named", [0, 1, -1, 1, 0, 1], ["even", "odd"]), [2], "(0..1)"),
        "unnamed": (labelled_shards(tmp_path / "unnamed", [0, 57, 3, -1, 9, 10]), [1, 3, 5], "(0..9)"),
    }
    conditioning = Conditioning.of({"num_class_embeds": 11})  # 10 classes and the null label 10
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


@pytest.mark.slow
def test_streaming_training_skips_a_row_labelled_minus_one_instead_of_crashing(tmp_path):
    from helpers import TINY, check_ok, conditional_config, run_script, summary

    shards = labelled_shards(tmp_path / "shards", [0, 1, -1, 1, 0, 1, 0, 1, 0, 1], ["even", "odd"])
    tiny = [arg for arg, before in zip(TINY, [None, *TINY]) if "--max_train_samples" not in (arg, before)]
    out = tmp_path / "run"
    args = [*tiny, "--pipeline", str(conditional_config(tmp_path)), "--dataset_name", str(shards), "--streaming"]
    args += ["--max_train_steps", "3", "--output_dir", str(out), "--cache_dir", str(tmp_path / "hf")]
    result = run_script(args)
    check_ok(result)
    assert "IndexError" not in result.stderr and "Skipped a streamed example" in result.stderr
    record = summary(out)["dataset"]
    assert record["num_skipped"] >= 1 and "label -1 in column 'label' is not one of the classes" in str(record)


# ----------------------------------------------------------------------------------------------------------------
# 9. The decoded cache: what it checks cheaply, what it reads without write access, what it checks on demand


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


# ----------------------------------------------------------------------------------------------------------------
# Also: the noise of every run that a user cannot act on


@pytest.fixture
def diffusers_warnings():
    """The messages diffusers' loggers emit at WARNING (they do not propagate to the root logger's capture)."""
    import logging

    from diffusers.utils import logging as diffusers_logging

    messages = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    root = logging.getLogger("diffusers")
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_warning()
    root.addHandler(handler)
    yield messages
    root.removeHandler(handler)
    diffusers_logging.set_verbosity(verbosity)


def test_loading_and_casting_say_nothing_a_user_cannot_act_on(tmp_path, diffusers_warnings):
    from diffusers import DiffusionPipeline

    conditional().save_pretrained(tmp_path / "model")
    plain = DiffusionPipeline.from_pretrained(tmp_path / "model", trust_remote_code=True)
    ours = DDPMHubPipeline.from_pretrained(tmp_path / "model")
    assert plain.config.id2label == ours.config.id2label == {i: f"c{i}" for i in range(10)}
    ours.to(torch.bfloat16)
    plain.to("cpu", torch.float32)
    DDPMHubInpaintPipeline.from_pipe(ours, torch_dtype=torch.float32)
    assert not [m for m in diffusers_warnings if "Expected types for id2label" in m or "kept in float32" in m]
    ours.unet._keep_in_fp32_modules = ["conv_in"]  # a model that does keep modules in float32 is still told
    ours.to(torch.bfloat16)
    assert any("should be kept in float32: ['conv_in']" in m for m in diffusers_warnings)


def test_class_settings_that_do_not_fit_the_embedding_are_refused_by_name(tmp_path):
    conditional(num_classes=6).save_pretrained(tmp_path / "model")
    index_path = tmp_path / "model" / "model_index.json"
    index = json.loads(index_path.read_text())
    for edit, message in (
        ({"num_classes": 20}, r"num_classes=20 is not in 1..10"),
        ({"null_class_label": 11}, r"null_class_label=11 is not a row of the class embedding \(0..10\)"),
        ({"id2label": {str(i): f"c{i}" for i in range(12)}}, r"id2label names ids 0..11, beyond the 10 classes"),
    ):
        index_path.write_text(json.dumps({**index, **edit}))
        pipeline = DDPMHubPipeline.from_pretrained(tmp_path / "model")
        with pytest.raises(ValueError, match=message):  # before any UNet call reaches a row that does not exist
            pipeline(class_labels=0, num_inference_steps=1)
