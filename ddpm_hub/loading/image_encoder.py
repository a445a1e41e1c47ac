"""A decoder's frozen CLIP image encoder (`--image_encoder`): a transformers `CLIPVisionModelWithProjection` and its
normalisation as a `CLIPImageProcessor` (the `feature_extractor` that `image_embeds_ddpm_hub.encoder_pixels` reads).

Accepted, by name or folder: a `CLIPVisionModelWithProjection` (its config's `model_type` is `clip_vision_model`), or
a whole `CLIPModel` (`clip`: a CLIP trained here, such as `runs/ddpm-unclip-digit-pairs-clip`, or
`openai/clip-vit-base-patch32`), of which the vision tower and its projection are taken: a
`CLIPVisionModelWithProjection` of the vision config and the model's `projection_dim`, with `vision_model.*` and
`visual_projection.*` copied (transformers would load the projection at the vision config's default width, 512, and
refuse the size). The normalisation: the folder's `preprocessor_config.json` (a Hub CLIP's), else the mean and std of
`image_preprocessing.json` (a CLIP trained here, `ddpm_hub.loading.clip`), else none (pixels in [-1, 1]).
"""

from pathlib import Path

from ..errors import UsageError
from ..run_folder import read_json
from .settings import LoadSettings

ACCEPTED = (
    "a CLIPModel or a CLIPVisionModelWithProjection (a folder or a Hub name such as openai/clip-vit-base-patch32)"
)
PREPROCESSOR_CONFIG = "preprocessor_config.json"
TRAINED_PREPROCESSING = "image_preprocessing.json"  # the image side of a CLIP trained here (ddpm_hub.loading.clip)


def image_encoder_config(name: str, **download):
    """The transformers config of `name`, which must be a CLIP model or CLIP vision model; a UsageError otherwise."""
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(name, **download)
    except (OSError, ValueError) as error:
        raise UsageError(f"--image_encoder {name}: cannot read its config ({error}); give {ACCEPTED}.") from error
    if config.model_type not in ("clip", "clip_vision_model"):
        raise UsageError(f"--image_encoder {name} is a {config.model_type} model; give {ACCEPTED}.")
    return config


def load_image_encoder(name: str, settings: LoadSettings | None = None):
    """`(image_encoder, feature_extractor or None)` of `name` (see the module docstring), frozen and in eval mode."""
    from transformers import CLIPModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    settings = settings or LoadSettings()
    download = settings.download()
    extra = {"variant": settings.variant} if settings.variant else {}
    config = image_encoder_config(name, **download)
    if config.model_type == "clip_vision_model":
        encoder = CLIPVisionModelWithProjection.from_pretrained(name, **download, **extra)
    else:
        clip = CLIPModel.from_pretrained(name, **download, **extra)
        vision = CLIPVisionConfig(
            **{**clip.config.vision_config.to_dict(), "projection_dim": clip.config.projection_dim}
        )
        encoder = CLIPVisionModelWithProjection(vision)
        state = {k: v for k, v in clip.state_dict().items() if k.startswith(("vision_model.", "visual_projection."))}
        encoder.load_state_dict(state, strict=True)
    if settings.dtype is not None:
        encoder = encoder.to(settings.dtype)
    return encoder.eval().requires_grad_(False), load_feature_extractor(name, download)


def load_feature_extractor(name: str, download: dict):
    """
    The encoder's normalisation as a `CLIPImageProcessor`: its `preprocessor_config.json`, else the mean and std of
    a CLIP trained here (`image_preprocessing.json`, whose padding must be `encoder_pixels`'), else None.
    """
    from transformers import CLIPImageProcessor

    if Path(name).is_dir():
        if Path(name, PREPROCESSOR_CONFIG).is_file():
            return CLIPImageProcessor.from_pretrained(name)
        trained = read_json(Path(name, TRAINED_PREPROCESSING), "a CLIP's image preprocessing")
        if trained is None:
            return None
        side, data_size = int(trained["image_size"]), trained.get("data_size")
        if (data_size is not None and max(data_size) != side) or trained.get("pad_value", 0.0) != 0.0:
            raise UsageError(  # encoder_pixels pads with black to the canvas's longer side, then resizes
                f"--image_encoder {name}: its {TRAINED_PREPROCESSING} pads {data_size} canvases to {side}x{side} "
                f"with {trained.get('pad_value', 0.0)}, and the decoder pads them with black (0) to the longer side, "
                "then resizes: the embeddings would differ from the CLIP's own. Train the CLIP with image_size equal "
                "to the canvas's longer side and black padding."
            )
        return CLIPImageProcessor(
            image_mean=list(trained["image_mean"]),
            image_std=list(trained["image_std"]),
            size={"shortest_edge": side},
            crop_size={"height": side, "width": side},
        )
    try:
        return CLIPImageProcessor.from_pretrained(name, **download)
    except OSError:  # a Hub model without one: the pixels stay in [-1, 1]
        return None
