"""The options of a diffusion prior run (`--pipeline` a prior configuration; `ddpm_hub.training.prior`)."""

from dataclasses import dataclass

from ..options import option


@dataclass(frozen=True)
class PriorOptions:
    """What a prior (unCLIP's second stage) is trained from, and how its text is dropped for guidance."""

    clip: str | None = option(
        None,
        "a prior configuration (--pipeline with prior/config.json, a PriorTransformer): the frozen CLIP whose text "
        "embeddings and token states condition the prior and whose image embeddings it learns, a CLIP folder or Hub "
        "name (e.g. runs/ddpm-unclip-digit-pairs-clip, openai/clip-vit-base-patch32); its text side is saved with the "
        "prior",
        "prior",
    )
    text_dropout_prob: float = option(
        0.1,
        "a prior: the share of captions replaced by the empty caption (the null text of classifier-free guidance), "
        "drawn per micro-batch from the seeded stream",
        "prior",
        at_least=0,
        below=1,
    )
