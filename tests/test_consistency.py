"""Consistency distillation (Song et al. 2023; LCM, Luo et al. 2023): the teacher step and the target against closed
forms on Gaussian data, the boundary condition and LCMScheduler's scalings, the options, and a run: resumed after a
SIGKILL it is bit-identical, and its student samples with LCMScheduler in its calls, installed or through plain
diffusers."""

import argparse
import signal
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, LCMScheduler
from helpers import (
    LAUNCHER,
    ROOT,
    TINY,
    GaussianDenoiser,
    assert_bit_identical,
    check,
    check_ok,
    run_script,
    summary,
    trained_folder,
    unet_weights,
)

from ddpm_hub import DDPMHubPipeline
from ddpm_hub.errors import UsageError
from ddpm_hub.hub.model_card import render_model_card
from ddpm_hub.losses import (
    ConsistencyObjective,
    consistency_scalings,
    consistency_timesteps,
    pseudo_huber,
    teacher_ddim_step,
)
from ddpm_hub.pipelines import Source
from ddpm_hub.pipelines.sampling import sample_images, with_sampler
from ddpm_hub.shipped.conditioning_ddpm_hub import ConditionBatch, guidance_embedding
from ddpm_hub.shipped.scheduling_ddpm_hub import DDPMHubScheduler
from ddpm_hub.training.checkpoint_folders import list_checkpoints
from ddpm_hub.training.distillation import (
    TARGET_FOLDER,
    ConsistencyDistillation,
    consistency_scheduler,
    guidance_student,
)
from ddpm_hub.training.options import DistillOptions, parse_guidance_range, parse_options

MU, S = 0.3, 0.25  # x_0 ~ N(MU, S^2 I) per dimension


def gaussian_denoiser(x, alpha, sigma):
    """E[x_0 | x_t] for N(MU, S^2) data: MU + alpha S^2 (x_t - alpha MU) / (alpha^2 S^2 + sigma^2)."""
    return MU + alpha * S**2 * (x - alpha * MU) / (alpha**2 * S**2 + sigma**2)


def ode_to_x_0(x, alpha, sigma):
    """The probability-flow ODE from x_t to x_0: MU + S (x_t - alpha MU) / sqrt(alpha^2 S^2 + sigma^2)."""
    return MU + S * (x - alpha * MU) / np.sqrt(alpha**2 * S**2 + sigma**2)


def ode_to(x, alpha, sigma, alpha_to, sigma_to):
    """The probability-flow ODE from x_t to x_t' (the same standardised value at both ends)."""
    return alpha_to * MU + np.sqrt(alpha_to**2 * S**2 + sigma_to**2) * (x - alpha * MU) / np.sqrt(
        alpha**2 * S**2 + sigma**2
    )


class ClosedFormStudent(torch.nn.Module):
    """A v-predicting model whose f(x, t) = c_skip x + c_out x_0 is the ODE's map to x_0 (+ `offset` in v)."""

    def __init__(self, alphas_cumprod: torch.Tensor, offset: float = 0.0):
        super().__init__()
        self.alphas_cumprod, self.offset = alphas_cumprod.double(), offset

    def forward(self, x, t):
        alpha_bar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        alpha, sigma, x = alpha_bar.sqrt(), (1 - alpha_bar).sqrt(), x.double()
        f = ode_to_x_0(x, alpha, sigma)
        c_skip, c_out = (c.view(-1, 1, 1, 1) for c in consistency_scalings(t))
        x_0 = torch.where(c_out > 0, (f - c_skip * x) / c_out.clamp(min=1e-30), f)  # at t = 0, f(x, 0) = x anyway
        return SimpleNamespace(sample=((alpha * x - x_0) / sigma + self.offset).to(torch.float32))


@pytest.mark.parametrize(
    "beta_schedule, prediction, clip", [("linear", "epsilon", True), ("squaredcos_cap_v2", "v_prediction", False)]
)
def test_the_teacher_step_and_the_target_on_gaussian_data_match_their_closed_forms(beta_schedule, prediction, clip):
    """
    The exact denoiser of N(MU, S^2) data as teacher, at every point of the student's grid (k = 20): its DDIM step
    is the closed form (and within DDIM's error of the ODE), the loss is the pseudo-Huber distance of the closed
    forms; a student equal to the ODE's map to x_0 has a loss within DDIM's error of 0, one perturbed does not.
    """
    scheduler = DDPMHubScheduler(beta_schedule=beta_schedule, prediction_type="v_prediction", clip_sample=clip)
    alphas = scheduler.alphas_cumprod.double()
    teacher, exact = GaussianDenoiser(alphas, prediction, MU, S), ClosedFormStudent(alphas)
    objective = ConsistencyObjective(scheduler, teacher, prediction, exact, skip=20, clip_sample=clip)
    t = consistency_timesteps(1000, 20)
    assert t[0] == 19 and t[-1] == 999 and len(t) == 50
    generator = torch.Generator().manual_seed(0)
    x_0 = MU + S * torch.randn(len(t), 1, 4, 4, generator=generator, dtype=torch.float64)
    noise = torch.randn(x_0.shape, generator=generator, dtype=torch.float64)
    t_prev = (t - 20).clamp(min=0)
    a, s = alphas[t].sqrt().view(-1, 1, 1, 1).numpy(), (1 - alphas[t]).sqrt().view(-1, 1, 1, 1).numpy()
    a2, s2 = alphas[t_prev].sqrt().view(-1, 1, 1, 1).numpy(), (1 - alphas[t_prev]).sqrt().view(-1, 1, 1, 1).numpy()
    x_t = a * x_0.numpy() + s * noise.numpy()

    # the teacher's DDIM step (eta = 0) from t to t - k, in closed form
    x0_hat = gaussian_denoiser(x_t, a, s)
    x0_hat = np.clip(x0_hat, -1, 1) if clip else x0_hat
    expected = a2 * x0_hat + s2 * (x_t - a * x0_hat) / s
    stepped = teacher_ddim_step(objective, torch.from_numpy(x_t), t, t_prev, ConditionBatch(), clip).numpy()
    np.testing.assert_allclose(stepped, expected, atol=2e-5)
    ode = ode_to(x_t, a, s, a2, s2)  # DDIM's local error is second order: small against the step itself
    big = 8 * x_t  # off the data: the denoiser's x_0 leaves [-1, 1], clipped only by a teacher that clips
    x0_big = gaussian_denoiser(big, a, s)
    assert np.abs(x0_big).max() > 1.5
    x0_big = np.clip(x0_big, -1, 1) if clip else x0_big
    stepped_big = teacher_ddim_step(objective, torch.from_numpy(big), t, t_prev, ConditionBatch(), clip).numpy()
    np.testing.assert_allclose(stepped_big, a2 * x0_big + s2 * (big - a * x0_big) / s, rtol=1e-5, atol=1e-4)
    assert np.abs(stepped - ode).max() < 0.03  # DDIM's local error: largest at t = 19, where log-SNR moves most

    # the loss: pseudo-Huber between the closed forms of f at (x_t, t) and at (x^_{t-k}, t - k); f(x, 0) = x
    c = 0.001 * 4
    target = np.where(t_prev.view(-1, 1, 1, 1).numpy() == 0, expected, ode_to_x_0(expected, a2, s2))
    difference = ode_to_x_0(x_t, a, s) - target
    expected_loss = np.sqrt((difference.reshape(len(t), -1) ** 2).sum(axis=1) + c**2) - c
    loss = objective(exact, x_0, timesteps=t, noise=noise)
    assert loss.shape == (50,)
    np.testing.assert_allclose(loss.numpy(), expected_loss, atol=2e-5)
    assert float(loss.mean()) < 0.01  # DDIM's error only
    perturbed = objective(ClosedFormStudent(alphas, offset=0.05), x_0, timesteps=t, noise=noise)
    assert float(perturbed.mean()) > 5 * float(loss.mean()) + 0.01
    # f at t = 0 is the identity: the first point's target is the teacher's x^_0 itself
    target_0 = objective.consistency_function(exact, torch.from_numpy(x_t[:1]), t_prev[:1], None)
    assert torch.equal(target_0, torch.from_numpy(x_t[:1]).float())

    with pytest.raises(ValueError, match="student's points"):
        objective(exact, x_0, timesteps=t + 1, noise=noise)


class AffineStudent(torch.nn.Module):
    """v = a_t x + b_t, a table per timestep: it can be any f that is affine in x, as Gaussian data's are."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Parameter(torch.zeros(1000)), torch.nn.Parameter(torch.zeros(1000))

    def forward(self, x, t):
        return SimpleNamespace(sample=self.a[t].view(-1, 1, 1, 1) * x + self.b[t].view(-1, 1, 1, 1))


def test_training_on_the_objective_finds_the_consistency_function_of_the_teachers_ddim_chain():
    """
    An affine student trained by the objective, its target network updated by the run's `end_step`, on Gaussian data
    with the exact teacher: at every point f becomes the map of the teacher's DDIM chain down to t = 0 (closed form:
    the DDIM steps composed), which lies within DDIM's error of the ODE's map to x_0.
    """
    scheduler = DDPMHubScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", clip_sample=False)
    alphas = scheduler.alphas_cumprod.double()
    student = AffineStudent()
    options = DistillOptions(distill_from="teacher", distill_method="consistency")
    distillation = ConsistencyDistillation(options, student, "epsilon", scheduler, channels_last=False)
    distillation.teacher = GaussianDenoiser(alphas, "epsilon", MU, S)
    objective = distillation.objective()
    points = consistency_timesteps(1000, 20)
    x = torch.randn(len(points), 1, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    chain, t = x.clone(), points.clone()  # the teacher's DDIM steps from each point down to 0
    while bool((t > 0).any()):
        stepped = teacher_ddim_step(objective, chain, t, (t - 20).clamp(min=0), ConditionBatch(), clip=False)
        chain, t = torch.where((t > 0).view(-1, 1, 1, 1), stepped.double(), chain), (t - 20).clamp(min=0)
    a, s = alphas[points].sqrt().view(-1, 1, 1, 1), (1 - alphas[points]).sqrt().view(-1, 1, 1, 1)
    assert 0.005 < float((chain - ode_to_x_0(x, a, s)).abs().max()) < 0.2  # DDIM's k = 20 steps, not the ODE

    def error():
        with torch.no_grad():
            return float((objective.consistency_function(student, x.float(), points, None) - chain).abs().max())

    assert error() > 0.5
    optimizer, generator = torch.optim.Adam(student.parameters(), lr=1e-2), torch.Generator().manual_seed(0)
    for _ in range(1500):
        loss = objective(student, MU + S * torch.randn(256, 1, 2, 2, generator=generator), generator).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        distillation.end_step(SimpleNamespace(unet=student))
    assert error() < 0.03
    assert not torch.equal(distillation.target.a, student.a)  # an average of the student, behind it


def test_the_scalings_are_lcm_schedulers_and_f_is_the_identity_at_t_0():
    sampler = LCMScheduler()
    t = torch.arange(1000)
    c_skip, c_out = consistency_scalings(t, sampler.config.timestep_scaling)
    theirs = [sampler.get_scalings_for_boundary_condition_discrete(int(i)) for i in t]
    np.testing.assert_allclose(c_skip.numpy(), [a for a, _ in theirs], rtol=1e-12, atol=0)
    np.testing.assert_allclose(c_out.numpy(), [b for _, b in theirs], rtol=1e-12, atol=0)
    assert float(c_skip[0]) == 1.0 and float(c_out[0]) == 0.0
    assert float(c_skip[19]) < 1e-5 and abs(float(c_out[19]) - 1) < 1e-5  # the grid's first point: x_0 read out
    assert consistency_scalings(t, 5.0)[0][19] != c_skip[19]  # the sampler's timestep_scaling counts

    # f(x, 0) = x whatever the network outputs
    scheduler = DDPMHubScheduler(prediction_type="v_prediction")
    objective = ConsistencyObjective(scheduler, None, "epsilon", None, skip=20)
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))

    def noisy(x, t):
        return SimpleNamespace(sample=torch.randn(x.shape, generator=torch.Generator().manual_seed(1)))

    assert torch.equal(objective.consistency_function(noisy, x, torch.tensor([0, 0]), None), x)

    # LCMScheduler's step computes the student's f: what the student learns is what it samples with
    sampler = consistency_scheduler(scheduler.config, 20)
    sampler.register_to_config(clip_sample=False)
    sampler.set_timesteps(4)
    assert sampler.timesteps.tolist() == [999, 759, 499, 259]
    assert set(sampler.timesteps.tolist()) <= set(consistency_timesteps(1000, 20).tolist())
    for step in sampler.timesteps:
        t = step.repeat(2)
        denoised = sampler.step(noisy(x, t).sample, step, x, generator=torch.Generator().manual_seed(2)).denoised
        torch.testing.assert_close(denoised, objective.consistency_function(noisy, x, t, None), rtol=1e-5, atol=1e-5)


def test_teacher_target_and_student_are_called_with_the_batchs_condition():
    """A class-conditional (or text, or latent) teacher: the run's ConditionBatch reaches all three networks."""
    seen = {}

    class Recorder(torch.nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name, self.weight = name, torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, t, class_labels=None):
            seen[self.name] = class_labels.tolist()
            return SimpleNamespace(sample=x * self.weight)

    scheduler = DDPMHubScheduler(prediction_type="v_prediction")
    objective = ConsistencyObjective(scheduler, Recorder("teacher"), "epsilon", Recorder("target"), skip=20)
    condition = ConditionBatch(kwargs={"class_labels": torch.tensor([3, 10])})  # 10: the null label, dropped
    loss = objective(
        Recorder("student"), torch.zeros(2, 1, 4, 4), torch.Generator().manual_seed(0), condition=condition
    )
    loss.sum().backward()
    assert seen == {"teacher": [3, 10], "target": [3, 10], "student": [3, 10]}


@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2", "cosine", "sigmoid"])
def test_the_students_sampler_is_the_teachers_chain(beta_schedule):
    """LCMScheduler built from the teacher's config: its betas (ddpm_hub's own schedules as numbers), v, T / k."""
    teacher = DDPMHubScheduler(beta_schedule=beta_schedule, clip_sample=False)
    sampler = consistency_scheduler(teacher.config, 25)
    assert isinstance(sampler, LCMScheduler) and torch.equal(sampler.alphas_cumprod, teacher.alphas_cumprod)
    assert sampler.config.original_inference_steps == 40 and sampler.config.prediction_type == "v_prediction"
    assert sampler.config.clip_sample is False
    assert pseudo_huber(torch.zeros(1, 4), torch.zeros(1, 4)).item() == 0.0


def test_consistency_options_are_checked_before_any_work(tmp_path):
    teacher = tmp_path / "teacher"
    Source.of("ddpm-tiny-8").build().save_pretrained(teacher)
    common = [*TINY, "--distill_from", str(teacher), "--distill_method", "consistency"]
    options, _ = check([*common, "--output_dir", str(tmp_path / "a")])
    assert options.length.max_train_steps == 2000 and options.model.prediction_type == "v_prediction"
    options, _ = check([*common, "--max_train_steps", "7", "--output_dir", str(tmp_path / "a")])
    assert options.length.max_train_steps == 7
    cases = {
        ("--distill_calls", "8,4"): "--distill_method consistency: --distill_calls set progressive",
        ("--distill_steps_per_stage", "3"): "--distill_steps_per_stage set progressive",
        ("--snr_gamma", "5"): "--snr_gamma (the consistency loss is a pseudo-Huber distance)",
        ("--consistency_skip", "30"): "--consistency_skip 30: the teacher's T = 1000 timesteps must be a multiple",
        ("--consistency_calls", "60"): "--consistency_calls 60: at most the student's 50 points",
    }
    for extra, message in cases.items():
        with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
            check([*common, *extra, "--output_dir", str(tmp_path / "b")])
    with pytest.raises(UsageError, match="--consistency_calls: options of --distill_method consistency"):
        check([*TINY, "--distill_from", str(teacher), "--consistency_calls", "2", "--output_dir", str(tmp_path / "c")])
    options, _ = parse_options(["--config", str(ROOT / "training" / "configs" / "ddpm-digits-16-consistency.yaml")])
    d = options.distillation
    assert (d.distill_from, d.distill_method, d.consistency_calls) == ("runs/ddpm-digits-16", "consistency", 4)
    assert options.length.max_train_steps == 2800
    with pytest.raises(UsageError, match="--distill_method: these distil a trained model; give it with"):
        check([*TINY, "--distill_method", "consistency", "--output_dir", str(tmp_path / "d")])


def test_resuming_with_another_method_or_consistency_setting_names_what_differs():
    from ddpm_hub.training.checkpoint_folders import record_differences

    options = DistillOptions(distill_from="teacher", distill_method="consistency")
    scheduler = DDPMHubScheduler(prediction_type="v_prediction")
    record = ConsistencyDistillation(options, AffineStudent(), "epsilon", scheduler, False).record()
    progressive = {"method": "progressive", "calls": [4, 2], "steps_per_stage": 3}
    assert record_differences({"distillation": progressive}, {"distillation": record}) == [
        "distillation.method: 'progressive' in the checkpoint, 'consistency' in this run (--distill_method)"
    ]
    other = {**record, "skip": 10, "target_decay": 0.9}
    assert record_differences({"distillation": other}, {"distillation": record}) == [
        "distillation.skip: 10 in the checkpoint, 20 in this run (--consistency_skip)",
        "distillation.target_decay: 0.9 in the checkpoint, 0.95 in this run (--consistency_target_decay)",
    ]


@pytest.mark.slow
def test_consistency_distillation_resumes_bit_identically_and_the_student_loads_both_ways(tmp_path):
    """
    A tiny teacher distilled for 4 steps (with --use_ema); the same run killed after checkpoint 2 (its target network
    in it) and resumed: the same student. It samples with LCMScheduler in 2 calls by default, installed and through
    plain diffusers alike, and its card names the method.
    """
    teacher = tmp_path / "teacher"
    Source.of("ddpm-tiny-8").build(seed=0).save_pretrained(teacher)
    common = [*TINY, "--distill_from", str(teacher), "--distill_method", "consistency", "--max_train_steps", "4"]
    common += ["--consistency_calls", "2", "--checkpointing_steps", "2", "--learning_rate", "1e-3", "--use_ema"]
    a, b = tmp_path / "a", tmp_path / "b"
    check_ok(run_script([*common, "--output_dir", str(a)]))
    assert summary(a)["steps"] == 4 and summary(a)["samples"]["steps"] == 2
    facts = summary(a)["distillation"]
    assert (facts["method"], facts["skip"], facts["points"], facts["sampler"], facts["calls"]) == (
        "consistency", 20, 50, "LCMScheduler", 2
    )  # fmt: skip
    killed = run_script([*common, "--output_dir", str(b)], script=LAUNCHER, env={"FAULT_KILL_AFTER_CHECKPOINT": "2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (list_checkpoints(b / "checkpoints")[-1] / TARGET_FOLDER).is_dir()
    check_ok(run_script([*common, "--output_dir", str(b), "--resume_from_checkpoint", "latest"]))
    assert summary(b)["resumed_from_step"] == 2
    assert_bit_identical(unet_weights(a), unet_weights(b))
    target_a, target_b = (load_target(folder) for folder in (a, b))
    assert_bit_identical(target_a, target_b)  # the target network too, restored from checkpoint 2 and updated on
    assert not torch.equal(unet_weights(a)["conv_in.weight"], target_a["conv_in.weight"])

    student = DDPMHubPipeline.from_pretrained(a)
    assert isinstance(student.scheduler, LCMScheduler) and student.default_num_inference_steps == 2
    assert student.scheduler.config.original_inference_steps == 50
    assert student.scheduler.config.prediction_type == "v_prediction"
    ours = student(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert student.scheduler.timesteps.tolist() == [999, 499]
    again = student(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    np.testing.assert_array_equal(ours, again)  # LCMScheduler's noise between the calls comes from the generator
    plain = DiffusionPipeline.from_pretrained(a, trust_remote_code=True)
    assert isinstance(plain.scheduler, LCMScheduler)
    theirs = plain(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    np.testing.assert_array_equal(ours, theirs)
    # `ddpm-hub sample --sampler lcm` and benchmarks/distill_quality.py: its own sampler, image i from seed + i
    lcm = with_sampler(student, "lcm")
    assert dict(lcm.scheduler.config) == dict(student.scheduler.config)
    batched = sample_images(lcm, range(3), seed=5, call_kwargs={"num_inference_steps": 2})
    alone = sample_images(lcm, [2], seed=5, call_kwargs={"num_inference_steps": 2})
    assert batched.shape == (3, 3, 8, 8) and torch.equal(batched[2:], alone)
    card = str(render_model_card(a, "you/tiny-consistency"))
    assert "by consistency distillation (Song et al. 2023; in DDPM time as LCM, Luo et al. 2023): 4 steps" in card
    assert "it samples in 2 LCMScheduler call(s) by default" in card and "with 2 LCMScheduler calls" in card


def load_target(output_dir):
    from safetensors.torch import load_file

    return load_file(
        list_checkpoints(output_dir / "checkpoints")[-1] / TARGET_FOLDER / "diffusion_pytorch_model.safetensors"
    )


def test_the_target_network_of_a_text_teacher_is_restored_as_its_own_class(tmp_path):
    """A checkpoint's target network is read back as the teacher's class (a text model's UNet2DConditionModel)."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 8),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8, attention_head_dim=2, norm_num_groups=4,
    )  # fmt: skip
    scheduler = DDPMHubScheduler(prediction_type="v_prediction")
    options = DistillOptions(distill_from="teacher", distill_method="consistency")
    saved = ConsistencyDistillation(options, unet, "epsilon", scheduler, channels_last=False)
    with torch.no_grad():
        for p in saved.target.parameters():
            p.add_(0.5)
    saved.save(tmp_path)
    resumed = ConsistencyDistillation(options, unet, "epsilon", scheduler, channels_last=False)
    resumed.resume(SimpleNamespace(objective=None), 2, tmp_path)
    assert_bit_identical(resumed.target.state_dict(), saved.target.state_dict())


# ----------------------------------------------------------------------------------------------------------------
# Guidance distilled in (--distill_guidance)


def tiny_text_unet(**config):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(16, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8, attention_head_dim=4, norm_num_groups=4, **config,
    )  # fmt: skip


class PromptedGaussian(torch.nn.Module):
    """
    The exact epsilon model of N(mu, S^2) data per image: mu = MU x the mean of its prompt's hidden states (ones: the
    prompt, MU; zeros: the empty prompt, 0). Guided at w, eps_null + w (eps_c - eps_null) is the exact model of
    N(w MU, S^2): eps is affine in mu.
    """

    def __init__(self, alphas_cumprod: torch.Tensor):
        super().__init__()
        self.alphas_cumprod = alphas_cumprod.double()

    def forward(self, x, t, encoder_hidden_states, **_):
        mu = MU * encoder_hidden_states.double().mean(dim=(1, 2)).view(-1, 1, 1, 1)
        alpha_bar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        alpha, sigma = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        x_0 = mu + alpha * S**2 * (x.double() - alpha * mu) / (alpha_bar * S**2 + sigma**2)
        return SimpleNamespace(sample=((x.double() - alpha * x_0) / sigma).to(x.dtype))


def prompt_batch(value: float, n: int) -> ConditionBatch:
    return ConditionBatch({"encoder_hidden_states": torch.full((n, 3, 8), value)})


def test_the_guided_teachers_step_is_the_guidance_formula_per_image():
    """With one w per image, the teacher's guided DDIM step is that of eps_null + w_i (eps_c - eps_null): on Gaussian
    data, the exact model of N(w_i MU, S^2)."""
    from ddpm_hub.shipped.conditioning_ddpm_hub import Guided

    scheduler = DDPMHubScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=False)
    teacher = PromptedGaussian(scheduler.alphas_cumprod)
    objective = SimpleNamespace(scheduler=scheduler, teacher=teacher, teacher_prediction_type="epsilon",
                                channels_last=False)  # fmt: skip
    scales = torch.tensor([0.0, 1.0, 2.5, 4.0])
    z = torch.randn(4, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    t, t_next = torch.tensor([999, 619, 399, 39]), torch.tensor([979, 599, 379, 19])
    guided = Guided(prompt_batch(1.0, 4), prompt_batch(0.0, 4), scales)
    stepped = teacher_ddim_step(objective, z, t, t_next, guided, clip=False)
    for i, w in enumerate(scales.tolist()):
        exact = GaussianDenoiser(scheduler.alphas_cumprod, "epsilon", w * MU, S)
        one = SimpleNamespace(**{**vars(objective), "teacher": exact})
        expected = teacher_ddim_step(one, z[i : i + 1], t[i : i + 1], t_next[i : i + 1], ConditionBatch(), clip=False)
        torch.testing.assert_close(stepped[i : i + 1], expected, atol=1e-5, rtol=1e-5)


def test_a_guided_student_starts_as_its_teacher_and_reads_w_through_timestep_cond():
    """The student is the teacher's UNet with a zero map of the w embedding: the teacher at every w until trained."""
    teacher = tiny_text_unet().eval()
    student = guidance_student(teacher).eval()
    assert student.config.time_cond_proj_dim == 64 and teacher.config.time_cond_proj_dim is None
    x, t = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([10, 500, 990])
    states = torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = teacher(x, t, encoder_hidden_states=states).sample
        for w in (0.0, 3.0, 7.5):
            embedding = guidance_embedding(torch.full((3,), w), 64)
            torch.testing.assert_close(student(x, t, encoder_hidden_states=states, timestep_cond=embedding).sample,
                                       expected, atol=0, rtol=0)  # fmt: skip
        student.time_embedding.cond_proj.weight.normal_()
        moved = student(x, t, encoder_hidden_states=states, timestep_cond=guidance_embedding(torch.ones(3), 64))
    assert (moved.sample - expected).abs().mean() > 1e-3
    embeddings = guidance_embedding(torch.tensor([1.0, 1.001, 5.0]), 64)
    assert embeddings.shape == (3, 64) and torch.allclose(embeddings.norm(dim=1), torch.full((3,), 32**0.5))
    assert 0 < (embeddings[0] - embeddings[1]).norm() < (embeddings[0] - embeddings[2]).norm()


def test_w_conditioning_moves_the_students_output_monotonically_in_w():
    """
    A guided student (a tiny UNet that reads w) trained on the objective with the Gaussian teacher guided per
    example, w in [1, 4]: the guided teacher at w is the exact model of N(w MU, S^2), so one call from pure noise
    should land on a mean near w MU. The student's mean rises with w, one step after another.
    """
    torch.manual_seed(0)
    scheduler = DDPMHubScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", clip_sample=False)
    student = guidance_student(tiny_text_unet())
    options = DistillOptions(
        distill_from="teacher", distill_method="consistency", distill_guidance=(1.0, 4.0), consistency_skip=250
    )  # 4 points: the boundary reaches t = 999 in a few hundred steps
    distillation = ConsistencyDistillation(options, student, "epsilon", scheduler, channels_last=False)
    distillation.teacher = PromptedGaussian(scheduler.alphas_cumprod)
    objective = distillation.objective()
    optimizer, generator = torch.optim.Adam(student.parameters(), lr=2e-3), torch.Generator().manual_seed(0)

    def means(scales):
        x_T = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            return [
                float(objective.consistency_function(
                    student, x_T, torch.full((64,), 999), prompt_batch(1.0, 64).merge(ConditionBatch(
                        {"timestep_cond": guidance_embedding(torch.full((64,), w), 64)}
                    ))
                ).mean())
                for w in scales
            ]  # fmt: skip

    assert np.ptp(means([1.0, 2.0, 3.0, 4.0])) < 1e-6  # it starts blind to w
    for _ in range(250):
        x_0 = torch.randn(32, 1, 8, 8, generator=generator) * S
        scales = 1 + 3 * torch.rand(32, generator=generator)
        x_0 = x_0 + scales.view(-1, 1, 1, 1) * MU  # the guided teacher's data at each w
        loss = objective(student, x_0, generator, condition=prompt_batch(1.0, 32), null=prompt_batch(0.0, 32),
                         scales=scales).mean()  # fmt: skip
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        distillation.end_step(SimpleNamespace(unet=student))
    levels = means([1.0, 2.0, 3.0, 4.0])
    assert all(b - a > 0.3 * MU for a, b in zip(levels, levels[1:])), levels
    assert abs(levels[-1] - levels[0] - 3 * MU) < 0.5 * 3 * MU, levels


@pytest.mark.slow
def test_a_text_teacher_distilled_with_guidance_samples_guided_in_one_call_per_step(tmp_path):
    """
    A tiny text teacher distilled for 3 steps with --distill_guidance 1,4, and again killed after step 2 and resumed:
    the same student. Its UNet reads w (time_cond_proj_dim), the pipeline records the range, and a guided call takes
    one UNet call on N images per step (the teacher's take one on 2N), installed and through plain diffusers alike;
    w changes the images; a w outside the range, and a teacher that is not a text model, are refused with what is
    accepted.
    """
    from helpers import text_config

    teacher = tmp_path / "teacher"
    Source.of(text_config(tmp_path)).build(seed=0).save_pretrained(teacher)
    args = [*TINY, "--dataset_name", "builtin:digit-pairs", "--resolution", "8x16", "--distill_from", str(teacher)]
    args += ["--distill_method", "consistency", "--distill_guidance", "1,4", "--max_train_steps", "3"]
    args += ["--consistency_calls", "2", "--validation_guidance_scale", "2", "--checkpointing_steps", "2"]
    check_ok(run_script([*args, "--output_dir", str(tmp_path / "s")]))
    killed = run_script(
        [*args, "--output_dir", str(tmp_path / "k")], script=LAUNCHER, env={"FAULT_KILL_AFTER_CHECKPOINT": "2"}
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    check_ok(run_script([*args, "--output_dir", str(tmp_path / "k"), "--resume_from_checkpoint", "latest"]))
    assert_bit_identical(unet_weights(tmp_path / "s"), unet_weights(tmp_path / "k"))  # w draws resume too
    student = DDPMHubPipeline.from_pretrained(tmp_path / "s")
    student.set_progress_bar_config(disable=True)
    assert student.unet.config.time_cond_proj_dim == 64 and student.config.guidance_range == {"low": 1.0, "high": 4.0}
    assert summary(tmp_path / "s")["distillation"]["guidance_distilled"] == [1.0, 4.0]
    batches = []
    student.unet.register_forward_pre_hook(lambda module, inputs: batches.append(len(inputs[0])))

    def images(pipeline, w):
        generator = [torch.Generator().manual_seed(i) for i in range(3)]
        return pipeline(prompt="3 left of 7", guidance_scale=w, generator=generator, output_type="np").images

    guided = images(student, 3.0)
    assert batches == [3, 3]  # 2 calls, each on the 3 images: no null branch
    assert np.abs(guided - images(student, 1.0)).max() > 0  # w reaches the UNet (its map of w is trained)
    plain = DiffusionPipeline.from_pretrained(tmp_path / "s", trust_remote_code=True)
    plain.set_progress_bar_config(disable=True)
    np.testing.assert_allclose(images(plain, 3.0), guided, atol=1e-6)
    with pytest.raises(ValueError, match=r"guidance distilled in for w in \[1, 4\]"):
        student(prompt="3 left of 7", guidance_scale=6.0)
    with pytest.raises(ValueError, match="negative_prompt: this model has guidance distilled in"):
        student(prompt="3 left of 7", negative_prompt="1 left of 2", guidance_scale=2.0)
    with pytest.raises(UsageError, match="not a text-to-image model"):
        check([*TINY, "--distill_from", str(trained_folder(tmp_path / "plain")), "--distill_method", "consistency",
               "--distill_guidance", "1,4"])  # fmt: skip
    with pytest.raises(ValueError, match="options of --distill_method consistency"):
        check([*TINY, "--distill_from", str(teacher), "--distill_guidance", "1,4"])
    for wrong in ("4", "5,1", "1,nan", "0,200"):
        with pytest.raises(argparse.ArgumentTypeError, match="LOW,HIGH"):
            parse_guidance_range(wrong)
    assert parse_guidance_range([0, 7.5]) == (0.0, 7.5)
