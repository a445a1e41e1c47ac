"""Progressive distillation (Salimans & Ho 2022): the stage target against a closed form on Gaussian data, the run's
options, resume inside and between stages, and the student as a pipeline folder (both loading paths)."""

import signal
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DiffusionPipeline
from helpers import (
    LAUNCHER,
    TINY,
    GaussianDenoiser,
    assert_bit_identical,
    check,
    check_ok,
    run_script,
    summary,
    unet_weights,
)

from ddpm_hub import DDPMHubPipeline
from ddpm_hub.errors import UsageError
from ddpm_hub.hub.model_card import render_model_card
from ddpm_hub.losses import DistillationObjective, distillation_timesteps
from ddpm_hub.pipelines import Source
from ddpm_hub.shipped.scheduling_ddpm_hub import DDPMHubScheduler
from ddpm_hub.training.checkpoint_folders import list_checkpoints
from ddpm_hub.training.distillation import student_scheduler

S = 0.25  # x_0 ~ N(0, S^2 I): the optimal denoiser is linear, E[x_0 | x_t] = alpha S^2 / (alpha^2 S^2 + sigma^2) x_t


def two_ddim_steps_closed_form(x_t: np.ndarray, ts: list[int], alphas_cumprod: np.ndarray) -> np.ndarray:
    """The teacher's two DDIM steps t -> t' -> t'' with the exact denoiser, elementwise in float64 (x_0 clipped)."""
    z = x_t.astype(np.float64)
    for t, t_next in zip(ts, ts[1:]):
        ab = alphas_cumprod[t]
        ab_next = alphas_cumprod[t_next] if t_next >= 0 else 1.0
        x0 = np.clip(np.sqrt(ab) * S**2 / (ab * S**2 + 1 - ab) * z, -1, 1)
        eps = (z - np.sqrt(ab) * x0) / np.sqrt(1 - ab)
        z = np.sqrt(ab_next) * x0 + np.sqrt(1 - ab_next) * eps
    return z


@pytest.mark.parametrize("calls", [4, 2, 1])
def test_the_stage_target_is_two_teacher_ddim_steps_in_closed_form(calls):
    """
    On Gaussian data with the exact denoiser as teacher, a student whose one DDIM step (diffusers' DDIMScheduler on
    the trailing timesteps, predicting v) lands where the closed form of the teacher's two steps lands has zero loss;
    a student off by a little does not.
    """
    scheduler = DDPMHubScheduler(prediction_type="v_prediction")
    alphas = scheduler.alphas_cumprod
    teacher = GaussianDenoiser(alphas, "epsilon")
    objective = DistillationObjective(scheduler, teacher, "epsilon", calls)
    points = distillation_timesteps(1000, calls).tolist()
    assert points[0] == -1 and points[-1] == 999 and len(points) == 2 * calls + 1
    sampler = student_scheduler(scheduler.config)
    sampler.set_timesteps(calls)
    assert sampler.timesteps.tolist() == points[2::2][::-1]  # the student samples on the steps it learned

    generator = torch.Generator().manual_seed(0)
    x_0 = S * torch.randn(2 * calls, 1, 4, 4, generator=generator, dtype=torch.float64)
    noise = torch.randn(x_0.shape, generator=generator, dtype=torch.float64)
    timesteps = torch.tensor(points[2::2] * 2)  # every student step, twice
    alpha_bar = alphas.double()[timesteps].view(-1, 1, 1, 1)
    x_t = alpha_bar.sqrt() * x_0 + (1 - alpha_bar).sqrt() * noise

    ends, outputs = [], []
    for i, t in enumerate(timesteps.tolist()):
        j = points.index(t)
        end = two_ddim_steps_closed_form(x_t[i].numpy(), [t, points[j - 1], points[j - 2]], alphas.double().numpy())
        ends.append(torch.from_numpy(end))
        # the student's v such that one DDIM step from (x_t, t) lands on `end`
        ab, ab_end = alpha_bar[i].item(), (alphas.double()[points[j - 2]].item() if points[j - 2] >= 0 else 1.0)
        a, s, a2, s2 = ab**0.5, (1 - ab) ** 0.5, ab_end**0.5, (1 - ab_end) ** 0.5
        x0 = (end - s2 / s * x_t[i].numpy()) / (a2 - s2 / s * a)
        eps = (x_t[i].numpy() - a * x0) / s
        outputs.append(torch.from_numpy(a * eps - s * x0))
    outputs = torch.stack(outputs)

    class Student(torch.nn.Module):
        def __init__(self, offset=0.0):
            super().__init__()
            self.offset = offset

        def forward(self, x, t):
            return SimpleNamespace(sample=outputs + self.offset)

    loss = objective(Student(), x_0, timesteps=timesteps, noise=noise)
    assert loss.shape == (2 * calls,) and float(loss.max()) < 1e-9  # float32 arithmetic inside
    assert float(objective(Student(0.01), x_0, timesteps=timesteps, noise=noise).min()) > 1e-6

    for i, t in enumerate(timesteps.tolist()):  # diffusers' DDIM step with that output lands on the closed form
        sampler.set_timesteps(calls)
        landed = sampler.step(outputs[i : i + 1], t, x_t[i : i + 1]).prev_sample
        assert torch.allclose(landed[0], ends[i], atol=1e-9)

    with pytest.raises(ValueError, match="student's"):
        objective(Student(), x_0, timesteps=timesteps + 1, noise=noise)


def test_a_teacher_whose_scheduler_does_not_clip_is_not_clipped():
    """A latent teacher (clip_sample false) takes its DDIM steps from its x_0 as predicted, beyond [-1, 1] too."""
    from ddpm_hub.shipped.condition_batch_ddpm_hub import ConditionBatch

    scheduler = DDPMHubScheduler(prediction_type="v_prediction")
    alphas = scheduler.alphas_cumprod
    z = 40 * torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t, t_next = torch.full((4,), 499), torch.full((4,), 249)
    expected = {}
    for clip in (True, False):
        x0 = alphas.double()[499].sqrt() * S**2 / (alphas.double()[499] * S**2 + 1 - alphas.double()[499]) * z
        x0 = x0.clamp(-1, 1) if clip else x0
        eps = (z - alphas.double()[499].sqrt() * x0) / (1 - alphas.double()[499]).sqrt()
        expected[clip] = alphas.double()[249].sqrt() * x0 + (1 - alphas.double()[249]).sqrt() * eps
    assert not torch.allclose(expected[True], expected[False])  # the predicted x_0 leaves [-1, 1] here
    for clip in (True, False):
        teacher = GaussianDenoiser(alphas, "epsilon")
        objective = DistillationObjective(scheduler, teacher, "epsilon", 2, clip_sample=clip)
        stepped = objective._teacher_step(z, t, t_next, ConditionBatch())
        assert torch.allclose(stepped, expected[clip], rtol=1e-6, atol=1e-6)


def test_distillation_options_are_checked_before_any_work(tmp_path):
    with pytest.raises(UsageError, match="configuration without weights"):
        check([*TINY, "--distill_from", "ddpm-tiny-8", "--output_dir", str(tmp_path / "a")])
    with pytest.raises(UsageError, match="leave --max_train_steps out"):
        check(["--distill_from", "ddpm-tiny-8", "--max_train_steps", "5", "--output_dir", str(tmp_path / "b")])
    with pytest.raises(UsageError, match="the student predicts v"):
        check(["--distill_from", "x", "--prediction_type", "epsilon", "--output_dir", str(tmp_path / "c")])
    with pytest.raises(SystemExit):  # argparse: the calls must halve
        check(["--distill_from", "x", "--distill_calls", "8,3", "--output_dir", str(tmp_path / "d")])


def test_distilling_into_the_teachers_folder_is_refused_before_any_work(tmp_path):
    # issue 28: --distill_from X --output_dir X overwrote the teacher's weights, scheduler and index with the student's
    teacher = tmp_path / "teacher"
    Source.of("ddpm-tiny-8").build().save_pretrained(teacher)
    before = (teacher / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    with pytest.raises(UsageError, match=f"--output_dir {teacher} is the --distill_from folder {teacher}: .*teacher"):
        check([*TINY, "--distill_from", str(teacher), "--output_dir", str(teacher), "--overwrite_output_dir"])
    with pytest.raises(UsageError, match="is inside the --distill_from folder"):
        check([*TINY, "--distill_from", str(teacher), "--output_dir", str(teacher / "student")])
    assert (teacher / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == before
    options, _ = check([*TINY, "--distill_from", str(teacher), "--output_dir", str(tmp_path / "student")])
    assert options.model.pipeline == str(teacher)


@pytest.mark.slow
def test_resuming_a_distillation_with_other_stages_names_what_differs_and_keeps_the_checkpoint(tmp_path):
    # issue 28: resuming with other --distill_calls or --distill_steps_per_stage mixed the schedules
    teacher, out = tmp_path / "teacher", tmp_path / "student"
    Source.of("ddpm-tiny-8").build().save_pretrained(teacher)
    common = [*TINY, "--distill_from", str(teacher), "--checkpointing_steps", "1", "--output_dir", str(out)]
    check_ok(run_script([*common, "--distill_calls", "4,2", "--distill_steps_per_stage", "1"]))
    state = (out / "checkpoints" / "checkpoint-2" / "training_state.json").read_text()
    before = {path: path.read_bytes() for path in sorted(out.rglob("*")) if path.is_file()}
    cases = {
        ("--distill_calls", "2,1", "--distill_steps_per_stage", "1"): "distillation.calls: [4, 2] in the checkpoint, "
        "[2, 1] in this run (--distill_calls)",
        ("--distill_calls", "4,2", "--distill_steps_per_stage", "2"): "distillation.steps_per_stage: 1 in the "
        "checkpoint, 2 in this run (--distill_steps_per_stage)",
    }  # fmt: skip
    for extra, message in cases.items():
        result = run_script([*common, *extra, "--resume_from_checkpoint", "latest"])
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert message in result.stderr and "The checkpoint is intact" in result.stderr
    assert (out / "checkpoints" / "checkpoint-2" / "training_state.json").read_text() == state
    assert {path: path.read_bytes() for path in sorted(out.rglob("*")) if path.is_file()} == before  # the lock too


@pytest.mark.slow
def test_a_super_resolution_teacher_distils_into_a_student_folder_that_samples_in_its_calls(tmp_path):
    # issue 28: distilling a super-resolution teacher trained every stage, then crashed in the final grid
    from test_superres import sr_config

    teacher, out = tmp_path / "teacher", tmp_path / "student"
    Source.of(sr_config(tmp_path)).build(seed=0).save_pretrained(teacher)
    args = [*TINY, "--distill_from", str(teacher), "--dataset_name", "builtin:photos", "--resolution", "16"]
    check_ok(run_script([*args, "--distill_calls", "2,1", "--distill_steps_per_stage", "1", "--output_dir", str(out)]))
    assert (out / "samples.png").is_file() and summary(out)["samples"]["steps"] == 1
    student = DDPMHubPipeline.from_pretrained(out)
    assert type(student).__name__ == "DDPMHubSuperResolutionPipeline" and student.default_num_inference_steps == 1
    student.set_progress_bar_config(disable=True)
    large = student(image=torch.rand(1, 3, 4, 4), generator=torch.Generator().manual_seed(0), output_type="np")
    assert len(student.scheduler.timesteps) == 1 and large.images.shape == (1, 16, 16, 3)


def test_a_part_recorded_on_one_side_only_is_a_difference_named_by_its_option():
    # issue 28: a distillation's record against a plain run's (None): resuming one as the other is refused
    from ddpm_hub.training.checkpoint_folders import record_differences

    stages = {"calls": [4, 2], "steps_per_stage": 3}
    assert record_differences({"distillation": None}, {"distillation": stages}) == [
        "distillation: None in the checkpoint, {'calls': [4, 2], 'steps_per_stage': 3} in this run (--distill_from)"
    ]
    assert record_differences({"distillation": stages}, {"distillation": {**stages, "calls": [4, 2]}}) == []
    assert record_differences({}, {"distillation": stages}) == []  # a checkpoint from before the record


@pytest.mark.slow
def test_distillation_resumes_bit_identically_and_the_student_loads_both_ways(tmp_path):
    """
    A tiny teacher distilled 4 -> 2 -> 1 calls, 3 steps a stage; the same run killed after checkpoint 6 (the end of
    stage 1: its teacher in the checkpoint) and resumed: the same student. It samples in 1 call by default, with the
    installed classes and with plain diffusers alike.
    """
    teacher = tmp_path / "teacher"
    check_ok(run_script([*TINY, "--max_train_steps", "4", "--output_dir", str(teacher)]))
    common = [*TINY, "--distill_from", str(teacher), "--distill_calls", "4,2,1", "--distill_steps_per_stage", "3"]
    common += ["--checkpointing_steps", "2", "--learning_rate", "1e-3"]
    a, b = tmp_path / "a", tmp_path / "b"
    check_ok(run_script([*common, "--output_dir", str(a)]))
    assert summary(a)["steps"] == 9 and summary(a)["samples"]["steps"] == 1
    killed = run_script([*common, "--output_dir", str(b)], script=LAUNCHER, env={"FAULT_KILL_AFTER_CHECKPOINT": "6"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (list_checkpoints(b / "checkpoints")[-1] / "distill_teacher").is_dir()
    check_ok(run_script([*common, "--output_dir", str(b), "--resume_from_checkpoint", "latest"]))
    assert summary(b)["resumed_from_step"] == 6
    assert_bit_identical(unet_weights(a), unet_weights(b))
    assert not torch.equal(unet_weights(a)["conv_in.weight"], unet_weights(teacher)["conv_in.weight"])

    student = DDPMHubPipeline.from_pretrained(a)
    assert isinstance(student.scheduler, DDIMScheduler) and student.default_num_inference_steps == 1
    assert student.scheduler.config.prediction_type == "v_prediction"
    ours = student(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert len(student.scheduler.timesteps) == 1
    plain = DiffusionPipeline.from_pretrained(a, trust_remote_code=True)
    theirs = plain(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    np.testing.assert_array_equal(ours, theirs)
    card = str(render_model_card(a, "you/tiny-student"))
    assert "progressive distillation (Salimans & Ho 2022): 3 stage(s) of 3 steps, at 4, 2, 1 calls" in card
    assert "it samples in 1 DDIM call(s) by default" in card and "with 1 DDIM calls" in card
    # a student teaches a further stage (its DDIMScheduler is accepted there, and only there)
    check_ok(run_script([*TINY, "--distill_from", str(a), "--distill_calls", "1", "--distill_steps_per_stage", "1",
                         "--output_dir", str(tmp_path / "c")]))  # fmt: skip
    refused = run_script([*TINY, "--pipeline", str(a), "--max_train_steps", "1", "--output_dir", str(tmp_path / "d")])
    assert refused.returncode != 0 and "a distilled student trains only as the teacher" in refused.stderr
