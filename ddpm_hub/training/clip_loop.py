"""A CLIP run's loop and entry (`ddpm_hub.training.clip` says what the run is): optimizer steps over the micro-batches,
the losses exchanged as a DDPM run's are (`loop.sync_losses`), checkpoints and the held-out retrieval accuracy on
schedule, then the end (`clip_output`)."""

import contextlib

import torch
from accelerate import Accelerator

from .clip import CAPTION, ClipRun, ClipSource, build_clip_run, check_clip_options
from .clip_loss import MAX_LOGIT_SCALE, contrastive_loss, gather_with_local_grad, same_meaning
from .clip_output import finish_clip, log_retrieval, resume_clip, save_clip_checkpoint
from .component_loop import build_and_train, component_main, train_component
from .loop import TrainingResult
from .options import TrainingOptions
from .randomness import DROPOUT, derive_seed, make_generator

# ----------------------------------------------------------------------------------------------------------------
# The loop


def draw_captions(captions: list[list[str]], generator: torch.Generator) -> list[str]:
    """One caption per image, uniform among its captions."""
    choices = torch.rand(len(captions), generator=generator).tolist()
    return [texts[min(int(u * len(texts)), len(texts) - 1)] for u, texts in zip(choices, captions)]


def micro_batch_loss(run: ClipRun, m: int, x: torch.Tensor, values: dict) -> torch.Tensor:
    """
    The contrastive loss of micro-batch m over the global batch (`clip_loss`): images `x` `[B x C x H x W]` in
    [-1, 1], one caption each drawn from (seed, CAPTION, m, rank), cut to the text tower's positions with its end
    token kept (as CLIP's 77); captions of the same meaning are not negatives.
    """
    accelerator, seed, rank = run.accelerator, run.options.seed, run.accelerator.process_index
    pixel_values = run.preprocessing.pixel_values((x.to(accelerator.device) + 1) / 2)
    captions = draw_captions(values["captions"], make_generator(seed, CAPTION, m, rank))
    tokens = run.tokenizer(captions, padding=True, truncation=True, return_tensors="pt").to(accelerator.device)
    torch.manual_seed(derive_seed(seed, DROPOUT, m, rank))  # dropout, if the configuration has any
    with accelerator.autocast():
        text_embeds, image_embeds, logit_scale = run.model(tokens.input_ids, tokens.attention_mask, pixel_values)
    text_embeds = gather_with_local_grad(accelerator, text_embeds.float())
    image_embeds = gather_with_local_grad(accelerator, image_embeds.float())
    meanings = accelerator.gather(values["meaning"].to(accelerator.device))
    return contrastive_loss(text_embeds, image_embeds, logit_scale.float(), same_meaning(meanings))


def optimizer_step(run: ClipRun, micro_batches: list) -> torch.Tensor:
    """
    One optimizer step over `gradient_accumulation_steps` micro-batches; returns the loss, on the device. Each rank
    back-propagates the global loss through its own rows only, times the number of ranks: DDP's mean of the ranks'
    gradients is then the gradient of the global loss.
    """
    accelerator, o, losses = run.accelerator, run.options, []
    for i, (m, x, values) in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(run.model):  # all-reduce once per step
            loss = micro_batch_loss(run, m, x, values)
            accelerator.backward(loss * accelerator.num_processes / len(micro_batches))
        losses.append(loss.detach().float())
    if o.optimizer.max_grad_norm > 0:
        accelerator.clip_grad_norm_(run.model.parameters(), o.optimizer.max_grad_norm)
    run.optimizer.step()
    run.lr_scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():  # CLIP clips the temperature at 100
        run.clip.logit_scale.clamp_(max=MAX_LOGIT_SCALE)
    if run.ema is not None:
        run.ema.update(run.clip)
    return torch.stack(losses).mean()


def train_clip(run: ClipRun, first_step: int) -> TrainingResult:
    """Optimizer steps until max_train_steps or the time limit; checkpoints and held-out retrieval on schedule."""
    return train_component(run, first_step, optimizer_step, save_clip_checkpoint, log_retrieval)


# ----------------------------------------------------------------------------------------------------------------
# The entry


def clip_main(o: TrainingOptions, dry_run: bool, source: ClipSource) -> None:
    """`training.main`'s branch for a CLIP configuration: check, then train and write the folder."""
    component_main(o, dry_run, source, "CLIP configuration", check_clip_options, train_and_write_clip)


def train_and_write_clip(o: TrainingOptions, source: ClipSource, accelerator: Accelerator) -> None:
    build_and_train(build_clip_run(o, source, accelerator), resume_clip, train_clip, finish_clip)
