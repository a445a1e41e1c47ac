"""`ddpm-hub eval MODEL --clip_accuracy`: whether a CLIP trained on builtin:digit-pairs picks the right caption among
the 100 ordered pairs of digits, for held-out canvases of seen pairs and for the ten pairs never in the data
(`ddpm_hub.evaluation.clip_accuracy`); writes `clip_accuracy.md` + `.json` and `clip_accuracy.png` (two canvases of
each unseen pair and ten of seen pairs, each beside the caption picked), and prints the JSON.

    ddpm-hub eval runs/ddpm-unclip-digit-pairs-clip --clip_accuracy                    # 1000 seen, 100 per unseen pair
"""

import argparse
import json
import shlex
from pathlib import Path

import torch

from ..errors import UsageError, writing
from ..evaluation.clip_accuracy import EVAL_SEED, clip_accuracy, clip_accuracy_markdown
from ..loading.clip import load_clip
from ..run_folder import check_writable_folder
from .eval_tasks import device_name

CLIP_ACCURACY_FILE = "clip_accuracy.md"
CLIP_ACCURACY_PICTURE = "clip_accuracy.png"  # canvases of the unseen pairs, then seen ones, with the caption picked
OTHER_TASKS = ("bpd", "fid", "sweep", "class_accuracy", "text_accuracy", "sr_quality")


def run_clip_accuracy(args: argparse.Namespace) -> int:
    """--clip_accuracy alone: a CLIP is no pipeline, so the other measurements do not apply to it."""
    others = [f"--{task}" for task in OTHER_TASKS if getattr(args, task, False)]
    if others:
        raise UsageError(
            f"--clip_accuracy measures a CLIP, which {', '.join(others)} does not apply to: run it alone."
        )
    if args.variant is not None:
        raise UsageError("--variant: a CLIP folder saves one set of weights (model.safetensors); drop it.")
    output_dir = Path(args.output_dir) if args.output_dir else _default_output_dir(args.model)
    check_writable_folder(output_dir, "--output_dir")
    dtype = None if args.torch_dtype is None else getattr(torch, args.torch_dtype)
    model, tokenizer, preprocessing = load_clip(args.model, args.revision, dtype)
    model.to(args.device)
    seed = EVAL_SEED + args.seed  # never the data's seed (0)
    output_dir.mkdir(parents=True, exist_ok=True)
    picture = output_dir / CLIP_ACCURACY_PICTURE
    per_pair = max(1, args.num_images // 10)
    result = clip_accuracy(model, tokenizer, preprocessing, args.num_images, per_pair, seed, picture)
    command = (
        f"ddpm-hub eval {shlex.quote(args.model)} --clip_accuracy --num_images {args.num_images} --seed {args.seed}"
    )
    result = {"model": args.model, **result, "command": command, "device": device_name(args.device)}
    with writing(output_dir / CLIP_ACCURACY_FILE, "the CLIP accuracy table"):
        (output_dir / CLIP_ACCURACY_FILE).write_text(
            clip_accuracy_markdown(result, args.model, command, result["device"])
        )
        (output_dir / CLIP_ACCURACY_FILE).with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


def _default_output_dir(model: str) -> Path:
    """The CLIP's own folder when it is a local trained one, else ./eval."""
    return Path(model) if Path(model, "model.safetensors").is_file() else Path("eval")
