"""A CLIP run's checkpoints (saved atomically, resumed exactly) and its end (`ddpm_hub.training.clip`): the weights
(the EMA when on) as a `CLIPModel` folder with its tokenizer and `image_preprocessing.json`, `clip_retrieval.png`
(images with the caption the CLIP picks for them) and `training_summary.json` with the held-out retrieval accuracy."""

import shutil
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate.logging import get_logger
from accelerate.utils import gather_object

from ..errors import UsageError
from ..evaluation.clip_accuracy import caption_picture, top_captions
from ..loading.clip import encode_images, encode_text
from ..loading.configs import weights_checksum
from ..run_folder import CHECKPOINTS_DIR, SUMMARY_FILE, write_json
from .checkpoint_folders import (
    CHECKPOINT_PREFIX,
    TrainingState,
    commit_checkpoint,
    latest_checkpoint,
    prune_checkpoints,
    record_differences,
    temporary_checkpoint_dir,
)
from .checkpointing import CheckpointError, check_resumable, check_same_checkpoint, find_checkpoint
from .clip import ClipRun
from .loop import TrainingResult
from .output import run_summary

logger = get_logger(__name__, log_level="INFO")

EMA_FOLDER = "ema_clip"
RETRIEVAL_FILE = "clip_retrieval.png"
PICTURE_IMAGES = 16


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints


def clip_record(run: ClipRun) -> dict:
    """What the weights are a model of: the CLIP's configuration (its towers flattened) and the tokenizer's size."""
    config = run.clip.config.to_dict()
    flat = {
        key: value for key, value in config.items() if not isinstance(value, dict) and key != "transformers_version"
    }
    for tower in ("text_config", "vision_config"):
        ignored = ("transformers_version", "_name_or_path", "dtype", "torch_dtype")
        flat.update(
            {f"{tower}.{k}": v for k, v in config[tower].items() if k not in ignored and not isinstance(v, dict)}
        )
    return {"clip": flat, "tokenizer": {"size": len(run.tokenizer), "eos_token_id": run.tokenizer.eos_token_id}}


def check_finite_weights(run: ClipRun, step: int) -> None:
    """The weights (and the EMA) are finite; otherwise stop before anything is saved over good state."""
    models = {"": run.clip, "EMA ": run.ema.model if run.ema is not None else None}
    bad = [
        f"{prefix}{name}"
        for prefix, model in models.items()
        if model is not None
        for name, p in model.named_parameters()
        if not bool(torch.isfinite(p).all())
    ]
    if bad:
        last = latest_checkpoint(run.output_dir / CHECKPOINTS_DIR)
        raise CheckpointError(
            f"the weights are not finite after step {step} (e.g. {', '.join(bad[:3])}); nothing was saved, and the "
            f"last good checkpoint is {last or 'none'}. Lower --learning_rate, then resume from it."
        )


def save_clip_checkpoint(run: ClipRun, step: int) -> Path:
    """Accelerate's state + the EMA + `training_state.json`, written under a temporary name and renamed complete."""
    check_finite_weights(run, step)
    accelerator, checkpoints_dir = run.accelerator, run.output_dir / CHECKPOINTS_DIR
    temporary = temporary_checkpoint_dir(checkpoints_dir, step)
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    if accelerator.is_main_process:
        if run.ema is not None:
            run.ema.save(temporary / EMA_FOLDER)
        micro_batch = step * run.options.batches.gradient_accumulation_steps
        epoch, batch_in_epoch = run.data.position(micro_batch)
        TrainingState(
            global_step=step,
            micro_batch=micro_batch,
            epoch=epoch,
            batch_in_epoch=batch_in_epoch,
            seed=run.options.seed,
            global_batch_size=run.data.global_batch_size,
            gradient_accumulation_steps=run.options.batches.gradient_accumulation_steps,
            num_images=run.data.num_images,
            ema_updates=run.ema.num_updates if run.ema is not None else None,
            model=clip_record(run),
        ).write(temporary)
    accelerator.wait_for_everyone()
    final = temporary.with_name(f"{CHECKPOINT_PREFIX}{step}")
    if accelerator.is_main_process:
        final = commit_checkpoint(temporary, checkpoints_dir, step)
        prune_checkpoints(checkpoints_dir, run.options.checkpoints.checkpoints_total_limit)
        logger.info("Saved %s", final)
    accelerator.wait_for_everyone()
    return final


def resume_clip(run: ClipRun) -> int:
    """Load the checkpoint --resume_from_checkpoint names, if any, after checking it; returns its step (0: none)."""
    o = run.options
    folder = find_checkpoint(o.checkpoints.resume_from_checkpoint, o.output_dir)
    check_same_checkpoint(run.accelerator, folder, o.output_dir)
    if folder is None:
        return 0
    state = TrainingState.read(folder)
    differences = record_differences(state.model or {}, clip_record(run))
    if state.model is None or "clip" not in state.model or differences:
        raise UsageError(
            f"Cannot resume from {folder}: it is not a checkpoint of this CLIP "
            f"({'; '.join(differences[:6]) or 'it records another kind of model'}). Resume it with the options of "
            "its own run (its training_options.json), or start this run in another --output_dir."
        )
    check_resumable(run, state, folder)
    run.accelerator.load_state(str(folder))
    if run.ema is not None:
        run.ema.load(folder / EMA_FOLDER, state.ema_updates)
    logger.info("Resumed from %s: step %d", folder, state.global_step)
    return state.global_step


# ----------------------------------------------------------------------------------------------------------------
# Held-out retrieval and the end


def candidate_captions(run: ClipRun) -> tuple[list[str], dict[int, int]]:
    """One caption per meaning of the data (its first image's first caption) and the row of each meaning id."""
    captions, rows = [], {}
    columns = run.dataset.columns
    for texts, meaning in zip(columns["captions"], columns["meaning"].tolist()):
        if meaning not in rows:
            rows[meaning] = len(captions)
            captions.append(texts[0])
    return captions, rows


def check_images(run: ClipRun) -> tuple[torch.Tensor, list[list[str]], torch.Tensor, str]:
    """The images retrieval is measured on: the held-out ones, else the first training images (and their columns)."""
    dataset = run.dataset
    if dataset.holdout is not None:
        columns = dataset.holdout_columns
        return dataset.holdout, columns["captions"], columns["meaning"], "held-out"
    count = run.options.validation.num_validation_images
    rows = torch.arange(count) if dataset.indices is None else dataset.indices[:count]
    return (
        dataset.images[rows],
        [dataset.columns["captions"][i] for i in range(count)],
        dataset.columns["meaning"][:count],
        "training",
    )


@torch.no_grad()
def retrieval(run: ClipRun, clip) -> dict:
    """For the check images: the caption, among one per meaning of the data, that the CLIP finds most similar."""
    captions, rows = candidate_captions(run)
    images, _, meanings, which = check_images(run)
    was_training = clip.training
    clip.eval()
    chosen = top_captions(
        encode_text(clip, run.tokenizer, captions), encode_images(clip, run.preprocessing, images.to(clip.device))
    ).cpu()
    clip.train(was_training)
    truth = torch.tensor([rows.get(m, -1) for m in meanings.tolist()])
    accuracy = float((chosen == truth).float().mean())
    return {
        "images": which,
        "num_images": len(images),
        "num_candidates": len(captions),
        "retrieval_accuracy": accuracy,
        "chosen": [captions[i] for i in chosen.tolist()],
    }


def log_retrieval(run: ClipRun, step: int) -> dict | None:
    """Held-out retrieval accuracy of the weights that would be saved (main process); None without a holdout."""
    if run.dataset.holdout is None or not run.accelerator.is_main_process:
        return None
    result = retrieval(run, run.final_clip())
    run.accelerator.log({"validation/retrieval_accuracy": result["retrieval_accuracy"]}, step=step)
    return {key: value for key, value in result.items() if key != "chosen"}


def write_retrieval_picture(run: ClipRun, clip, path: Path) -> None:
    """Check images, each beside the caption the CLIP picks for it (green: one of its own captions; red: not)."""
    images, captions, _, _ = check_images(run)
    count = min(PICTURE_IMAGES, len(images))
    chosen = retrieval(run, clip)["chosen"][:count]
    right = [pick.lower() in {text.lower() for text in own} for own, pick in zip(captions, chosen)]
    caption_picture(images[:count], chosen, right).save(path)


def finish_clip(run: ClipRun, result: TrainingResult) -> None:
    """The last checkpoint, then (main process) the CLIPModel folder, its tokenizer and preprocessing, the picture,
    the summary."""
    accelerator, o = run.accelerator, run.options
    check_finite_weights(run, result.global_step)
    checksums = gather_object([weights_checksum(run.clip)])
    if len(set(checksums)) != 1:
        raise RuntimeError(f"The processes ended with different weights (sha256 per rank: {checksums}).")
    if o.checkpoints.checkpointing_steps and result.last_checkpoint != result.global_step:
        if result.global_step > result.first_step:
            save_clip_checkpoint(run, result.global_step)
    if accelerator.is_main_process:
        clip = run.final_clip().eval()
        clip.save_pretrained(run.output_dir, safe_serialization=True)
        run.tokenizer.save_pretrained(run.output_dir)
        run.preprocessing.save(run.output_dir)
        write_retrieval_picture(run, clip, run.output_dir / RETRIEVAL_FILE)
        write_clip_summary(run, result, checksums)
        logger.info("Wrote the CLIPModel, its tokenizer, %s and the summary to %s", RETRIEVAL_FILE, run.output_dir)
    accelerator.wait_for_everyone()


def write_clip_summary(run: ClipRun, result: TrainingResult, checksums: list) -> None:
    """`training_summary.json`: the record of a run as a DDPM run's, plus the CLIP's facts."""
    record = asdict(run_summary(run, result, checksums, run.clip))
    record["samples"] = None  # a CLIP draws no samples: its picture is RETRIEVAL_FILE
    _, _, _, which = check_images(run)
    record["clip"] = {
        "class": type(run.clip).__name__,
        "projection_dim": run.clip.config.projection_dim,
        "logit_scale": round(float(run.final_clip().logit_scale.detach().exp()), 3),
        "tokenizer_size": len(run.tokenizer),
        "negatives": "the global batch (every rank's embeddings gathered); images of the same captions masked out",
        "picture": f"{RETRIEVAL_FILE}: {which} images, each beside the caption it picks among one per meaning",
    }
    write_json(run.output_dir / SUMMARY_FILE, record)
