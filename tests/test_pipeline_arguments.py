"""The call arguments diffusers' pipelines share, in every ddpm_hub pipeline (shipped/call_arguments_ddpm_hub.py):
`num_images_per_prompt`, `latents` (alias `noise`), `callback_on_step_end` as a function or a diffusers
`PipelineCallback`, and the properties callbacks read (`guidance_scale`, `num_timesteps`, `interrupt`, ...)."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback, SDCFGCutoffCallback
from helpers import conditional, text_config

from ddpm_hub import DDPMHubImg2ImgPipeline, DDPMHubInpaintPipeline, DDPMHubSuperResolutionPipeline
from ddpm_hub.pipelines import Source


def tiny():
    pipeline = Source.of("ddpm-tiny-8").build(seed=0)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def tiny_text(tmp_path):
    pipeline = Source.of(text_config(tmp_path)).build(seed=0)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def run(pipeline, seed: int = 0, steps: int = 3, **kwargs) -> torch.Tensor:
    return pipeline(num_inference_steps=steps, generator=torch.manual_seed(seed), output_type="pt", **kwargs).images


def unet_batches(pipeline) -> list[int]:
    """A list that grows by the batch size of every UNet call."""
    batches = []
    pipeline.unet.register_forward_pre_hook(lambda module, args: batches.append(len(args[0])))
    return batches


class RecordPredictedX0(PipelineCallback):
    """A diffusers PipelineCallback that asks for the predicted x_0 (and nothing else) and records what it gets."""

    tensor_inputs = ["pred_original_sample"]

    def __init__(self):
        super().__init__(cutoff_step_ratio=None, cutoff_step_index=0)
        self.seen = []

    def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
        self.seen.append({name: tuple(value.shape) for name, value in callback_kwargs.items()})
        return callback_kwargs


# ----------------------------------------------------------------------------------------------------------------
# num_images_per_prompt


def test_num_images_per_prompt_repeats_each_label_in_place_and_its_null_branch_follows():
    pipeline = conditional()
    batches = unet_batches(pipeline)
    repeated = run(pipeline, class_labels=[1, 2], num_images_per_prompt=2, guidance_scale=3.0)
    assert repeated.shape == (4, 3, 8, 8) and batches == [8, 8, 8]  # 4 images and their 4 null-label twins
    torch.testing.assert_close(repeated, run(pipeline, class_labels=[1, 1, 2, 2], guidance_scale=3.0), rtol=0, atol=0)
    one_label = run(pipeline, class_labels="c3", num_images_per_prompt=3)
    torch.testing.assert_close(one_label, run(pipeline, class_labels=[3, 3, 3]), rtol=0, atol=0)


def test_num_images_per_prompt_repeats_each_prompt_as_diffusers_orders_them(tmp_path):
    pipeline = tiny_text(tmp_path)
    prompts, negatives = ["3 left of 7", "1 left of 2"], ["9 left of 9", "5 left of 5"]
    repeated = run(pipeline, prompt=prompts, negative_prompt=negatives, guidance_scale=2.0, num_images_per_prompt=2)
    listed = run(
        pipeline, prompt=[p for p in prompts for _ in "ab"], negative_prompt=[n for n in negatives for _ in "ab"],
        guidance_scale=2.0,
    )  # fmt: skip
    assert repeated.shape == (4, 1, 8, 16)
    torch.testing.assert_close(repeated, listed, rtol=0, atol=0)
    assert run(pipeline, prompt="3 left of 7", num_images_per_prompt=3).shape[0] == 3


def test_num_images_per_prompt_without_a_condition_multiplies_batch_size():
    pipeline = tiny()
    images = run(pipeline, batch_size=2, num_images_per_prompt=3)
    torch.testing.assert_close(images, run(pipeline, batch_size=6), rtol=0, atol=0)
    assert run(pipeline, num_images_per_prompt=2).shape[0] == 2
    with pytest.raises(ValueError, match="num_images_per_prompt must be a positive integer, got 0"):
        run(pipeline, num_images_per_prompt=0)


def test_num_images_per_prompt_in_the_task_pipelines(tmp_path):
    from test_superres import low_res_image, tiny_sr

    base = conditional()
    image = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    img2img = DDPMHubImg2ImgPipeline.from_pipe(base)
    edits = run(img2img, image=image, class_labels=[1, 2], num_images_per_prompt=2, steps=4)
    torch.testing.assert_close(edits, run(img2img, image=image, class_labels=[1, 1, 2, 2], steps=4), rtol=0, atol=0)
    assert run(img2img, image=torch.cat([image, 1 - image]), num_images_per_prompt=3, steps=4).shape[0] == 6
    inpaint = DDPMHubInpaintPipeline.from_pipe(base)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 4:] = 1
    completed = run(inpaint, image=image, mask_image=mask, num_images_per_prompt=2, steps=4, jump_n_sample=1)
    torch.testing.assert_close(
        completed, run(inpaint, image=[image, image], mask_image=mask, steps=4, jump_n_sample=1)
    )
    upscaler = tiny_sr(tmp_path)
    assert isinstance(upscaler, DDPMHubSuperResolutionPipeline)
    samples = run(upscaler, image=torch.cat([low_res_image(0), low_res_image(1)]), num_images_per_prompt=2, steps=2)
    listed = torch.cat([low_res_image(0), low_res_image(0), low_res_image(1), low_res_image(1)])
    torch.testing.assert_close(samples, run(upscaler, image=listed, steps=2), rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------------------
# latents


def test_latents_is_noise_by_diffusers_name():
    pipeline = tiny()
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(
        run(pipeline, batch_size=2, latents=x_T), run(pipeline, batch_size=2, noise=x_T), rtol=0, atol=0
    )
    with pytest.raises(ValueError, match="Give latents or noise"):
        run(pipeline, batch_size=2, latents=x_T, noise=x_T)
    with pytest.raises(ValueError, match=r"latents must have shape \(1, 3, 8, 8\)"):
        run(pipeline, latents=torch.zeros(1, 3, 4, 4))
    inpaint = DDPMHubInpaintPipeline.from_pipe(pipeline)
    image, mask = torch.rand(1, 3, 8, 8), torch.ones(1, 1, 8, 8)  # all generated: x_T decides
    starts = [run(inpaint, image=image, mask_image=mask, latents=x_T[i : i + 1], steps=2) for i in (0, 1)]
    assert not torch.equal(*starts)


# ----------------------------------------------------------------------------------------------------------------
# callback_on_step_end


def test_a_pipeline_callback_receives_its_own_tensor_inputs():
    pipeline = conditional()
    callback = RecordPredictedX0()
    run(pipeline, class_labels=[1, 2], callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents"])
    assert callback.seen == [{"pred_original_sample": (2, 3, 8, 8)}] * 3
    both = MultiPipelineCallbacks(
        [RecordPredictedX0(), SDCFGCutoffCallback(cutoff_step_ratio=None, cutoff_step_index=99)]
    )
    with pytest.raises(ValueError, match=r"prompt_embeds, but this model is conditioned on a class"):
        run(pipeline, class_labels=1, callback_on_step_end=both)
    with pytest.raises(ValueError, match=r"\['noise_pred'\] not in \['latents', 'image', 'pred_original_sample'"):
        run(pipeline, callback_on_step_end=lambda *args: {}, callback_on_step_end_tensor_inputs=["noise_pred"])


def test_a_function_gets_latents_and_image_by_default_and_either_replaces_x():
    pipeline = conditional()
    seen = []

    def zero_at_the_end(pipe, i, t, tensors):
        seen.append(sorted(tensors))
        assert tensors["latents"] is tensors["image"]
        return {"latents": torch.zeros_like(tensors["latents"])} if i == 2 else tensors

    images = run(pipeline, class_labels=[1, 2], callback_on_step_end=zero_at_the_end)
    assert seen == [["image", "latents"]] * 3
    torch.testing.assert_close(images, torch.full_like(images, 0.5))  # x_0 := 0 -> grey


def test_interrupt_stops_the_chain_after_the_step_it_is_set_in():
    pipeline = conditional()
    batches = unet_batches(pipeline)
    last = {}

    def stop_after_step_1(pipe, i, t, tensors):
        last["x"] = tensors["latents"]
        pipe._interrupt = i == 1
        return {}

    images = run(pipeline, class_labels=[1, 2], steps=5, callback_on_step_end=stop_after_step_1)
    assert batches == [2, 2]
    torch.testing.assert_close(images, (last["x"] / 2 + 0.5).clamp(0, 1))
    assert len(run(pipeline, class_labels=[1, 2], steps=5)) == 2 and batches[2:] == [2] * 5  # reset at each call


def test_callbacks_read_the_call_state_as_diffusers_names_it():
    pipeline = conditional()
    states = []

    def read(pipe, i, t, tensors):
        states.append((pipe.guidance_scale, pipe.do_classifier_free_guidance, pipe.num_timesteps, pipe.interrupt))
        return {}

    run(pipeline, class_labels=[1, 2], guidance_scale=2.5, steps=4, callback_on_step_end=read)
    run(pipeline, class_labels=[1, 2], steps=2, callback_on_step_end=read)
    assert states == [(2.5, True, 4, False)] * 4 + [(1.0, False, 2, False)] * 2
    img2img = DDPMHubImg2ImgPipeline.from_pipe(pipeline)
    states.clear()
    run(img2img, image=torch.rand(1, 3, 8, 8), class_labels=1, strength=0.5, steps=6, callback_on_step_end=read)
    assert [state[2] for state in states] == [3, 3, 3]  # the tail strength selects, as diffusers' img2img counts


def test_a_callback_may_change_the_guidance_scale_for_the_steps_to_come():
    pipeline = conditional()
    batches = unet_batches(pipeline)

    def unguided_after_step_0(pipe, i, t, tensors):
        pipe._guidance_scale = 1.0
        return {}

    cut = run(pipeline, class_labels=[1, 2], guidance_scale=4.0, callback_on_step_end=unguided_after_step_0)
    assert batches == [4, 2, 2]  # w = 1: the conditional model, one pass
    assert not torch.allclose(cut, run(pipeline, class_labels=[1, 2], guidance_scale=4.0))
    with pytest.raises(ValueError, match="no null branch to guide with"):
        run(
            pipeline, class_labels=[1, 2], callback_on_step_end=lambda pipe, *args: setattr(pipe, "_guidance_scale", 3)
        )


def test_diffusers_sd_cfg_cutoff_callback_ends_guidance(tmp_path):
    """The real diffusers callback: at its step it keeps the conditional half of [negative; positive] prompt_embeds
    and sets guidance_scale 0; the steps after it run the conditional model alone, one pass."""
    pipeline = tiny_text(tmp_path)
    batches = unet_batches(pipeline)
    cut = run(pipeline, prompt="3 left of 7", guidance_scale=3.0, callback_on_step_end=SDCFGCutoffCallback(None, 1))
    assert batches == [2, 2, 1] and pipeline.guidance_scale == 0.0 and not pipeline.do_classifier_free_guidance

    def conditional_after_step_1(pipe, i, t, tensors):
        assert tensors["prompt_embeds"].shape[0] == 2  # [negative; positive], as diffusers concatenates them
        if i == 1:
            pipe._guidance_scale = 1.0
        return {}

    reference = run(
        pipeline, prompt="3 left of 7", guidance_scale=3.0, callback_on_step_end=conditional_after_step_1,
        callback_on_step_end_tensor_inputs=["prompt_embeds"],
    )  # fmt: skip
    torch.testing.assert_close(cut, reference, rtol=0, atol=0)
    assert not torch.allclose(cut, run(pipeline, prompt="3 left of 7", guidance_scale=3.0))


# ----------------------------------------------------------------------------------------------------------------
# Plain diffusers: the shipped files take the same arguments


REMOTE_CODE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["ddpm_hub"] = None  # ddpm_hub cannot be imported in this process
    import torch
    from diffusers import DiffusionPipeline
    from diffusers.callbacks import PipelineCallback
    torch.set_num_threads(1)

    class Record(PipelineCallback):
        tensor_inputs = ["pred_original_sample"]

        def callback_fn(self, pipeline, i, t, tensors):
            print("SEEN", i, sorted(tensors), tuple(tensors["pred_original_sample"].shape), pipeline.num_timesteps)
            pipeline._interrupt = i == 1
            return tensors

    pipeline = DiffusionPipeline.from_pretrained(sys.argv[1], trust_remote_code=True)
    pipeline.set_progress_bar_config(disable=True)
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    images = pipeline(
        class_labels=[1, 2], num_images_per_prompt=1, latents=x_T, guidance_scale=2.0, num_inference_steps=4,
        generator=torch.manual_seed(0), output_type="pt", callback_on_step_end=Record(),
    ).images
    torch.save(images, sys.argv[2])
    images = pipeline(class_labels=[1, 2], num_images_per_prompt=2, num_inference_steps=2, output_type="pt").images
    print("IMAGES", tuple(images.shape))
    """
)


@pytest.mark.slow
def test_plain_diffusers_runs_the_shipped_files_with_these_arguments(tmp_path):
    pipeline = conditional()
    pipeline.save_pretrained(tmp_path / "model")
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_CODE_SCRIPT, str(tmp_path / "model"), str(tmp_path / "images.pt")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "call_arguments_ddpm_hub.py" in {path.name for path in (tmp_path / "model").glob("*.py")}
    assert [line for line in result.stdout.splitlines() if line.startswith("SEEN")] == [
        "SEEN 0 ['pred_original_sample'] (2, 3, 8, 8) 4",
        "SEEN 1 ['pred_original_sample'] (2, 3, 8, 8) 4",
    ]
    assert "IMAGES (4, 3, 8, 8)" in result.stdout

    def interrupt_after_1(pipe, i, t, tensors):
        pipe._interrupt = i == 1
        return tensors

    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    expected = run(
        pipeline, class_labels=[1, 2], latents=x_T, guidance_scale=2.0, steps=4, callback_on_step_end=interrupt_after_1
    )
    torch.testing.assert_close(torch.load(tmp_path / "images.pt"), expected)
