"""Text encoders and tokenizers for text-to-image models, through transformers.

- `load_text_encoder(name_or_path)`: any transformers text encoder with its tokenizer, from a Hub name or a folder
  (`T5EncoderModel` for T5 checkpoints, Imagen's choice; `CLIPTextModel` for CLIP; else the `AutoModel` of the
  config), kept in float32; refused with a message when the config is not a text model.
- `word_tokenizer(captions)`: a word-level tokenizer built with the `tokenizers` library from a caption vocabulary
  (the offline configurations carry one: `pipelines/ddpm-digit-pairs-text/tokenizer/`), a real
  `PreTrainedTokenizerFast` that saves and loads as any transformers tokenizer.
- `start_heads_at_offsets(encoder)`: the starting point of a freshly built T5 encoder whose config names
  `initial_head_offsets`: each head of its relative position bias begins by attending to one neighbour.
"""

import os
import re
from collections.abc import Iterable

from ..errors import UsageError

PAD, UNKNOWN, END = "[PAD]", "[UNK]", "[EOS]"
# The encoder class of a config's model_type where AutoModel would give more than the encoder.
ENCODER_CLASSES = {
    "t5": "T5EncoderModel",
    "mt5": "MT5EncoderModel",
    "umt5": "UMT5EncoderModel",
    "clip": "CLIPTextModel",
    "clip_text_model": "CLIPTextModel",  # also a whole CLIP's text_config: AutoModel would load the CLIPModel
}


# A T5 config key of this project (transformers keeps unknown config keys and saves them back): one relative offset
# per head, which that head attends to when the encoder is built with fresh weights (`start_heads_at_offsets`).
HEAD_OFFSETS = "initial_head_offsets"
HEAD_OFFSET_BIAS = 4.0  # the bias on the offset's bucket: about 93% of a head's attention in a five-token caption


def words_of(captions: Iterable[str]) -> list[str]:
    """The distinct words of the captions, lower-cased, split as the word tokenizer splits them (sorted)."""
    return sorted({word for caption in captions for word in re.findall(r"\w+|[^\w\s]", caption.lower())})


def word_tokenizer(captions: Iterable[str], max_length: int = 16):
    """
    A word-level `PreTrainedTokenizerFast` over the captions' words: lower-cased, split on white space and
    punctuation, every sequence ending in [EOS] (so the empty prompt, the null condition, is one token), padded with
    [PAD], unknown words read as [UNK]; `model_max_length` = `max_length` tokens.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocabulary = {token: i for i, token in enumerate([PAD, UNKNOWN, END, *words_of(captions)])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocabulary, unk_token=UNKNOWN))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single=f"$A {END}", special_tokens=[(END, 2)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=PAD, unk_token=UNKNOWN, eos_token=END, model_max_length=max_length
    )


def load_text_encoder(name_or_path: str | os.PathLike, revision: str | None = None, variant: str | None = None):
    """
    `(text_encoder, tokenizer)` of a transformers text encoder by Hub name or folder (a folder holding both, or
    `text_encoder/` and `tokenizer/` subfolders as a pipeline repo has them) at `revision`, the encoder's weights of
    `variant` (e.g. fp16) in float32.
    """
    import transformers

    from .components import check_vocabulary

    encoder_path, tokenizer_path = _paths(name_or_path)
    version = {} if revision is None else {"revision": revision}
    config = text_encoder_config(name_or_path, **version)  # its tokenizer checked too
    class_name = ENCODER_CLASSES.get(config.model_type)
    klass = getattr(transformers, class_name) if class_name else transformers.AutoModel
    weights = {} if variant is None else {"variant": variant}
    encoder = klass.from_pretrained(encoder_path, dtype="float32", **version, **weights)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_path, **version)
    check_vocabulary(tokenizer, encoder, f"--text_encoder {name_or_path!r}")
    return encoder.eval(), tokenizer


def text_encoder_config(name_or_path: str | os.PathLike, **kwargs):
    """
    The config of a text encoder, checked to be one: a model of token ids (a vocabulary), not images or audio; a
    local folder must hold its tokenizer's vocabulary too (`check_tokenizer_folder`).
    """
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(_paths(name_or_path)[0], **kwargs)
    except (OSError, ValueError) as error:
        raise UsageError(f"--text_encoder {name_or_path!r} cannot be read as a transformers model: {error}") from None
    text = getattr(config, "text_config", None)
    if config.model_type == "clip" and text is not None:  # a whole CLIP model: its text tower
        config = text
    vocabulary = getattr(config, "vocab_size", None)
    hidden = hidden_size(config)
    if not vocabulary or not hidden or getattr(config, "is_encoder_decoder", False) and config.model_type != "t5":
        raise UsageError(
            f"--text_encoder {name_or_path!r} is a {config.model_type} model, not a text encoder: give a model that "
            "encodes token ids into hidden states (T5EncoderModel checkpoints such as google/t5-v1_1-base, CLIP "
            "text models such as openai/clip-vit-base-patch32, BERT-like encoders)."
        )
    check_tokenizer_folder(name_or_path)
    return config


def check_tokenizer_folder(name_or_path: str | os.PathLike) -> None:
    """
    A local text encoder's tokenizer (the folder itself, or its `tokenizer/` subfolder) has a vocabulary file: without
    one transformers builds an empty tokenizer (every word `<unk>`, a prompt-blind model) or takes the path for a Hub
    repo id. A Hub name is left to the Hub.
    """
    from .components import tokenizer_vocabularies

    encoder_path, tokenizer_path = _paths(name_or_path)
    if not os.path.isdir(encoder_path):
        return
    expected = tokenizer_vocabularies()
    if not os.path.isdir(tokenizer_path) or not any(os.path.isfile(os.path.join(tokenizer_path, f)) for f in expected):
        raise UsageError(
            f"--text_encoder {str(name_or_path)!r}: no tokenizer in {tokenizer_path}: expected one of "
            f"{', '.join(expected)} (save the tokenizer with the encoder: tokenizer.save_pretrained(folder), or a "
            "pipeline-like folder with text_encoder/ and tokenizer/)."
        )


def hidden_size(config) -> int | None:
    """The width of an encoder's hidden states (`d_model` for T5)."""
    return getattr(config, "hidden_size", None) or getattr(config, "d_model", None)


def _paths(name_or_path) -> tuple[str, str]:
    """(encoder, tokenizer) locations: a pipeline-like folder's subfolders, else the name itself for both."""
    name = str(name_or_path)
    if os.path.isdir(os.path.join(name, "text_encoder")):
        return os.path.join(name, "text_encoder"), os.path.join(name, "tokenizer")
    return name, name


def start_heads_at_offsets(encoder, bias: float = HEAD_OFFSET_BIAS):
    """
    Give a freshly built T5 encoder whose config names `initial_head_offsets` (one relative offset per head) a
    relative position bias of `bias` on each head's offset and 0 elsewhere; an encoder without the key is left as
    it is. With T5's own start (biases near 0) attention is nearly uniform, so each token receives the same mean of
    the caption and a digit's state does not say which side it is on: in "3 left of 7" and "7 left of 3" the 3
    reads the same, and a UNet attending to the tokens sees a set of words. A head that starts on a neighbour puts
    the relation word next to each digit into its state from the first step, so its role is readable by a linear map
    (a probe on a fresh encoder: 96% against 57%, `pipelines/ddpm-digit-pairs-text/README.md`); training then
    moves the biases like any weight.
    """
    import torch

    offsets = getattr(encoder.config, HEAD_OFFSETS, None)
    if not offsets:
        return encoder
    if encoder.config.model_type not in ("t5", "mt5", "umt5"):
        raise UsageError(
            f"{HEAD_OFFSETS} in a {encoder.config.model_type} text encoder's config: only a T5 encoder's relative "
            "position bias takes it."
        )
    attention = encoder.encoder.block[0].layer[0].SelfAttention
    if len(offsets) != attention.n_heads or not all(isinstance(o, int) and o != 0 for o in offsets):
        raise UsageError(
            f"{HEAD_OFFSETS} {offsets!r}: give one non-zero whole offset per head ({attention.n_heads} heads), e.g. "
            "[-2, -1, 1, 2]."
        )
    buckets = attention._relative_position_bucket(
        torch.tensor(offsets),
        bidirectional=True,
        num_buckets=attention.relative_attention_num_buckets,
        max_distance=attention.relative_attention_max_distance,
    )
    with torch.no_grad():
        weight = attention.relative_attention_bias.weight  # [buckets x heads]
        weight.zero_()
        weight[buckets, torch.arange(len(offsets))] = bias
    return encoder
