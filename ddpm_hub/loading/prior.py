"""A trained diffusion prior (unCLIP's second stage, `ddpm_hub.training.prior`) as a folder, and the CLIP text side it
reads.

A prior run's folder holds what `DDPMHubUnCLIPPipeline.from_stages(prior=..., decoder=...)` takes from it:

    prior/                 the PriorTransformer (its clip_mean and clip_std: the data's, computed at the start)
    prior_scheduler/       its DDPMHubScheduler (prediction_type "sample")
    text_encoder/          the CLIP's text tower and projection, a CLIPTextModelWithProjection
    tokenizer/             the CLIP's tokenizer
    training_options.json  the run's options: the guidance scale and steps of its measurement are the defaults

`clip_text_encoder` takes the text side out of a whole `CLIPModel` (a CLIP trained here, or a Hub CLIP).
"""

import os
from pathlib import Path

import torch

from ..errors import InputNotFoundError, UsageError
from ..run_folder import read_json

PRIOR_PARTS = ("prior", "prior_scheduler", "text_encoder", "tokenizer")
OPTIONS_FILE = "training_options.json"


def clip_text_encoder(clip):
    """
    The text tower and projection of a transformers `CLIPModel` as a `CLIPTextModelWithProjection` (its
    `text_embeds` are the CLIP's text features; `text_model.*` and `text_projection.*` copied, frozen).
    """
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    config = CLIPTextConfig(**{**clip.config.text_config.to_dict(), "projection_dim": clip.config.projection_dim})
    encoder = CLIPTextModelWithProjection(config)
    state = {k: v for k, v in clip.state_dict().items() if k.startswith(("text_model.", "text_projection."))}
    encoder.load_state_dict(state, strict=True)
    return encoder.to(clip.dtype).eval().requires_grad_(False)


def save_prior_stage(folder: str | os.PathLike, prior, prior_scheduler, text_encoder, tokenizer) -> None:
    """The four parts of a prior run's folder (module docstring), each saved by its library."""
    folder = Path(folder)
    prior.save_pretrained(folder / "prior", safe_serialization=True)
    prior_scheduler.save_pretrained(folder / "prior_scheduler")
    text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    tokenizer.save_pretrained(folder / "tokenizer")


def load_prior_stage(folder: str | os.PathLike, dtype: torch.dtype | None = None) -> dict:
    """
    `{prior, prior_scheduler, text_encoder, tokenizer}` of a prior run's folder, and its call defaults
    (`prior_guidance_scale`, `prior_num_inference_steps`) from its options; refused with a message when a part is
    missing.
    """
    from diffusers import PriorTransformer
    from transformers import AutoTokenizer, CLIPTextModelWithProjection

    from ..shipped.scheduling_ddpm_hub import DDPMHubScheduler

    folder = Path(folder)
    missing = [part for part in PRIOR_PARTS if not (folder / part).is_dir()]
    if missing:
        raise InputNotFoundError(
            f"{folder} is not a trained prior's folder: it has no {', '.join(missing)}/ (a prior run writes them, "
            "such as runs/ddpm-unclip-digit-pairs-prior: training/configs/ddpm-unclip-digit-pairs-prior.yaml)."
        )
    dtype = dtype or torch.float32
    parts = {
        "prior": PriorTransformer.from_pretrained(folder / "prior", torch_dtype=dtype).eval(),
        "prior_scheduler": DDPMHubScheduler.from_pretrained(folder / "prior_scheduler"),
        "text_encoder": CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder", dtype=dtype).eval(),
        "tokenizer": AutoTokenizer.from_pretrained(folder / "tokenizer"),
    }
    options = read_json(folder / OPTIONS_FILE, "the prior run's options") or {}
    defaults = {
        "prior_guidance_scale": options.get("validation_guidance_scale"),
        "prior_num_inference_steps": options.get("ddpm_num_inference_steps"),
    }
    return {**parts, **{key: value for key, value in defaults.items() if value is not None}}


def decoder_defaults(folder: str | os.PathLike) -> dict:
    """A decoder run's call defaults from its options: `decoder_guidance_scale` and `default_num_inference_steps`
    (its grids' guidance scale and steps)."""
    options = read_json(Path(folder, OPTIONS_FILE), "the decoder run's options") or {}
    found = {
        "decoder_guidance_scale": options.get("validation_guidance_scale"),
        "default_num_inference_steps": options.get("ddpm_num_inference_steps"),
    }
    return {key: value for key, value in found.items() if value is not None}


def check_same_text_tower(decoder_encoder, decoder_tokenizer, stage: dict, names: str) -> None:
    """
    A decoder that reads the caption too (`text_image_proj`) shares the unCLIP pipeline's one text encoder with the
    prior: its text tower (`text_model.*`) and tokenizer must be the prior's CLIP's, else a UsageError naming `names`.
    """
    if decoder_encoder is None or decoder_tokenizer is None:
        raise UsageError(f"{names}: the decoder reads captions but its folder has no text_encoder and tokenizer.")

    def tower(encoder) -> dict:  # transformers 5 keeps CLIPTextModel's keys without the "text_model." prefix
        state = encoder.state_dict().items()
        return {k.removeprefix("text_model."): v for k, v in state if not k.startswith("text_projection.")}

    mine, theirs = tower(decoder_encoder), tower(stage["text_encoder"])
    same = bool(mine) and all(k in theirs and torch.equal(v.float(), theirs[k].float()) for k, v in mine.items())
    if not same or decoder_tokenizer.get_vocab() != stage["tokenizer"].get_vocab():
        raise UsageError(
            f"{names}: the decoder reads captions through another text encoder or tokenizer than the prior's CLIP; "
            "train both stages on one CLIP (the decoder with --text_encoder and --image_encoder naming it)."
        )
