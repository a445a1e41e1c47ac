"""A prior run's loop and entry (`ddpm_hub.training.prior` says what the run is): optimizer steps over the
micro-batches, the losses exchanged as a DDPM run's are (`loop.sync_losses`), checkpoints on schedule, then the end
(`prior_output`)."""

import contextlib
import json
import time

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from ..shipped.prior_ddpm_hub import PriorText, normalise, predict_x0
from .clip import CAPTION
from .loop import TrainingResult, sync_losses
from .options import TrainingOptions, dry_run_report
from .output import hold_output_dir, start_output
from .prior import PriorRun, PriorSource, build_prior_run, check_prior_options
from .prior_loss import prior_loss
from .prior_output import finish_prior, held_out_loss, resume_prior, save_prior_checkpoint
from .randomness import CONDITION_DROPOUT, NOISE, make_generator
from .run import close_accelerator, make_accelerator

# ----------------------------------------------------------------------------------------------------------------
# The loop


def draw_caption_rows(caption_ids: list[list[int]], generator: torch.Generator) -> torch.Tensor:
    """One caption per image, uniform among its captions: rows of the caption table `[B]`."""
    choices = torch.rand(len(caption_ids), generator=generator).tolist()
    return torch.tensor([ids[min(int(u * len(ids)), len(ids) - 1)] for u, ids in zip(choices, caption_ids)])


def micro_batch_text(run: PriorRun, m: int, caption_ids: list[list[int]]) -> PriorText:
    """
    The text condition of micro-batch m: one caption per image from (seed, CAPTION, m, rank), a share
    `--text_dropout_prob` of them replaced by the empty caption, drawn from (seed, CONDITION_DROPOUT, m, rank).
    """
    seed, rank = run.options.seed, run.accelerator.process_index
    rows = draw_caption_rows(caption_ids, make_generator(seed, CAPTION, m, rank))
    dropout = torch.rand(len(rows), generator=make_generator(seed, CONDITION_DROPOUT, m, rank))
    keep = dropout >= run.options.prior.text_dropout_prob
    return run.table.texts.rows(rows.to(run.table.texts.text_embeds.device)).where(keep, run.table.null)


def noise_and_timesteps(run: PriorRun, m: int, shape) -> tuple[torch.Tensor, torch.Tensor]:
    """t uniform in 0 .. T - 1 and eps ~ N(0, I) `[B x D]`, from (seed, NOISE, m, rank)."""
    generator = make_generator(run.options.seed, NOISE, m, run.accelerator.process_index)
    timesteps = torch.randint(0, run.scheduler.config.num_train_timesteps, (shape[0],), generator=generator)
    return torch.randn(shape, generator=generator), timesteps


def micro_batch_loss(run: PriorRun, m: int, values: dict) -> torch.Tensor:
    """The x_0 objective (`prior_loss`) of micro-batch m on its images' normalised CLIP embeddings."""
    device = run.accelerator.device
    text = micro_batch_text(run, m, values["caption_ids"])
    x_0 = normalise(run.prior, values["image_embeds"].to(device))
    noise, timesteps = noise_and_timesteps(run, m, x_0.shape)

    def model(x_t, t):
        with run.accelerator.autocast():
            return predict_x0(run.model, x_t, t, text)

    loss, _ = prior_loss(model, run.scheduler, x_0, timesteps.to(device), noise.to(device))
    return loss


def optimizer_step(run: PriorRun, micro_batches: list) -> torch.Tensor:
    """One optimizer step over `gradient_accumulation_steps` micro-batches; returns the loss, on the device."""
    accelerator, o, losses = run.accelerator, run.options, []
    for i, (m, _, values) in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(run.model):  # all-reduce once per step
            loss = micro_batch_loss(run, m, values)
            accelerator.backward(loss / len(micro_batches))
        losses.append(loss.detach().float())
    if o.optimizer.max_grad_norm > 0:
        accelerator.clip_grad_norm_(run.model.parameters(), o.optimizer.max_grad_norm)
    run.optimizer.step()
    run.lr_scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    if run.ema is not None:
        run.ema.update(run.prior)
    return torch.stack(losses).mean()


def train_prior(run: PriorRun, first_step: int) -> TrainingResult:
    """Optimizer steps until max_train_steps or the time limit; checkpoints and the held-out loss on schedule."""
    o, accelerator = run.options, run.accelerator
    max_steps, accumulation = o.length.max_train_steps, o.batches.gradient_accumulation_steps
    every_checkpoint, every_check = o.checkpoints.checkpointing_steps, o.validation.validation_steps
    loader = run.data.loader(
        first_step * accumulation, max_steps * accumulation, o.batches.dataloader_num_workers,
        accelerator.device.type == "cuda",
    )  # fmt: skip
    micro_batches = iter(loader)
    progress = tqdm(total=max_steps, initial=first_step, desc="train", disable=not accelerator.is_local_main_process)
    started = synced_at = time.monotonic()
    step, stopped_by, last_checkpoint, losses, pending, step_time = first_step, "max_train_steps", None, [], [], 0.0
    while step < max_steps:
        pending.append(optimizer_step(run, [next(micro_batches) for _ in range(accumulation)]))
        step += 1
        progress.update(1)
        checkpoint = every_checkpoint and step % every_checkpoint == 0
        check = every_check and step % every_check == 0 and step < max_steps
        if step % o.logging.logging_steps == 0 or checkpoint or check or step == max_steps:
            minutes = o.length.max_train_minutes
            time_up = minutes is not None and time.monotonic() - started > 60 * minutes
            seconds = time.monotonic() - synced_at
            step_time += seconds
            values, stop = sync_losses(run, pending, step, time_up, seconds, progress)
            losses, pending = losses + values, []
            if checkpoint:
                save_prior_checkpoint(run, step)
                last_checkpoint = step
            if check:
                held_out_loss(run, step)
            if stop:
                stopped_by = "max_train_minutes"
                break
            synced_at = time.monotonic()
    progress.close()
    validation = held_out_loss(run, step)
    return TrainingResult(
        first_step, step, stopped_by, time.monotonic() - started, step_time, losses, last_checkpoint, validation
    )


# ----------------------------------------------------------------------------------------------------------------
# The entry


def prior_main(o: TrainingOptions, dry_run: bool, source: PriorSource) -> None:
    """`training.main`'s branch for a prior configuration: check, then train and write the folder."""
    o = check_prior_options(o, source)
    if dry_run:
        report = json.loads(dry_run_report(o, source))
        print(json.dumps({**report, "pipeline_source": PriorSource.kind}, indent=2))
        return
    accelerator = make_accelerator(o)
    with hold_output_dir(o, accelerator):
        train_and_write_prior(o, source, accelerator)
    close_accelerator(accelerator)


def train_and_write_prior(o: TrainingOptions, source: PriorSource, accelerator: Accelerator) -> None:
    run = build_prior_run(o, source, accelerator)
    first_step = resume_prior(run)
    start_output(run)
    result = train_prior(run, first_step)
    finish_prior(run, result)
