"""Progressive distillation (Salimans & Ho 2022) as a training run: `--distill_from TEACHER`.

    accelerate launch training/train.py --config training/configs/ddpm-digits-16-distill.yaml

The student starts from the teacher's weights and predicts v. Stage k trains it to take one DDIM step where the
stage's teacher takes two (`ddpm_hub.losses.DistillationObjective`), on `distill_calls[k]` steps: stage 0's teacher is
the given model (its own parameterisation), stage k's the student at the end of stage k - 1 (its EMA when on). A stage
is `distill_steps_per_stage` optimizer steps, so the stage of a step is a function of the step alone: a run resumed
inside a stage, or at its boundary, continues exactly (the teacher of a stage past the first is in every checkpoint).

The student is saved as an ordinary pipeline folder whose scheduler is DDIM on its "trailing" timesteps
(`student_scheduler`), with `default_num_inference_steps` set to its last stage's calls: `from_pretrained` samples in
that many steps by default. Classifier-free guidance is not distilled in (Meng et al. 2023 do): the student learns
the teacher's conditional and null-label outputs, and guidance is applied when it samples, as for the teacher.

`--distill_method consistency` (`ConsistencyDistillation`) trains a consistency model instead (Song et al. 2023, in
DDPM time as LCM, Luo et al. 2023; `ddpm_hub.losses.ConsistencyObjective`): one teacher DDIM step of k timesteps per
example, a target network (an EMA of the student) in every checkpoint, `--max_train_steps` long; the student is saved
with diffusers' LCMScheduler (`consistency_scheduler`) and samples in `--consistency_calls` calls by default.
"""

import contextlib
import copy
import inspect
from dataclasses import replace
from pathlib import Path

import torch
from accelerate.logging import get_logger
from diffusers import DDIMScheduler, LCMScheduler, UNet2DConditionModel, UNet2DModel

from ..errors import UsageError
from ..losses import ConsistencyObjective, DistillationObjective, consistency_timesteps
from ..shipped.scheduling_ddpm_hub import DDPMHubScheduler
from .options import DistillOptions

logger = get_logger(__name__, log_level="INFO")
TEACHER_FOLDER = "distill_teacher"  # in a checkpoint of a stage past the first: that stage's teacher
TARGET_FOLDER = "consistency_target"  # in every checkpoint of a consistency distillation: its target network
CONSISTENCY_STEPS = 2000  # a consistency distillation's --max_train_steps when not given
CONSISTENCY_OPTIONS = (
    "consistency_skip", "consistency_target_decay", "consistency_calls", "consistency_huber_c", "distill_guidance"
)  # fmt: skip
GUIDANCE_EMBEDDING_DIM = 64  # the width of a guided student's w embedding (`guidance_embedding`)
STUDENT_PREDICTION = "v_prediction"


def student_scheduler(config) -> DDIMScheduler:
    """
    DDIM (eta = 0) predicting v on "trailing" timesteps, ending at x_0 (alpha-bar 1): with n calls, the steps
    T - 1, T - 1 - T/n, ..., T/n - 1 of the distillation (`ddpm_hub.losses.distillation_timesteps`) where n divides T.
    """
    return DDIMScheduler.from_config(
        {**config, "prediction_type": STUDENT_PREDICTION},
        timestep_spacing="trailing",
        set_alpha_to_one=True,
        steps_offset=0,
    )


class Distillation:
    """What a distilling run holds besides the student: the stage's teacher, and which stage a step is in."""

    def __init__(self, options: DistillOptions, teacher: UNet2DModel, teacher_prediction_type: str, scheduler,
                 channels_last: bool, teacher_context=contextlib.nullcontext):  # fmt: skip
        self.options, self.scheduler = options, scheduler
        self.teacher = copy.deepcopy(teacher).eval().requires_grad_(False)
        self.first_prediction_type = teacher_prediction_type
        self.channels_last, self.teacher_context = channels_last, teacher_context
        self.stage = 0

    @property
    def calls(self) -> tuple[int, ...]:
        return self.options.distill_calls

    def to(self, device) -> "Distillation":
        self.teacher.to(device)
        return self

    def stage_of(self, step: int) -> int:
        """The stage of optimizer step `step` (1-based; step 0, before any, is in stage 0)."""
        return min(max(step - 1, 0) // self.options.distill_steps_per_stage, len(self.calls) - 1)

    def objective(self) -> DistillationObjective:
        prediction = self.first_prediction_type if self.stage == 0 else STUDENT_PREDICTION
        return DistillationObjective(
            self.scheduler, self.teacher, prediction, self.calls[self.stage], self.channels_last, self.teacher_context,
            clip_sample=bool(self.scheduler.config.clip_sample),  # a latent teacher does not clip
        )  # fmt: skip

    def begin_step(self, run, step: int) -> None:
        """Before optimizer step `step`: at a stage's first step, the student so far becomes the teacher."""
        stage = self.stage_of(step)
        if stage != self.stage:
            self.stage = stage
            self.teacher.load_state_dict(run.final_unet().state_dict())
            run.objective = self.objective()
            calls = self.calls[stage]
            logger.info(
                "Distillation stage %d: the student learns %d calls from a teacher of %d.", stage, calls, 2 * calls
            )

    def resume(self, run, step: int, folder: Path) -> None:
        """
        The stage of the checkpoint's last step, and its teacher from the checkpoint (stage 0's is the given model);
        the next step's `begin_step` starts the next stage when the checkpoint ended one.
        """
        self.stage = self.stage_of(step)
        if self.stage > 0:
            path = folder / TEACHER_FOLDER
            if not path.is_dir():
                raise UsageError(f"{folder} holds no {TEACHER_FOLDER}: it is not a checkpoint of this distillation.")
            self.teacher.load_state_dict(type(self.teacher).from_pretrained(path).state_dict())
        run.objective = self.objective()

    def save(self, folder: Path) -> None:
        """Into a checkpoint: the stage's teacher, when it is not the given model."""
        if self.stage > 0:
            self.teacher.save_pretrained(folder / TEACHER_FOLDER, safe_serialization=True)

    @property
    def calls_now(self) -> int:
        """The student's calls in the current stage: what its grids and saved pipeline sample with."""
        return self.calls[self.stage]

    def card_facts(self, teacher_name: str) -> dict:
        """What the training summary says of the distillation."""
        return {"method": "progressive", "teacher": teacher_name, "stages": list(self.calls), "calls": self.calls_now}

    def end_step(self, run) -> None:
        """After each optimizer step: nothing (a stage's teacher changes at the next stage's first step)."""

    def sampling_scheduler(self, config) -> DDIMScheduler:
        return student_scheduler(config)

    def record(self) -> dict:
        """What a checkpoint records: the calls of each stage and its length in steps."""
        d = self.options
        return {"method": "progressive", "calls": list(d.distill_calls), "steps_per_stage": d.distill_steps_per_stage}


def consistency_scheduler(config, skip: int) -> LCMScheduler:
    """
    The consistency student's sampler: diffusers' LCMScheduler on the teacher's chain (its betas, its clipping), the
    student's prediction type (v), `original_inference_steps` T / k: it samples on the points the student learned.
    """
    accepted = inspect.signature(LCMScheduler.__init__).parameters
    settings = {key: value for key, value in dict(config).items() if key in accepted}
    settings.update(prediction_type=STUDENT_PREDICTION, original_inference_steps=config["num_train_timesteps"] // skip)
    chain = DDPMHubScheduler.from_config(config)
    try:
        scheduler = LCMScheduler.from_config(settings)
    except NotImplementedError:  # a schedule of ddpm_hub's own (cosine, sigmoid): its betas as numbers
        scheduler = None
    if scheduler is None or not torch.equal(scheduler.alphas_cumprod, chain.alphas_cumprod):
        scheduler = LCMScheduler.from_config({**settings, "trained_betas": chain.betas.tolist()})
    return scheduler


class ConsistencyDistillation:
    """
    What a consistency distillation holds besides the student: the teacher (fixed) and the target network theta^-,
    an EMA of the student (constant decay `consistency_target_decay`) updated after every optimizer step and saved in
    every checkpoint, so that a resumed run continues exactly.
    """

    def __init__(self, options: DistillOptions, teacher: UNet2DModel, teacher_prediction_type: str, scheduler,
                 channels_last: bool, teacher_context=contextlib.nullcontext):  # fmt: skip
        self.options, self.scheduler = options, scheduler
        self.teacher = copy.deepcopy(teacher).eval().requires_grad_(False)
        self.target = copy.deepcopy(teacher).eval().requires_grad_(False)  # the student at step 0
        self.teacher_prediction_type = teacher_prediction_type
        self.channels_last, self.teacher_context = channels_last, teacher_context
        self.sampler = consistency_scheduler(scheduler.config, options.consistency_skip)

    def to(self, device) -> "ConsistencyDistillation":
        self.teacher.to(device)
        self.target.to(device)
        return self

    def objective(self) -> ConsistencyObjective:
        o = self.options
        return ConsistencyObjective(
            self.scheduler, self.teacher, self.teacher_prediction_type, self.target, o.consistency_skip,
            bool(self.scheduler.config.clip_sample),  # the teacher's: a latent model's does not clip
            self.sampler.config.timestep_scaling, o.consistency_huber_c, self.channels_last, self.teacher_context,
            o.distill_guidance, GUIDANCE_EMBEDDING_DIM,
        )  # fmt: skip

    def begin_step(self, run, step: int) -> None:
        """Before each optimizer step: nothing (the teacher never changes)."""

    @torch.no_grad()
    def end_step(self, run) -> None:
        """theta^- <- d theta^- + (1 - d) theta after each optimizer step (Song et al. 2023, Algorithm 2)."""
        target = list(self.target.parameters())
        student = [p.detach().to(t.dtype) for t, p in zip(target, run.unet.parameters(), strict=True)]
        torch._foreach_lerp_(target, student, 1.0 - self.options.consistency_target_decay)

    def resume(self, run, step: int, folder: Path) -> None:
        """The target network from the checkpoint."""
        path = folder / TARGET_FOLDER
        if not path.is_dir():
            raise UsageError(
                f"{folder} holds no {TARGET_FOLDER}: it is not a checkpoint of a consistency distillation."
            )
        self.target.load_state_dict(type(self.target).from_pretrained(path).state_dict())
        run.objective = self.objective()

    def save(self, folder: Path) -> None:
        self.target.save_pretrained(folder / TARGET_FOLDER, safe_serialization=True)

    @property
    def calls_now(self) -> int:
        """The calls the student's grids and saved pipeline sample in."""
        return self.options.consistency_calls

    def sampling_scheduler(self, config) -> LCMScheduler:
        return consistency_scheduler(config, self.options.consistency_skip)

    def card_facts(self, teacher_name: str) -> dict:
        """What the training summary says of the distillation."""
        d = self.options
        return {
            "method": "consistency", "teacher": teacher_name, "skip": d.consistency_skip,
            "points": len(consistency_timesteps(self.scheduler.config.num_train_timesteps, d.consistency_skip)),
            "target_decay": d.consistency_target_decay, "sampler": "LCMScheduler", "calls": self.calls_now,
            "guidance_distilled": list(d.distill_guidance) if d.distill_guidance else None,
        }  # fmt: skip

    def record(self) -> dict:
        """What a checkpoint records: what fixes the objective of each step (the calls only choose the grids')."""
        d = self.options
        return {
            "method": "consistency", "skip": d.consistency_skip, "target_decay": d.consistency_target_decay,
            "huber_c": d.consistency_huber_c, "guidance": list(d.distill_guidance) if d.distill_guidance else None,
        }  # fmt: skip


def guidance_student(unet: UNet2DConditionModel, dim: int = GUIDANCE_EMBEDDING_DIM) -> UNet2DConditionModel:
    """
    The teacher's UNet with an input for the guidance scale (`time_cond_proj_dim`: diffusers adds its linear map of
    `timestep_cond` to the timestep's embedding), that map zero: the student starts as the teacher at every w.
    """
    config = {key: value for key, value in unet.config.items() if key != "_use_default_values"}  # else reset
    student = UNet2DConditionModel.from_config({**config, "time_cond_proj_dim": dim})
    missing, unexpected = student.load_state_dict(unet.state_dict(), strict=False)
    if unexpected or missing != ["time_embedding.cond_proj.weight"]:
        raise RuntimeError(f"the guided student does not extend its teacher: {missing=}, {unexpected=}")
    torch.nn.init.zeros_(student.time_embedding.cond_proj.weight)
    return student.to(device=unet.device, dtype=unet.dtype).train(unet.training)


def make_distillation(options: DistillOptions, teacher: UNet2DModel, source, scheduler, channels_last: bool,
                      teacher_context=contextlib.nullcontext):  # fmt: skip
    """--distill_method: the run's `Distillation` or `ConsistencyDistillation`; the teacher is the model as loaded."""
    prediction = source.scheduler_config.get("prediction_type", "epsilon")
    kind = ConsistencyDistillation if options.distill_method == "consistency" else Distillation
    return kind(options, teacher, prediction, scheduler, channels_last, teacher_context)


def distill_options(o):
    """--distill_from: the run trains the teacher's pipeline, predicting v, for stages x steps per stage (progressive)
    or --max_train_steps (consistency); options that would change what the teacher is a model of are refused."""
    d = o.distillation
    defaults = DistillOptions()
    consistency_given = [f"--{name}" for name in CONSISTENCY_OPTIONS if getattr(d, name) != getattr(defaults, name)]
    if d.distill_from is None:
        given = (["--distill_method"] if d.distill_method != defaults.distill_method else []) + consistency_given
        if given:
            raise UsageError(f"{', '.join(given)}: these distil a trained model; give it with --distill_from.")
        return o
    m = o.model
    loss = "the consistency loss is a pseudo-Huber distance" if d.distill_method == "consistency" else (
        "the distillation loss has its own weighting, max(SNR, 1)"
    )  # fmt: skip
    refused = {
        "--validation_holdout (a student has no variational bound to measure)": o.validation.validation_holdout,
        "--prediction_type (the student predicts v)": m.prediction_type not in (None, STUDENT_PREDICTION),
        "--variance_type, --ddpm_num_steps, --ddpm_beta_schedule (the student keeps the teacher's chain)": (
            m.variance_type is not None or m.ddpm_num_steps is not None or m.ddpm_beta_schedule is not None
        ),
        f"--snr_gamma ({loss})": m.snr_gamma is not None,
    }
    wrong = [name for name, value in refused.items() if value]
    if wrong:
        raise UsageError(f"--distill_from: these options do not apply: {', '.join(wrong)}.")
    o = replace(o, model=replace(m, pipeline=d.distill_from, prediction_type=STUDENT_PREDICTION))
    scale = o.validation.validation_guidance_scale
    if d.distill_guidance is not None and not d.distill_guidance[0] <= scale <= d.distill_guidance[1]:
        raise UsageError(
            f"--validation_guidance_scale {scale:g}: the student's grids are guided within --distill_guidance "
            f"{d.distill_guidance[0]:g},{d.distill_guidance[1]:g}; give a scale in that range."
        )
    if d.distill_method == "consistency":
        progressive = [
            f"--{name}" for name in ("distill_calls", "distill_steps_per_stage")
            if getattr(d, name) != getattr(defaults, name)
        ]  # fmt: skip
        if progressive:
            raise UsageError(
                f"--distill_method consistency: {', '.join(progressive)} set progressive distillation's stages; a "
                "consistency distillation trains for --max_train_steps and samples in --consistency_calls calls."
            )
        return o.changed("length", max_train_steps=o.length.max_train_steps or CONSISTENCY_STEPS)
    if consistency_given:
        raise UsageError(
            f"{', '.join(consistency_given)}: options of --distill_method consistency; this run is progressive."
        )
    steps = len(d.distill_calls) * d.distill_steps_per_stage
    if o.length.max_train_steps not in (None, steps):
        raise UsageError(
            f"--distill_from: the run is {len(d.distill_calls)} stages x {d.distill_steps_per_stage} steps = {steps} "
            f"steps; leave --max_train_steps out (got {o.length.max_train_steps})."
        )
    if d.distill_calls[0] * 2 > 1000:
        raise UsageError(f"--distill_calls {d.distill_calls[0]}: the first teacher takes twice that, at most 1000.")
    return o.changed("length", max_train_steps=steps)


def check_teacher(o, source) -> None:
    """The teacher is a trained DDPM-family model with a fixed variance (its DDIM steps read its mean only)."""
    if o.distillation.distill_from is None:
        return
    name = o.distillation.distill_from
    if not source.trained:
        raise UsageError(
            f"--distill_from {name}: a configuration without weights; distil a trained model (a run's output_dir, "
            "e.g. runs/ddpm-digits-16, or a Hub repo id)."
        )
    if source.scheduler_config.get("variance_type") == "learned_range":
        raise UsageError(
            f"--distill_from {name}: its UNet also predicts the variance (learned_range); distillation takes "
            "models with a fixed variance (fixed_small or fixed_large)."
        )
    d = o.distillation
    if d.distill_method == "consistency":
        steps = source.scheduler_config.get("num_train_timesteps", 1000)
        if steps % d.consistency_skip or d.consistency_skip >= steps:
            raise UsageError(
                f"--consistency_skip {d.consistency_skip}: the teacher's T = {steps} timesteps must be a multiple of "
                f"it, and larger (e.g. 20 gives {steps // 20} points)."
            )
        if d.distill_guidance is not None:
            check_guided_teacher(name, source)
        if d.consistency_calls > steps // d.consistency_skip:
            raise UsageError(
                f"--consistency_calls {d.consistency_calls}: at most the student's {steps // d.consistency_skip} "
                f"points (T / --consistency_skip = {steps} / {d.consistency_skip})."
            )


def check_guided_teacher(name: str, source) -> None:
    """--distill_guidance: a text model (its UNet takes `timestep_cond`) trained with caption dropout's null branch."""
    conditioning = source.conditioning()
    if source.unet_config.get("_class_name") != "UNet2DConditionModel" or conditioning.prompts is None:
        raise UsageError(
            f"--distill_guidance: {name} is not a text-to-image model; guidance is distilled into a text model's "
            "UNet (UNet2DConditionModel, which takes the scale through `timestep_cond`). Leave it out, and guide "
            "the student as its teacher (two calls per step)."
        )
    if source.unet_config.get("time_cond_proj_dim"):
        raise UsageError(f"--distill_guidance: {name} already has guidance distilled in (time_cond_proj_dim).")
    if conditioning.low_res is not None:
        raise UsageError(f"--distill_guidance: {name} is a super-resolution model; distil a base model.")
