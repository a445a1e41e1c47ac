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
        "layout": layout(read_json(folder / "unet" / "config.json", "the UNet's config") or {}, kind.embed_dim),
        "encoder": code_span(encoder, in_table=True) if encoder else None,
        "encoder_parameters": f"{count_parameters(folder, 'image_encoder'):,}" if encoder else None,
        "source": code_span(Path(source).name if Path(source).is_dir() else source, in_table=True) if source else None,
        "feature_extractor": (index.get("feature_extractor") or [None])[0] is not None,
        "embed_dim": kind.embed_dim,
        "dropout_prob": options.get("image_embed_dropout_prob"),
    }


def layout(unet: dict, width: int) -> str:
    """How the UNet reads the embedding, in the card's words (`encoder_hid_dim_type`, `addition_embed_type`)."""
    paths = []
    if unet.get("addition_embed_type") == "image":
        paths.append("into the timestep embedding")
    if unet.get("encoder_hid_dim_type") == "text_image_proj":
        return (
            f"as DALL-E 2's decoder keeps GLIDE's text pathway: the {width}-wide embedding is projected "
            f"{paths[0] + ' and ' if paths else ''}into context tokens that the cross-attention reads before the "
            "caption's token states (Kandinsky 2.1's `TextImageProjection`; variations use the empty caption)"
        )
    if unet.get("encoder_hid_dim_type") == "image_proj":
        paths.append("into context tokens of the cross-attention")
    return f"laid out as Kandinsky 2.2's: the {width}-wide embedding is projected {' and '.join(paths)}"
