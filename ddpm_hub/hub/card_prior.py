"""The model card's facts of a text-to-image unCLIP folder (DALL-E 2, `DDPMHubUnCLIPPipeline`): the diffusion prior
beside the decoder, which the card names and the usage code calls with a prompt."""

from pathlib import Path

from ..public import python_literal
from ..run_folder import MODEL_INDEX, read_json

PRIOR_EXAMPLE_PROMPT = "3 left of 7"  # the digit pairs' captions; a card of other data shows it as a form of call


def prior_facts(folder: Path, count_parameters) -> dict | None:
    """The prior's network, chain and call defaults; None for a folder without a prior."""
    index = read_json(folder / MODEL_INDEX, "the pipeline's model index") or {}
    if not (index.get("prior") or [None])[0]:
        return None
    config = read_json(folder / "prior" / "config.json", "the prior's configuration") or {}
    scheduler = read_json(folder / "prior_scheduler" / "scheduler_config.json", "the prior's scheduler") or {}
    return {
        "parameters": f"{count_parameters(folder, 'prior'):,}",
        "embed_dim": config.get("clip_embed_dim") or config.get("embedding_dim"),
        "layers": config.get("num_layers"),
        "width": (config.get("num_attention_heads") or 0) * (config.get("attention_head_dim") or 0),
        "text_positions": config.get("num_embeddings"),
        "num_train_timesteps": scheduler.get("num_train_timesteps"),
        "prediction_type": scheduler.get("prediction_type"),
        "guidance_scale": index.get("prior_guidance_scale"),
        "num_inference_steps": index.get("prior_num_inference_steps"),
        "num_candidates": index.get("prior_num_candidates") or 2,
        "decoder_guidance_scale": index.get("decoder_guidance_scale"),
    }


def prior_usage_call(prior: dict) -> str:
    """The arguments of the text-to-image call the card shows (`DDPMHubUnCLIPPipeline`'s)."""
    arguments = [python_literal(PRIOR_EXAMPLE_PROMPT), "num_images_per_prompt=4"]
    if prior["guidance_scale"] is not None:
        arguments.append(f"prior_guidance_scale={prior['guidance_scale']}")
    if prior["decoder_guidance_scale"] is not None:
        arguments.append(f"decoder_guidance_scale={prior['decoder_guidance_scale']}")
    return ", ".join([*arguments, "generator=torch.manual_seed(0)"])
