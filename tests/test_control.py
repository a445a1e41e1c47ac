"""Controlling generation: class labels and classifier-free guidance, RePaint inpainting, SDEdit image-to-image,
`callback_on_step_end`, the pictures of both processes and their commands. A tiny class-conditional UNet
(ddpm-tiny-8 plus 10 classes and the null label, random weights: exactness does not need training).
"""

import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from helpers import error_of, sample_into
from PIL import Image

from ddpm_hub import DDPMHubImg2ImgPipeline, DDPMHubInpaintPipeline, DDPMHubPipeline, cli
from ddpm_hub.pipelines import Source
from ddpm_hub.shipped.pipeline_ddpm_hub_inpaint import repaint_levels

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def conditional(null: int | None = 10, variance_type: str = "fixed_small") -> DDPMHubPipeline:
    base = Source.of(
        "ddpm-tiny-8").build(
        seed=0,
        unet_overrides={"num_class_embeds": 11, "out_channels": 6 if variance_type == "learned_range" else 3},
        scheduler_overrides={"variance_type": variance_type},
    )
    with torch.no_grad():  # a distinct embedding per class, so that labels change the output
        base.unet.class_embedding.weight.normal_(0, 1, generator=torch.Generator().manual_seed(1))
    pipeline = DDPMHubPipeline(base.unet, base.scheduler, id2label=dict(enumerate(NAMES)), null_class_label=null)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def run(pipeline, steps: int = 4, seeds=(0, 1), **kwargs) -> np.ndarray:
    generator = [torch.Generator().manual_seed(s) for s in seeds]
    return pipeline(num_inference_steps=steps, generator=generator, output_type="np", **kwargs).images


def reference_conditional_sampling(pipeline, labels: list[int], steps: int, seeds) -> np.ndarray:
    """Plain conditional sampling written out with diffusers' DDPMScheduler: no guidance code involved."""
    config = {k: v for k, v in pipeline.scheduler.config.items() if not k.startswith("_")}
    scheduler = DDPMScheduler(**config)
    scheduler.set_timesteps(steps)
    generator = [torch.Generator().manual_seed(s) for s in seeds]
    x = torch.cat([torch.randn((1, 3, 8, 8), generator=g) for g in generator])
    labels = torch.tensor(labels)
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps = pipeline.unet(x, t, class_labels=labels).sample
            x = scheduler.step(eps, t, x, generator=generator).prev_sample
    return (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


# ----------------------------------------------------------------------------------------------------------------
# Class labels and guidance


def test_guidance_scale_one_is_conditional_sampling_and_zero_is_the_null_label():
    pipeline = conditional()
    np.testing.assert_array_equal(
        run(pipeline, class_labels=[3, 7], guidance_scale=1.0),
        reference_conditional_sampling(pipeline, [3, 7], 4, (0, 1)),
    )
    np.testing.assert_array_equal(run(pipeline, class_labels=[3, 7], guidance_scale=0.0), run(pipeline))
    assert not np.array_equal(run(pipeline, class_labels=3), run(pipeline, class_labels=7))  # labels matter


def test_guided_output_is_the_classifier_free_formula_in_one_batched_call():
    pipeline = conditional()
    x_t = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    labels, t = torch.tensor([3, 7]), torch.tensor(500)
    calls = []
    hook = pipeline.unet.register_forward_hook(
        lambda module, args, kwargs, output: calls.append(args[0].shape[0]), with_kwargs=True
    )
    with torch.no_grad():
        guided = pipeline.model_output(x_t, t, pipeline.prepare_condition(None, 3.0, class_labels=labels)[0])
        hook.remove()
        conditional_eps = pipeline.unet(x_t, t, class_labels=labels).sample
        null_eps = pipeline.unet(x_t, t, class_labels=torch.tensor([10, 10])).sample
    assert calls == [4]  # one UNet call on 2B images
    torch.testing.assert_close(guided, null_eps + 3.0 * (conditional_eps - null_eps), atol=1e-5, rtol=1e-5)


def test_learned_range_guides_the_mean_and_keeps_the_conditional_variance():
    pipeline = conditional(variance_type="learned_range")
    x_t, labels, t = torch.randn(2, 3, 8, 8), torch.tensor([1, 2]), torch.tensor(100)
    with torch.no_grad():
        guided = pipeline.model_output(x_t, t, pipeline.prepare_condition(None, 2.0, class_labels=labels)[0])
        conditional_output = pipeline.unet(x_t, t, class_labels=labels).sample
    assert guided.shape == (2, 6, 8, 8)
    torch.testing.assert_close(guided[:, 3:], conditional_output[:, 3:], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(guided[:, :3], conditional_output[:, :3])
    assert np.isfinite(run(pipeline, class_labels=[1, 2], guidance_scale=2.0)).all()


def test_labels_by_name_by_id_as_a_tensor_and_one_for_all_give_the_same_images():
    pipeline = conditional()
    by_id = run(pipeline, class_labels=[3, 3], guidance_scale=2.0)
    np.testing.assert_array_equal(by_id, run(pipeline, class_labels=["three", "three"], guidance_scale=2.0))
    np.testing.assert_array_equal(by_id, run(pipeline, class_labels=torch.tensor([3, 3]), guidance_scale=2.0))
    np.testing.assert_array_equal(by_id, run(pipeline, class_labels="three", batch_size=2, guidance_scale=2.0))
    assert pipeline.get_label_ids(["seven", "zero"]) == [7, 0]


@pytest.mark.parametrize("scheduler_class", [DDIMScheduler, DPMSolverMultistepScheduler])
def test_guidance_with_other_schedulers_and_respacing(scheduler_class):
    pipeline = conditional()
    swapped = DDPMHubPipeline(pipeline.unet, scheduler_class.from_config(pipeline.scheduler.config), **{
        "id2label": pipeline.config.id2label, "null_class_label": 10})  # fmt: skip
    swapped.set_progress_bar_config(disable=True)
    images = run(swapped, steps=5, class_labels=[2, 5], guidance_scale=2.5)
    assert images.shape == (2, 8, 8, 3) and np.isfinite(images).all()
    np.testing.assert_array_equal(images, run(swapped, steps=5, class_labels=[2, 5], guidance_scale=2.5))


@pytest.mark.parametrize(
    "pipeline_kwargs, call, message",
    [
        ({}, {"class_labels": "eleven"}, "Unknown label 'eleven'"),
        ({}, {"class_labels": [12]}, r"ids or names of the 10 classes this model was trained on \(ids 0..9: zero,"),
        ({}, {"class_labels": [10]}, "class label 10 is the null label"),
        ({}, {"class_labels": [1, 2, 3], "batch_size": 2}, "Got 3 class labels for batch_size=2"),
        ({"null": None}, {"class_labels": [1], "guidance_scale": 2.0}, "needs a null label"),
        ({"null": None}, {}, "has no null label: pass class_labels"),
    ],
)
def test_bad_labels_and_guidance(pipeline_kwargs, call, message):
    with pytest.raises(ValueError, match=message):
        run(conditional(**pipeline_kwargs), seeds=(0,) * call.get("batch_size", 1), **call)


def test_labels_or_guidance_for_an_unconditional_model_are_refused():
    pipeline = Source.of("ddpm-tiny-8").build()
    with pytest.raises(ValueError, match="this model is unconditional"):
        pipeline(class_labels=[1], num_inference_steps=2)
    with pytest.raises(ValueError, match="guidance_scale=2.0 needs a condition to guide .* is unconditional"):
        pipeline(guidance_scale=2.0, num_inference_steps=2)


def test_callback_on_step_end_sees_and_edits_the_trajectory():
    pipeline = conditional()
    seen = []

    def callback(pipe, i, t, tensors):
        seen.append((i, int(t), tuple(tensors["image"].shape), tuple(tensors["pred_original_sample"].shape)))
        return {"image": torch.zeros_like(tensors["image"])} if i == 3 else {}

    images = run(
        pipeline, class_labels=[1, 2], callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=["image", "pred_original_sample"],
    )  # fmt: skip
    assert [s[0] for s in seen] == [0, 1, 2, 3] and seen[0][1] > seen[-1][1]
    assert seen[0][2] == seen[0][3] == (2, 3, 8, 8)
    np.testing.assert_array_equal(images, np.full_like(images, 0.5))  # x_0 := 0 at the last step -> grey
    with pytest.raises(ValueError, match="not in"):
        run(pipeline, class_labels=1, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["noise_pred"])


# ----------------------------------------------------------------------------------------------------------------
# Inpainting (RePaint)


def digit_image(size: int = 8) -> Image.Image:
    from sklearn.datasets import load_digits

    pixels = (load_digits().images[3] * 255 / 16).astype(np.uint8)
    return Image.fromarray(pixels).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)


def half_mask(size: int = 8) -> Image.Image:
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[:, size // 2 :] = 255  # white: generate the right half
    return Image.fromarray(mask)


@pytest.mark.parametrize("steps, jump_length, jump_n_sample", [(10, 3, 2), (12, 4, 3), (6, 10, 10), (8, 2, 1)])
def test_repaint_schedule_and_unet_calls(steps, jump_length, jump_n_sample):
    levels = repaint_levels(steps, jump_length, jump_n_sample)
    assert levels[0] == steps and levels[-1] == 0 and all(abs(a - b) == 1 for a, b in zip(levels, levels[1:]))
    jump_points = len(range(0, steps - jump_length, jump_length))
    expected_calls = steps + jump_points * (jump_n_sample - 1) * jump_length
    pipeline = DDPMHubInpaintPipeline.from_pipe(Source.of("ddpm-tiny-8").build())
    pipeline.set_progress_bar_config(disable=True)
    calls = []
    pipeline.unet.register_forward_hook(lambda *args: calls.append(1))
    pipeline(
        digit_image(), half_mask(), num_inference_steps=steps, jump_length=jump_length, jump_n_sample=jump_n_sample
    )
    assert len(calls) == expected_calls == sum(b < a for a, b in zip(levels, levels[1:]))


@pytest.mark.parametrize("guided", [False, True], ids=["unconditional", "conditional-guided"])
def test_inpainting_keeps_the_known_pixels_exactly(guided):
    base = conditional() if guided else Source.of("ddpm-tiny-8").build()
    pipeline = DDPMHubInpaintPipeline.from_pipe(base)
    pipeline.set_progress_bar_config(disable=True)
    image = np.asarray(digit_image(), dtype=np.float32) / 255
    extra = {"class_labels": [3, 8], "guidance_scale": 2.0} if guided else {}
    generator = [torch.Generator().manual_seed(s) for s in (0, 1)]
    out = pipeline([digit_image()] * 2, half_mask(), num_inference_steps=10, jump_length=3, jump_n_sample=2,
                   generator=generator, output_type="np", **extra).images  # fmt: skip
    np.testing.assert_allclose(out[:, :, :4], np.broadcast_to(image[:, :4], (2, 8, 4, 3)), atol=1e-6)  # known: kept
    assert np.abs(out[:, :, 4:] - image[:, 4:]).max() > 0.1  # unknown: generated
    assert not np.array_equal(out[0], out[1])


def test_inpainting_inputs_any_size_and_mode_and_its_errors():
    pipeline = DDPMHubInpaintPipeline.from_pipe(Source.of("ddpm-tiny-8").build())
    pipeline.set_progress_bar_config(disable=True)
    with pytest.warns(UserWarning, match="resized to the model's"):
        out = pipeline(digit_image(32).convert("L"), half_mask(32).convert("RGB"), num_inference_steps=3,
                       jump_n_sample=1, output_type="np").images  # fmt: skip
    assert out.shape == (1, 8, 8, 3)
    mask = torch.zeros(8, 8)
    mask[:, 4:] = 1
    array = np.asarray(digit_image())
    out = pipeline(array, mask, num_inference_steps=3, jump_n_sample=1, output_type="np").images
    np.testing.assert_allclose(out[0, :, :4], array[:, :4] / 255, atol=1e-6)
    dpm = DDPMHubInpaintPipeline(pipeline.unet, DPMSolverMultistepScheduler.from_config(pipeline.scheduler.config))
    with pytest.raises(ValueError, match="stateless ancestral scheduler"):
        dpm(digit_image(), half_mask(), num_inference_steps=3)
    with pytest.raises(ValueError, match="jump_length and jump_n_sample"):
        pipeline(digit_image(), half_mask(), num_inference_steps=3, jump_length=0)


# ----------------------------------------------------------------------------------------------------------------
# Image-to-image (SDEdit)


def test_img2img_strength_zero_returns_the_input_and_one_is_plain_sampling():
    base = conditional()
    pipeline = DDPMHubImg2ImgPipeline.from_pipe(base)
    assert pipeline.unet is base.unet and pipeline.scheduler is base.scheduler  # components shared, not copied
    image = np.asarray(digit_image(), dtype=np.float32) / 255
    same = pipeline(image, strength=0.0, num_inference_steps=10, output_type="np").images
    np.testing.assert_allclose(same[0], image, atol=1e-6)
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    kwargs = {"num_inference_steps": 6, "class_labels": [4, 5], "guidance_scale": 2.0, "output_type": "np"}
    full = pipeline(
        image, strength=1.0, noise=noise, generator=[torch.Generator().manual_seed(s) for s in (0, 1)], **kwargs
    )
    plain = base(noise=noise, generator=[torch.Generator().manual_seed(s) for s in (0, 1)], **kwargs)
    np.testing.assert_array_equal(full.images, plain.images)


def test_img2img_runs_strength_times_the_steps_and_checks_strength():
    pipeline = DDPMHubImg2ImgPipeline.from_pipe(Source.of("ddpm-tiny-8").build())
    pipeline.set_progress_bar_config(disable=True)
    calls = []
    pipeline.unet.register_forward_hook(lambda *args: calls.append(1))
    out = pipeline(digit_image(), strength=0.5, num_inference_steps=10, output_type="np").images
    assert len(calls) == 5 and out.shape == (1, 8, 8, 3)
    with pytest.raises(ValueError, match="strength must be in"):
        pipeline(digit_image(), strength=1.5)


def test_img2img_refuses_a_strength_that_leaves_no_step_and_says_what_would_give_one():
    # issue 28: img2img at strength 0.01 with 10 steps made 0 UNet calls without a word
    pipeline = DDPMHubImg2ImgPipeline.from_pipe(Source.of("ddpm-tiny-8").build())
    pipeline.set_progress_bar_config(disable=True)
    calls = []
    pipeline.unet.register_forward_pre_hook(lambda *args: calls.append(1))
    message = (
        r"strength=0.01 with num_inference_steps=10 runs round\(0.01 x 10\) = 0 reverse steps: raise strength to at "
        r"least 0.1 or num_inference_steps to at least 100 \(strength=0 returns the input\)"
    )
    with pytest.raises(ValueError, match=message):
        pipeline(digit_image(), strength=0.01, num_inference_steps=10)
    with pytest.raises(ValueError, match=r"raise strength to at least 0.1 \(strength=0"):  # 10000 steps do not exist
        pipeline(digit_image(), strength=0.0001, num_inference_steps=10)
    with pytest.raises(ValueError, match="num_inference_steps must be an integer between 1 and"):
        pipeline(digit_image(), strength=0.5, num_inference_steps=0)
    assert calls == []
    pipeline(digit_image(), strength=0.1, num_inference_steps=10, output_type="np")  # the fix it names: one step
    assert len(calls) == 1


def test_task_pipelines_refuse_images_that_are_not_finite_or_not_in_0_1():
    # issue 28: float inputs outside [0, 1] were clamped silently, NaN inputs gave NaN outputs
    base = Source.of("ddpm-tiny-8").build()
    base.set_progress_bar_config(disable=True)
    image, mask = torch.rand(1, 3, 8, 8), torch.ones(1, 1, 8, 8)
    img2img, inpaint = DDPMHubImg2ImgPipeline.from_pipe(base), DDPMHubInpaintPipeline.from_pipe(base)
    for call in (lambda x, m: img2img(x, num_inference_steps=2), lambda x, m: inpaint(x, m, num_inference_steps=2)):
        with pytest.raises(ValueError, match=r"image holds values in \[-1, 1\]; float images are taken in \[0, 1\]"):
            call(image * 0 + torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1), mask)
        with pytest.raises(ValueError, match="image holds NaN or infinite values"):
            call(torch.full((1, 3, 8, 8), float("nan")), mask)
    with pytest.raises(ValueError, match="noise holds NaN or infinite values"):
        img2img(image, noise=torch.full((1, 3, 8, 8), float("nan")), num_inference_steps=2)
    with pytest.raises(ValueError, match="mask_image holds NaN or infinite values"):
        inpaint(image, torch.full((1, 1, 8, 8), float("nan")), num_inference_steps=2)


# ----------------------------------------------------------------------------------------------------------------
# Loading: every task from the same folder, and plain diffusers with trust_remote_code


def test_all_three_pipelines_load_from_one_saved_folder(tmp_path):
    pipeline = conditional()
    pipeline.save_pretrained(tmp_path)
    for cls in (DDPMHubPipeline, DDPMHubInpaintPipeline, DDPMHubImg2ImgPipeline):
        loaded = cls.from_pretrained(tmp_path)
        assert type(loaded) is cls and loaded.config.null_class_label == 10 and loaded.labels["three"] == 3
    loaded = DDPMHubPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(run(loaded, class_labels=[3, 9], guidance_scale=2.0),
                                  run(pipeline, class_labels=[3, 9], guidance_scale=2.0))  # fmt: skip


PLAIN_DIFFUSERS_INPAINT = textwrap.dedent(
    """
    import sys
    sys.modules["ddpm_hub"] = None  # ddpm_hub cannot be imported in this process
    import numpy as np, torch
    from diffusers import DiffusionPipeline
    from PIL import Image
    torch.set_num_threads(1)
    folder, image, mask, out = sys.argv[1:5]
    task = "pipeline_ddpm_hub_inpaint"
    pipeline = DiffusionPipeline.from_pretrained(folder, custom_pipeline=task, trust_remote_code=True)
    pipeline.set_progress_bar_config(disable=True)
    print("LOADED", type(pipeline).__name__, type(pipeline.scheduler).__name__)
    images = pipeline(Image.open(image), Image.open(mask), num_inference_steps=6, jump_length=2, jump_n_sample=2,
                      class_labels="three", guidance_scale=2.0, generator=torch.manual_seed(0),
                      output_type="np").images
    np.save(out, images)
    """
)


@pytest.mark.slow
def test_plain_diffusers_reaches_inpainting_with_custom_pipeline(tmp_path):
    pipeline = conditional()
    pipeline.save_pretrained(tmp_path / "folder")
    digit_image().save(tmp_path / "image.png")
    half_mask().save(tmp_path / "mask.png")
    args = [str(tmp_path / name) for name in ("folder", "image.png", "mask.png", "out.npy")]
    result = subprocess.run([sys.executable, "-c", PLAIN_DIFFUSERS_INPAINT, *args], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LOADED DDPMHubInpaintPipeline DDPMHubScheduler" in result.stdout
    inpaint = DDPMHubInpaintPipeline.from_pipe(pipeline)
    expected = inpaint(Image.open(tmp_path / "image.png"), Image.open(tmp_path / "mask.png"), num_inference_steps=6,
                       jump_length=2, jump_n_sample=2, class_labels="three", guidance_scale=2.0,
                       generator=torch.manual_seed(0), output_type="np").images  # fmt: skip
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)


# ----------------------------------------------------------------------------------------------------------------
# Pictures and commands


def test_commands_write_the_pictures(tmp_path, capsys):
    model = tmp_path / "model"
    conditional().save_pretrained(model)
    digit_image(16).save(tmp_path / "digit.png")
    half_mask(16).save(tmp_path / "mask.png")
    out = {name: str(tmp_path / f"{name}.png") for name in ("grid", "trajectory", "forward", "inpaint", "img2img")}
    common = ["--steps", "6", "--scale", "1"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 16x16 inputs resized to the 8x8 model
        assert cli.main(["sample", str(model), "--num_images", "10", *common, "--output", out["grid"]]) == 0
        labels = ["--class_labels", "three,seven", "--guidance_scale", "2"]
        assert cli.main(["sample", str(model), "--trajectory", "--num_images", "2", "--frames", "3", *common,
                         *labels, "--output", out["trajectory"]]) == 0  # fmt: skip
        assert cli.main(["noise", str(tmp_path / "digit.png"), "--timesteps", "0,10,1000", "--scale", "1",
                         "--output", out["forward"]]) == 0  # fmt: skip
        jumps = ["--jump_length", "2", "--jump_n_sample", "2"]
        assert cli.main(["inpaint", str(model), str(tmp_path / "digit.png"), str(tmp_path / "mask.png"), *common,
                         "--num_images", "2", *jumps, "--output", out["inpaint"]]) == 0  # fmt: skip
        assert cli.main(["img2img", str(model), str(tmp_path / "digit.png"), *common, "--num_images", "3",
                         "--strength", "0.5", "--output", out["img2img"]]) == 0  # fmt: skip
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed[0]["class_labels"] == list(range(10))  # every class in turn
    assert len(printed[1]["timesteps"]) == 3 and printed[2]["timesteps"] == [0, 10, 1000]
    cell = 8 + 2  # an 8x8 image and the grid's padding
    sizes = {name: Image.open(path).size for name, path in out.items()}
    assert sizes["grid"] == (10 * cell + 2, cell + 2)  # a column per class
    assert sizes["trajectory"] == (3 * cell + 2, 4 * cell + 2)  # x_t and predicted x_0 rows for 2 images
    assert sizes["forward"] == (3 * 18 + 2, 18 + 2)  # the 16x16 input at 3 timesteps
    assert sizes["inpaint"] == (4 * cell + 2, cell + 2) and sizes["img2img"] == (4 * cell + 2, cell + 2)
    forward = np.asarray(Image.open(out["forward"]).convert("L"), dtype=np.float32)
    np.testing.assert_allclose(forward[2:18, 2:18], np.asarray(digit_image(16).convert("L")), atol=1)  # t = 0: x_0


def test_command_errors_are_messages(tmp_path, capsys):
    model = tmp_path / "model"
    conditional(null=None).save_pretrained(model)
    assert cli.main(["sample", str(model), "--class_labels", "ten", "--steps", "2"]) == 2
    assert "--class_labels/--guidance_scale: Unknown label 'ten'" in capsys.readouterr().err
    assert cli.main(["sample", str(model), "--class_labels", "1", "--guidance_scale", "2", "--steps", "2"]) == 2
    assert "needs a null label" in capsys.readouterr().err
    assert cli.main(["noise", str(tmp_path / "missing.png")]) == 2
    assert "is not a file" in capsys.readouterr().err
    (tmp_path / "digit.png").write_bytes(b"not an image")
    assert cli.main(["img2img", str(model), str(tmp_path / "digit.png"), "--strength", "2"]) == 2
    assert "--strength must be in [0, 1]" in capsys.readouterr().err
    assert cli.main(["noise", str(tmp_path / "digit.png")]) == 2
    assert "cannot be read as an image" in capsys.readouterr().err
    assert Path(tmp_path / "forward.png").exists() is False


def test_a_conditional_repo_round_trips_through_the_hub_for_all_three_tasks(hub_server, tmp_path, hub_cache):
    """Published from a saved folder, loaded by repo id with each task class: the same images as from the folder."""
    from ddpm_hub.hub.publishing import publish

    repo_id = f"alice/cond-{tmp_path.name[-8:]}"
    folder = tmp_path / "folder"
    conditional().save_pretrained(folder)
    publish(folder, repo_id, token="hf_alice_write")
    calls = {
        DDPMHubPipeline: ((), {"class_labels": ["three", "nine"], "guidance_scale": 2.0, "num_inference_steps": 4}),
        DDPMHubInpaintPipeline: (
            (digit_image(), half_mask()),
            {"num_inference_steps": 4, "jump_length": 2, "jump_n_sample": 2, "class_labels": 3, "guidance_scale": 2.0},
        ),
        DDPMHubImg2ImgPipeline: ((digit_image(),), {"strength": 0.5, "num_inference_steps": 6, "class_labels": 3}),
    }
    for cls, (args, kwargs) in calls.items():
        images = []
        for source, extra in ((repo_id, {"cache_dir": hub_cache}), (folder, {})):
            pipeline = cls.from_pretrained(source, **extra)
            assert type(pipeline) is cls and pipeline.config.null_class_label == 10
            pipeline.set_progress_bar_config(disable=True)
            labels = kwargs["class_labels"]
            generator = [
                torch.Generator().manual_seed(s) for s in range(len(labels) if isinstance(labels, list) else 1)
            ]
            images.append(pipeline(*args, generator=generator, output_type="np", **kwargs).images)
        np.testing.assert_array_equal(*images)


# ----------------------------------------------------------------------------------------------------------------
# Sampling at scale (ddpm-hub sample --output_dir)


def test_export_writes_one_png_per_image_resumes_and_refuses_other_settings(tmp_path, capsys):
    model, out = tmp_path / "model", tmp_path / "samples"
    conditional().save_pretrained(model)
    command = [
        "sample",
        str(model),
        "--num_images",
        "5",
        "--steps",
        "2",
        "--batch_size",
        "2",
        "--output_dir",
        str(out),
    ]
    assert cli.main([*command, "--format", "npz", "--guidance_scale", "2"]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert first["written"] == 5 and first["already_there"] == 0
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(5)]
    archive = np.load(first["npz"])
    assert archive["arr_0"].shape == (5, 8, 8, 3) and archive["arr_0"].dtype == np.uint8
    assert archive["arr_1"].tolist() == [0, 1, 2, 3, 4]  # a conditional model: classes in turn
    np.testing.assert_array_equal(archive["arr_0"][3], np.asarray(Image.open(files[3])))
    kept = files[3].read_bytes()
    files[3].unlink()
    assert cli.main([*command, "--format", "npz", "--guidance_scale", "2"]) == 0
    again = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert again["written"] == 1 and again["already_there"] == 4 and files[3].read_bytes() == kept  # image 3 again
    assert cli.main([*command[:5], "3", *command[6:], "--guidance_scale", "2"]) == 2  # other steps: refused
    assert "holds samples of other settings (steps: 2" in capsys.readouterr().err


@pytest.mark.slow
def test_export_under_two_processes_writes_each_image_once(tmp_path):
    from helpers import ROOT, free_port
    from processes import run_process_group

    model, out = tmp_path / "model", tmp_path / "samples"
    Source.of("ddpm-tiny-8").build().save_pretrained(model)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no"]
    launch += ["--dynamo_backend", "no", "-m", "ddpm_hub.cli", "sample", str(model), "--num_images", "1000"]
    launch += ["--steps", "1", "--batch_size", "100", "--output_dir", str(out)]
    for expected_written in (1000, 0):
        result = run_process_group(launch, 300, cwd=ROOT)
        assert result.returncode == 0, result.stderr[-3000:]
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["written"] == expected_written and report["already_there"] == 1000 - expected_written
    files = sorted(out.glob("*.png"))
    assert len(files) == 1000 and not list(out.glob(".*.tmp"))
    assert len({f.read_bytes() for f in files}) == 1000  # distinct images: every index its own noise


# ----------------------------------------------------------------------------------------------------------------
# One decoding path for every image that enters; masks by diffusers' conventions (the second reliability probe):
# images of every bit depth are decoded as training decodes them; masks follow diffusers' conventions.


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

    pipeline = Source.of("ddpm-tiny-8").build()
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

    pipeline = Source.of("ddpm-tiny-8").build()
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

    pipeline = DDPMHubInpaintPipeline.from_pipe(Source.of("ddpm-tiny-8").build())
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

    base = Source.of("ddpm-tiny-8").build()
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
# `ddpm-hub sample --output_dir` records what was sampled (the weights' sha256) and checks the folder first (the
# second reliability probe)


def test_an_export_refuses_to_complete_samples_of_other_weights_at_the_same_path(tmp_path, capsys):
    model, out = tmp_path / "model", tmp_path / "samples"
    Source.of("ddpm-tiny-8").build(seed=1).save_pretrained(model)
    assert cli.main(sample_into(model, out)) == 0
    manifest = json.loads((out / "samples.json").read_text())
    from ddpm_hub.loading.configs import weights_checksum

    assert manifest["weights_sha256"] == {"unet": weights_checksum(DDPMHubPipeline.from_pretrained(model).unet)}
    assert len(manifest["config_sha256"]) == 64
    capsys.readouterr()
    Source.of("ddpm-tiny-8").build(seed=2).save_pretrained(model)  # other weights at the same path
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
    Source.of("ddpm-tiny-8").build(seed=1).save_pretrained(model)
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
