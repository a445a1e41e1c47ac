"""A prior run's loop and entry (`ddpm_hub.training.prior` says what the run is): optimizer steps over the
micro-batches, the losses exchanged as a DDPM run's are (`loop.sync_losses`), checkpoints on schedule, then the end
(`prior_output`)."""

import contextlib

import torch
from accelerate import Accelerator

from ..shipped.prior_ddpm_hub import PriorText, normalise, predict_x0
from .clip import CAPTION
from .component_loop import build_and_train, component_main, train_component
from .loop import TrainingResult
from .options import TrainingOptions
from .prior import PriorRun, PriorSource, build_prior_run, check_prior_options
from .prior_loss import prior_loss
from .prior_output import finish_prior, held_out_loss, resume_prior, save_prior_checkpoint
from .randomness import CONDITION_DROPOUT, NOISE, make_generator

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
    return train_component(run, first_step, optimizer_step, save_prior_checkpoint, held_out_loss)


# ----------------------------------------------------------------------------------------------------------------
# The entry


def prior_main(o: TrainingOptions, dry_run: bool, source: PriorSource) -> None:
    """`training.main`'s branch for a prior configuration: check, then train and write the folder."""
    component_main(o, dry_run, source, PriorSource.kind, check_prior_options, train_and_write_prior)


def train_and_write_prior(o: TrainingOptions, source: PriorSource, accelerator: Accelerator) -> None:
    build_and_train(build_prior_run(o, source, accelerator), resume_prior, train_prior, finish_prior)
