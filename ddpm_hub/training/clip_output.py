"""A CLIP run's checkpoints (saved atomically, resumed exactly) and its end (`ddpm_hub.training.clip`): the weights
(the EMA when on) as a `CLIPModel` folder with its tokenizer and `image_preprocessing.json`, `clip_retrieval.png`
(images with the caption the CLIP picks for them) and `training_summary.json` with the held-out retrieval accuracy."""

from dataclasses import asdict
from pathlib import Path

import torch
from accelerate.logging import get_logger
from accelerate.utils import gather_object

from ..evaluation.clip_accuracy import caption_picture, top_captions
from ..loading.clip import encode_images, encode_text
from ..loading.configs import weights_checksum
from ..run_folder import SUMMARY_FILE, write_json
from .clip import ClipRun
from .component_checkpoints import check_component_weights, resume_component, save_component_checkpoint
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
    check_component_weights(run, run.clip, step)


def save_clip_checkpoint(run: ClipRun, step: int) -> Path:
    """Accelerate's state + the EMA + `training_state.json`, written under a temporary name and renamed complete."""
    return save_component_checkpoint(run, run.clip, clip_record(run), step, EMA_FOLDER)


def resume_clip(run: ClipRun) -> int:
    """Load the checkpoint --resume_from_checkpoint names, if any, after checking it; returns its step (0: none)."""
    return resume_component(run, clip_record(run), "clip", "CLIP", EMA_FOLDER)


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
