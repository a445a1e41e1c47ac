"""
Whether a CLIP reads images as their captions say: for each image, the caption with the highest cosine similarity
among candidates, right or wrong (`ddpm-hub eval RUN --clip_accuracy`; issue 33's first target: >= 95% of held-out
images of seen pairs and >= 70% of the ten pairs never trained on).

On builtin:digit-pairs (`ddpm_hub.data.digit_pairs`) the candidates are the 100 ordered pairs of digits, each by one
caption per sentence form: the 90 pairs the data has (doubles such as "3 left of 3" included) and the 10 it never has,
(d, (d + 5) % 10). The images, built as the data builds its canvases (a scikit-learn digit in each half, the
preprocessing of builtin:digits):

- seen: canvases of seen pairs drawn from another seed than the data's, none of them a canvas of the data (the same
  two digit images): new combinations of digit images the CLIP saw in other canvases;
- unseen: `per_pair` canvases of each unseen pair, digit images of the two labels drawn at random.

The headline is the canonical caption "{a} left of {b}" among 100; also reported: each of 4 sentence forms ("{a} left
of {b}" or "{b} right of {a}", both digits as numerals or both as words) among its 100, averaged, and the issue's 90
ordered pairs of two different digits (candidates and images both restricted to a != b).
"""

import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..data import DataOptions
from ..data import digit_pairs as pairs_data
from ..loading.clip import ImagePreprocessing, encode_images, encode_text
from ..pictures import make_grid, to_pil_images, upscale

EVAL_SEED = 1  # the held-out canvases' seed: builtin:digit-pairs draws its canvases from digit_pairs.SEED (0)
CANONICAL_FORM = ("left", False)  # "{a} left of {b}", numerals
FORM_NAMES = {
    ("left", False): "{a} left of {b}",
    ("left", True): "{a} left of {b} (words)",
    ("right", False): "{b} right of {a}",
    ("right", True): "{b} right of {a} (words)",
}
FORMS = list(FORM_NAMES)
ALL_PAIRS = [(left, right) for left in range(10) for right in range(10)]


@dataclass
class PairCanvases:
    """Canvases uint8 `[N x 1 x H x W]` and the ordered pair (left, right) of digits on each."""

    images: torch.Tensor
    pairs: list[tuple[int, int]]


def digit_images(height: int, width: int) -> tuple[torch.Tensor, np.ndarray]:
    """The digits of builtin:digits at `height x width` (uint8 `[1797 x 1 x H x W]`) and their labels."""
    decoded = DataOptions(dataset_name="builtin:digits", resolution=(height, width), decoded_cache=False).load(1)
    return decoded.images, decoded.labels.numpy()


def seen_canvases(count: int, size: tuple[int, int] = (16, 32), seed: int = EVAL_SEED) -> PairCanvases:
    """`count` canvases of seen pairs drawn as the data's are, from `seed`, none of them a canvas of the data."""
    digits, labels = digit_images(size[0], size[1] // 2)
    training = {tuple(pair) for pair in pairs_data.pair_indices(labels, pairs_data.NUM_CANVASES).tolist()}
    drawn = [tuple(pair) for pair in pairs_data.pair_indices(labels, 2 * count, seed).tolist()]
    kept = torch.tensor([pair for pair in drawn if pair not in training][:count])
    images = torch.cat([digits[kept[:, 0]], digits[kept[:, 1]]], dim=3).contiguous()
    return PairCanvases(images, [(int(labels[a]), int(labels[b])) for a, b in kept.tolist()])


def unseen_canvases(per_pair: int, size: tuple[int, int] = (16, 32), seed: int = EVAL_SEED) -> PairCanvases:
    """`per_pair` canvases of each of the ten pairs the data never has, random digit images of the two labels."""
    digits, labels = digit_images(size[0], size[1] // 2)
    rng = np.random.default_rng(seed)
    rows, found = [], []
    for left, right in pairs_data.unseen_pairs():
        lefts = rng.choice(np.flatnonzero(labels == left), per_pair)
        rights = rng.choice(np.flatnonzero(labels == right), per_pair)
        rows += list(zip(lefts.tolist(), rights.tolist()))
        found += [(left, right)] * per_pair
    index = torch.tensor(rows)
    return PairCanvases(torch.cat([digits[index[:, 0]], digits[index[:, 1]]], dim=3).contiguous(), found)


def pair_captions(form: str, words: bool, candidates=ALL_PAIRS) -> list[str]:
    return [pairs_data.prompt(left, right, form, words) for left, right in candidates]


def top_captions(text_embeds: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
    """int64 `[N]`: for each image, the row of `text_embeds` with the highest cosine similarity (unit-norm inputs)."""
    return (image_embeds @ text_embeds.t()).argmax(dim=1)


def accuracies(
    model, tokenizer, preprocessing: ImagePreprocessing, canvases: PairCanvases
) -> tuple[dict, torch.Tensor]:
    """
    The share of canvases whose top caption names their pair: canonical form, every form, the 90 with a != b; and
    the row of `ALL_PAIRS` picked for each canvas with the canonical form.
    """
    image_embeds = encode_images(model, preprocessing, canvases.images)
    truth = torch.tensor([ALL_PAIRS.index(pair) for pair in canvases.pairs])
    per_form = {}
    for form, words in FORMS:
        text_embeds = encode_text(model, tokenizer, pair_captions(form, words))
        per_form[(form, words)] = (top_captions(text_embeds, image_embeds) == truth).float()
    canonical = per_form[CANONICAL_FORM]
    picks = top_captions(encode_text(model, tokenizer, pair_captions(*CANONICAL_FORM)), image_embeds)
    distinct = [i for i, (a, b) in enumerate(ALL_PAIRS) if a != b]
    images = [i for i, (a, b) in enumerate(canvases.pairs) if a != b]
    text_embeds = encode_text(model, tokenizer, pair_captions(*CANONICAL_FORM, [ALL_PAIRS[i] for i in distinct]))
    chosen = top_captions(text_embeds, image_embeds[images])
    among_90 = (
        (torch.tensor(distinct)[chosen] == truth[images]).float().mean() if images else torch.tensor(float("nan"))
    )
    row = {
        "accuracy": round(float(canonical.mean()), 4),
        "accuracy_every_form": round(float(torch.stack(list(per_form.values())).mean()), 4),
        "accuracy_per_form": {FORM_NAMES[form]: round(float(hits.mean()), 4) for form, hits in per_form.items()},
        "accuracy_among_90": round(float(among_90), 4),
        "num_images": len(canvases.pairs),
    }
    return row, picks


def caption_picture(images: torch.Tensor, captions: list[str], right: list[bool], scale: int = 3) -> Image.Image:
    """Images uint8 `[N x C x H x W]`, each beside a caption in green (`right`) or red, two a row."""
    tiles = []
    for image, caption, correct in zip(to_pil_images(images), captions, right):
        image = upscale(image.convert("RGB"), scale)
        tile = Image.new("RGB", (image.width + 150, image.height), "white")
        tile.paste(image, (0, 0))
        colour = "darkgreen" if correct else "red"
        ImageDraw.Draw(tile).text((image.width + 6, image.height // 2 - 6), caption, fill=colour)
        tiles.append(tile)
    return make_grid(tiles, columns=2)


def clip_accuracy(
    model, tokenizer, preprocessing: ImagePreprocessing, num_seen: int = 1000, per_unseen_pair: int = 100,
    seed: int = EVAL_SEED, picture: str | os.PathLike | None = None,
) -> dict:  # fmt: skip
    """
    Seen and unseen accuracies of a digit-pairs CLIP (module docstring), with how they were measured; with
    `picture`, a PNG of two canvases of each unseen pair and ten of seen pairs beside the caption picked for each.
    """
    size = preprocessing.data_size or (16, 32)
    seen_images, unseen_images = seen_canvases(num_seen, size, seed), unseen_canvases(per_unseen_pair, size, seed)
    seen, seen_picks = accuracies(model, tokenizer, preprocessing, seen_images)
    unseen, unseen_picks = accuracies(model, tokenizer, preprocessing, unseen_images)
    if picture is not None:
        rows = [i * per_unseen_pair + j for i in range(10) for j in range(min(2, per_unseen_pair))]
        shown = [(unseen_images, unseen_picks, i) for i in rows]
        shown += [(seen_images, seen_picks, i) for i in range(min(10, num_seen))]
        picks = [ALL_PAIRS[int(chosen[i])] for _, chosen, i in shown]
        right = [pick == canvases.pairs[i] for pick, (canvases, _, i) in zip(picks, shown)]
        images = torch.stack([canvases.images[i] for canvases, _, i in shown])
        caption_picture(images, [pair_captions(*CANONICAL_FORM, [pick])[0] for pick in picks], right).save(picture)
    return {
        "seen": seen,
        "unseen": unseen,
        "candidates": "the 100 ordered pairs of digits (90 in the data, 10 never); headline: '{a} left of {b}'",
        "seed": seed,
    }


def clip_accuracy_markdown(result: dict, model_name: str, command: str, device: str) -> str:
    """The table `clip_accuracy.md` holds."""
    lines = [
        f"# CLIP accuracy: {model_name}",
        "",
        "The share of canvases whose most similar caption, among the 100 ordered pairs of digits, names their pair "
        "(`ddpm_hub.evaluation.clip_accuracy`).",
        "",
        "| images | count | '{a} left of {b}' | every caption form | among the 90 with a != b |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, label in (("seen", "held-out canvases of seen pairs"), ("unseen", "the 10 pairs never trained on")):
        row = result[name]
        lines.append(
            f"| {label} | {row['num_images']} | {row['accuracy']:.1%} | {row['accuracy_every_form']:.1%} | "
            f"{row['accuracy_among_90']:.1%} |"
        )
    lines += ["", f"Command: `{command}` (canvases drawn from seed {result['seed']}; {device})", ""]
    return "\n".join(lines)
