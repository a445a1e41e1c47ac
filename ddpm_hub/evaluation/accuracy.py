"""Whether a conditional model draws what it is asked for, read by the repo's own digit classifier
(`ddpm_hub.evaluation.digit_classifier`, trained here, never downloaded): the tables the model card shows.

    ddpm-hub eval runs/ddpm-digits-16-cond --class_accuracy --guidance_scales 0,1,2,4 --num_per_class 50
    ddpm-hub eval runs/ddpm-digit-pairs-text --text_accuracy --guidance_scales 0,1,3,5 --num_per_prompt 10

- `class_accuracy`: for each guidance scale w, the share of a class-conditional digits model's samples that the
  classifier reads as the requested digit, overall and per class;
- `text_accuracy`: for each w, the share of a digit-pairs text-to-image model's samples whose left and right halves
  the classifier both reads as the prompt asks, for 20 pairs of the data and the 10 pairs never in it
  (`ddpm_hub.data.digit_pairs`), in both sentence forms ("{a} left of {b}", "{b} right of {a}"); sample j of a prompt
  writes its digits as numerals for even j and as words for odd j.

Every scale samples the same noise for the same image (`ddpm_hub.pipelines.sampling`: image i from seed + i), so the
rows differ by w only. `write_report` writes `class_accuracy.md` / `text_accuracy.md` (the tables the model card
includes) and their `.json` beside them.
"""

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ..data.digit_pairs import prompt, unseen_pairs
from ..errors import writing
from ..pipelines.conditioning import ImageConditions
from ..pipelines.sampling import sample_images
from ..run_folder import check_finite
from .digit_classifier import DigitClassifier, class_balance, classify, load_digit_classifier

SEEN_PAIRS = [(a, (a + k) % 10) for a in range(10) for k in (1, 3)]  # 20 pairs of the data, every digit on both sides
FORMS = ("left", "right")  # "{a} left of {b}", "{b} right of {a}"


# ----------------------------------------------------------------------------------------------------------------
# Class-conditional models


def class_accuracy(
    pipeline,
    guidance_scales: Sequence[float],
    num_per_class: int = 50,
    steps: int = 100,
    seed: int = 0,
    batch_size: int = 64,
    classifier: DigitClassifier | None = None,
) -> list[dict]:
    """
    One row per guidance scale: `accuracy` (the share of all samples read as their class), `per_class` (the share
    per class), `predicted_balance` (the classes read, as shares) and `images_per_second`. `num_per_class` samples
    of each class, image i of class i // num_per_class, `steps` respaced steps of the pipeline's scheduler.
    """
    classifier = classifier if classifier is not None else load_digit_classifier()[0]
    classes = list(range(pipeline.conditioning.classes.num_classes))
    labels = [c for c in classes for _ in range(num_per_class)]
    conditions = ImageConditions(len(labels), {"class_labels": labels})
    wanted = torch.tensor(labels)
    rows = []
    for scale in guidance_scales:
        started = time.perf_counter()
        call_kwargs = {"guidance_scale": scale, "num_inference_steps": steps}
        images = sample_images(
            pipeline, range(len(labels)), seed, batch_size, inputs=conditions.of, call_kwargs=call_kwargs
        )
        seconds = time.perf_counter() - started
        predicted, _ = classify(classifier, images)
        correct = predicted == wanted
        rows.append(
            {
                "guidance_scale": scale,
                "accuracy": float(correct.float().mean()),
                "per_class": [float(correct[wanted == c].float().mean()) for c in classes],
                "predicted_balance": class_balance(predicted)["shares"],
                "images_per_second": len(labels) / seconds,
            }
        )
    return rows


def class_accuracy_markdown(rows: list[dict], settings: dict) -> str:
    """The table of `class_accuracy.md`: a row per w, a column per class, and what produced it."""
    classes = len(rows[0]["per_class"])
    lines = [
        "| guidance w | accuracy | " + " | ".join(str(c) for c in range(classes)) + " |",
        "| ---: | ---: | " + " | ".join("---:" for _ in range(classes)) + " |",
    ]
    for row in rows:
        per_class = " | ".join(f"{share:.0%}" for share in row["per_class"])
        lines.append(f"| {row['guidance_scale']:g} | **{row['accuracy']:.1%}** | {per_class} |")
    lines += [
        "",
        f"Share of {settings['num_per_class']} samples per class ({settings['steps']} respaced DDPM steps) that the "
        f"repo's own digit classifier (held-out accuracy {settings['classifier_accuracy']:.1%} on real digits) reads "
        f"as the requested digit; w = 0 is the null label (unconditional), w = 1 the conditional model. Device: "
        f"{settings['device']}. Produced by `{settings['command']}`.",
    ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# Text-to-image digit pairs


def text_requests(num_per_prompt: int) -> list[dict]:
    """Every sample asked for, in order: its pair (`left`, `right`), `seen` or not, sentence `form`, and `prompt`."""
    rows = []
    for seen, pairs in ((True, SEEN_PAIRS), (False, unseen_pairs())):
        for left, right in pairs:
            for form in FORMS:
                for j in range(num_per_prompt):
                    text = prompt(left, right, form, words=j % 2 == 1)
                    rows.append({"left": left, "right": right, "seen": seen, "form": form, "prompt": text})
    return rows


def read_halves(classifier: DigitClassifier, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The digits the classifier reads in the left and right halves of uint8 samples `[N x 1 x H x 2H]`."""
    half = images.shape[-1] // 2
    left, _ = classify(classifier, images[..., :half].contiguous())
    right, _ = classify(classifier, images[..., half:].contiguous())
    return left, right


def text_accuracy(
    pipeline,
    guidance_scales: Sequence[float],
    num_per_prompt: int = 10,
    steps: int = 100,
    seed: int = 0,
    batch_size: int = 64,
    classifier: DigitClassifier | None = None,
) -> list[dict]:
    """
    One row per guidance scale: the share of samples read as asked for the `seen` and `unseen` pairs, each also by
    sentence form (`seen_left`, `seen_right`, ...), the share of right `left_half` and `right_half` digits alone, and
    `images_per_second`. `num_per_prompt` samples per pair and form (`text_requests`), `steps` steps of the
    pipeline's scheduler (`ddpm_hub.pipelines.sampling.with_sampler` picks another).
    """
    classifier = classifier if classifier is not None else load_digit_classifier()[0]
    asked = text_requests(num_per_prompt)
    conditions = ImageConditions(len(asked), {"prompt": [row["prompt"] for row in asked]})
    wanted_left = torch.tensor([row["left"] for row in asked])
    wanted_right = torch.tensor([row["right"] for row in asked])
    rows = []
    for scale in guidance_scales:
        started = time.perf_counter()
        call_kwargs = {"guidance_scale": scale, "num_inference_steps": steps}
        images = sample_images(
            pipeline, range(len(asked)), seed, batch_size, inputs=conditions.of, call_kwargs=call_kwargs
        )
        seconds = time.perf_counter() - started
        left, right = read_halves(classifier, images)
        correct = (left == wanted_left) & (right == wanted_right)
        row = {"guidance_scale": scale, "images_per_second": len(asked) / seconds}
        for name, seen in (("seen", True), ("unseen", False)):
            row[name] = _share(correct, asked, seen=seen)
            for form in FORMS:
                row[f"{name}_{form}"] = _share(correct, asked, seen=seen, form=form)
        row["left_half"] = float((left == wanted_left).float().mean())
        row["right_half"] = float((right == wanted_right).float().mean())
        rows.append(row)
    return rows


def _share(correct: torch.Tensor, asked: list[dict], **where) -> float:
    """The share of `correct` among the requests whose fields equal `where`."""
    chosen = [i for i, row in enumerate(asked) if all(row[key] == value for key, value in where.items())]
    return float(correct[chosen].float().mean())


def text_accuracy_markdown(rows: list[dict], settings: dict) -> str:
    """The table of `text_accuracy.md`: a row per w, seen and unseen pairs by sentence form, and what produced it."""
    lines = [
        "| guidance w | seen pairs | seen, 'a left of b' | seen, 'b right of a' | unseen pairs "
        "| unseen, 'a left of b' | unseen, 'b right of a' |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        cells = [row[key] for key in ("seen", "seen_left", "seen_right", "unseen", "unseen_left", "unseen_right")]
        bold = {0, 3}
        text = " | ".join(f"**{value:.1%}**" if i in bold else f"{value:.1%}" for i, value in enumerate(cells))
        lines.append(f"| {row['guidance_scale']:g} | {text} |")
    lines += [
        "",
        f"Share of samples whose two halves the repo's own digit classifier (held-out accuracy "
        f"{settings['classifier_accuracy']:.1%} on real digits) both reads as the prompt asks: {len(SEEN_PAIRS)} "
        f"pairs of the data and the {len(unseen_pairs())} pairs (d, d + 5 mod 10) it never had, "
        f"{settings['num_per_prompt']} samples per pair and sentence form (numerals and words alternating), "
        f"{settings['sampler']} with {settings['steps']} steps. Chance is 1%. w = 0 is the empty prompt "
        f"(unconditional), w = 1 the conditional model. Device: {settings['device']}. Produced by "
        f"`{settings['command']}`.",
    ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# Files


def write_report(
    markdown_file: str, markdown: str, rows: list[dict], settings: dict, output_dir: str | os.PathLike
) -> dict:
    """
    `markdown` as `output_dir / markdown_file` and `{"settings", "rows"}` as the `.json` beside it (the same name);
    returns their paths. A row with NaN or inf (a broken model) is refused before anything is written.
    """
    for row in rows:
        check_finite(row, f"the {Path(markdown_file).stem} row of w = {row.get('guidance_scale')}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    table, data = output_dir / markdown_file, output_dir / Path(markdown_file).with_suffix(".json").name
    with writing(table, f"the {Path(markdown_file).stem} table"):
        table.write_text(markdown)
    with writing(data, f"the {Path(markdown_file).stem} results", kept=f"{table} is written."):
        data.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n")
    return {"markdown": str(table), "json": str(data)}
