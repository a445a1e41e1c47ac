"""A prior run's checkpoints (saved atomically, resumed exactly) and its end (`ddpm_hub.training.prior`): the prior
(the EMA when on) with its scheduler and the CLIP's text side as a prior folder (`ddpm_hub.loading.prior`), its
held-out loss and caption accuracy, and `training_summary.json`."""

from dataclasses import asdict
from pathlib import Path

import torch
from accelerate.logging import get_logger
from accelerate.utils import gather_object

from ..loading.configs import weights_checksum
from ..loading.prior import save_prior_stage
from ..run_folder import SUMMARY_FILE, write_json
from ..shipped.prior_ddpm_hub import DEFAULT_PRIOR_NUM_CANDIDATES, normalise, predict_x0, sample_prior
from .component_checkpoints import check_component_weights, resume_component, save_component_checkpoint
from .loop import TrainingResult
from .output import run_summary
from .prior import PriorRun
from .prior_loss import prior_loss
from .randomness import HOLDOUT, SAMPLING, make_generator

logger = get_logger(__name__, log_level="INFO")

EMA_FOLDER = "ema_prior"
ACCURACY_IMAGES = 256  # held-out images whose caption the prior's sampled embedding is read back as


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints


def prior_record(run: PriorRun) -> dict:
    """What the weights are a model of: the prior's and its scheduler's configurations, the CLIP, the dropout."""

    def public(config) -> dict:
        return {key: value for key, value in dict(config).items() if not key.startswith("_")}

    return {
        "prior": public(run.prior.config),
        "scheduler": public(run.scheduler.config),
        "clip": {"name": str(run.options.prior.clip), "text_positions": int(run.prior.config.num_embeddings)},
        "objective": {"text_dropout_prob": run.options.prior.text_dropout_prob},
    }


def check_finite_weights(run: PriorRun, step: int) -> None:
    """The weights (and the EMA) are finite; otherwise stop before anything is saved over good state."""
    check_component_weights(run, run.prior, step)


def save_prior_checkpoint(run: PriorRun, step: int) -> Path:
    """Accelerate's state + the EMA + `training_state.json`, written under a temporary name and renamed complete."""
    return save_component_checkpoint(run, run.prior, prior_record(run), step, EMA_FOLDER)


def resume_prior(run: PriorRun) -> int:
    """Load the checkpoint --resume_from_checkpoint names, if any, after checking it; returns its step (0: none)."""
    return resume_component(run, prior_record(run), "prior", "prior", EMA_FOLDER)


# ----------------------------------------------------------------------------------------------------------------
# Held-out measurements and the end


def held_out_rows(run: PriorRun) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The held-out images' embeddings `[n x D]`, first caption's table row `[n]` and meaning ids; None without."""
    columns = run.dataset.holdout_columns
    if columns is None:
        return None
    rows = torch.tensor([ids[0] for ids in columns["caption_ids"]])
    return columns["image_embeds"], rows, columns["meaning"]


@torch.no_grad()
def held_out_loss(run: PriorRun, step: int) -> dict | None:
    """The x_0 loss of the weights that would be saved on the held-out images (their first caption, a fixed draw of
    t and noise); logged, and returned for the summary. None without a holdout (main process only)."""
    held = held_out_rows(run)
    if held is None or not run.accelerator.is_main_process:
        return None
    prior, (embeds, rows, _) = run.final_prior(), held
    device = run.accelerator.device
    x_0 = normalise(prior, embeds.to(device))
    generator = make_generator(run.options.seed, HOLDOUT, 1)
    t = torch.randint(0, run.scheduler.config.num_train_timesteps, (len(x_0),), generator=generator).to(device)
    noise = torch.randn(x_0.shape, generator=generator).to(device)
    text = run.table.texts.rows(rows.to(device))
    was_training = prior.training
    prior.eval()
    loss, _ = prior_loss(lambda x, s: predict_x0(prior, x, s, text), run.scheduler, x_0, t, noise)
    prior.train(was_training)
    run.accelerator.log({"validation/loss": float(loss)}, step=step)
    return {"held_out_loss": float(loss)}


@torch.no_grad()
def caption_accuracy(run: PriorRun, prior) -> dict | None:
    """
    For held-out images: the prior's sampled embedding of the image's first caption (the validation guidance scale
    and steps, two candidates), then the caption the CLIP reads it as, among one per meaning of the data: the share
    read as the image's own meaning, beside the share of the real embeddings, and the mean cosine between sampled
    and real embeddings.
    """
    held = held_out_rows(run)
    if held is None:
        return None
    embeds, rows, meanings = (part[:ACCURACY_IMAGES] for part in held)
    device, o = run.accelerator.device, run.options
    columns = run.dataset.columns
    first = {}
    for ids, meaning in zip(columns["caption_ids"], columns["meaning"].tolist()):
        first.setdefault(meaning, ids[0])
    known = list(first)
    candidates = run.table.texts.rows(torch.tensor([first[m] for m in known], device=device)).text_embeds
    prior.eval()
    sampled = sample_prior(
        prior, run.scheduler, run.table.texts.rows(rows.to(device)), run.table.null,
        o.validation.validation_guidance_scale, o.validation.ddpm_num_inference_steps,
        make_generator(o.seed, SAMPLING, 1), num_candidates=DEFAULT_PRIOR_NUM_CANDIDATES,
    )  # fmt: skip
    truth = torch.tensor([known.index(m) if m in first else -1 for m in meanings.tolist()], device=device)

    def accuracy(image_embeds):
        return float(((image_embeds.to(device) @ candidates.T).argmax(1) == truth).float().mean())

    return {
        "images": len(rows),
        "guidance_scale": o.validation.validation_guidance_scale,
        "num_inference_steps": o.validation.ddpm_num_inference_steps,
        "num_candidates": DEFAULT_PRIOR_NUM_CANDIDATES,
        "caption_accuracy": accuracy(sampled),
        "caption_accuracy_of_real_embeddings": accuracy(embeds),
        "mean_cosine_to_real_embedding": float((sampled * embeds.to(device)).sum(-1).mean()),
    }


def finish_prior(run: PriorRun, result: TrainingResult) -> None:
    """The last checkpoint, then (main process) the prior folder, the measurements and the summary."""
    accelerator, o = run.accelerator, run.options
    check_finite_weights(run, result.global_step)
    checksums = gather_object([weights_checksum(run.prior)])
    if len(set(checksums)) != 1:
        raise RuntimeError(f"The processes ended with different weights (sha256 per rank: {checksums}).")
    if o.checkpoints.checkpointing_steps and result.last_checkpoint != result.global_step:
        if result.global_step > result.first_step:
            save_prior_checkpoint(run, result.global_step)
    if accelerator.is_main_process:
        prior = run.final_prior().eval()
        save_prior_stage(run.output_dir, prior, run.scheduler, run.text_encoder, run.clip.tokenizer)
        record = asdict(run_summary(run, result, checksums, run.prior))
        record["samples"] = None  # a prior draws embeddings, not images: DDPMHubUnCLIPPipeline decodes them
        record["prior"] = {
            "class": type(prior).__name__,
            "clip": str(o.prior.clip),
            "target": "x_0 of the CLIP image embedding normalised by the data's mean and std (clip_mean, clip_std)",
            "null_text": "the empty caption's text embedding and token states",
            "text_dropout_prob": o.prior.text_dropout_prob,
            "captions": len(run.table.captions),
            "held_out": caption_accuracy(run, prior),
        }
        write_json(run.output_dir / SUMMARY_FILE, record)
        logger.info("Wrote the prior, its scheduler, the CLIP text side and the summary to %s", run.output_dir)
    accelerator.wait_for_everyone()
