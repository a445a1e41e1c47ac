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
"""

import contextlib
import copy
from dataclasses import replace
from pathlib import Path

from accelerate.logging import get_logger
from diffusers import DDIMScheduler, UNet2DModel

from ..errors import UsageError
from ..losses import DistillationObjective
from .options import DistillOptions

logger = get_logger(__name__, log_level="INFO")
TEACHER_FOLDER = "distill_teacher"  # in a checkpoint of a stage past the first: that stage's teacher
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

    def stage_of(self, step: int) -> int:
        """The stage of optimizer step `step` (1-based; step 0, before any, is in stage 0)."""
        return min(max(step - 1, 0) // self.options.distill_steps_per_stage, len(self.calls) - 1)

    def objective(self) -> DistillationObjective:
        prediction = self.first_prediction_type if self.stage == 0 else STUDENT_PREDICTION
        return DistillationObjective(
            self.scheduler, self.teacher, prediction, self.calls[self.stage], self.channels_last, self.teacher_context
        )

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
            self.teacher.load_state_dict(UNet2DModel.from_pretrained(path).state_dict())
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
        return {"teacher": teacher_name, "stages": list(self.calls), "calls": self.calls_now}


def distill_options(o):
    """--distill_from: the run trains the teacher's pipeline, predicting v, for stages x steps per stage; options that
    would change what the teacher is a model of are refused."""
    d = o.distillation
    if d.distill_from is None:
        return o
    m = o.model
    refused = {
        "--validation_holdout (a DDIM student has no variational bound to measure)": o.validation.validation_holdout,
        "--prediction_type (the student predicts v)": m.prediction_type not in (None, STUDENT_PREDICTION),
        "--variance_type, --ddpm_num_steps, --ddpm_beta_schedule (the student keeps the teacher's chain)": (
            m.variance_type is not None or m.ddpm_num_steps is not None or m.ddpm_beta_schedule is not None
        ),
        "--snr_gamma (the distillation loss has its own weighting, max(SNR, 1))": m.snr_gamma is not None,
    }
    wrong = [name for name, value in refused.items() if value]
    if wrong:
        raise UsageError(f"--distill_from: these options do not apply: {', '.join(wrong)}.")
    steps = len(d.distill_calls) * d.distill_steps_per_stage
    if o.length.max_train_steps not in (None, steps):
        raise UsageError(
            f"--distill_from: the run is {len(d.distill_calls)} stages x {d.distill_steps_per_stage} steps = {steps} "
            f"steps; leave --max_train_steps out (got {o.length.max_train_steps})."
        )
    if d.distill_calls[0] * 2 > 1000:
        raise UsageError(f"--distill_calls {d.distill_calls[0]}: the first teacher takes twice that, at most 1000.")
    o = replace(o, model=replace(m, pipeline=d.distill_from, prediction_type=STUDENT_PREDICTION))
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
