"""The model card's facts of a decoder (DALL-E 2): a DDPM conditioned on a CLIP image embedding, with the frozen image
encoder it was trained on, which the card names and the usage code calls (`DDPMHubUnCLIPImageVariationPipeline`)."""

from pathlib import Path

from ..public import code_span
from ..run_folder import MODEL_INDEX, read_json

DECODER_TAGS = ["unclip", "image-variation", "classifier-free-guidance"]
DECODER_PIPELINE_TAG = "image-to-image"  # variations of an image: the Hub's task for what it is used for


def decoder_facts(folder: Path, conditioning, options: dict, count_parameters) -> dict | None:
    """A decoder's image encoder, its embedding width and dropout; None for a model of another kind."""
    kind = conditioning.get("image_embeds")
    if kind is None:
        return None
    index = read_json(folder / MODEL_INDEX, "the pipeline's model index") or {}
    encoder = (index.get("image_encoder") or [None, None])[1]
    source = options.get("image_encoder")
    return {
        "encoder": code_span(encoder, in_table=True) if encoder else None,
        "encoder_parameters": f"{count_parameters(folder, 'image_encoder'):,}" if encoder else None,
        "source": code_span(Path(source).name if Path(source).is_dir() else source, in_table=True) if source else None,
        "feature_extractor": (index.get("feature_extractor") or [None])[0] is not None,
        "embed_dim": kind.embed_dim,
        "dropout_prob": options.get("image_embed_dropout_prob"),
    }
