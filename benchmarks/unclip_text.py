"""
Text to image through unCLIP's prior and decoder, measured against issue 33's criteria
(`ddpm_hub.evaluation.unclip_accuracy`): the share of samples whose two halves the digit classifier reads as the
prompt asks (>= 95% of seen, >= 75% of unseen pairs), for each prior guidance scale; and the spread of one prompt's
samples in the classifier's features against real canvases of its pair, beside the cross-attention text model's.

    python benchmarks/unclip_text.py runs/ddpm-unclip-digit-pairs [--text_model runs/ddpm-digit-pairs-text]
    python benchmarks/unclip_text.py runs/ddpm-unclip-digit-pairs-prior --prior_only  # before the decoder exists

Writes `unclip_text_accuracy.md` and `.json` into the unCLIP folder and prints the JSON.
"""

import argparse
import importlib.util
import json
import platform
import sys
from pathlib import Path

import torch

if importlib.util.find_spec("ddpm_hub") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ddpm_hub.evaluation.unclip_accuracy import (
    PriorGuided,
    prior_caption_accuracy,
    prompt_spread,
    unclip_text_accuracy,
)
from ddpm_hub.loading.prior import load_prior_stage
from ddpm_hub.pipelines.library import DDPMHubPipeline, DDPMHubUnCLIPPipeline
from ddpm_hub.pipelines.source import Source


def floats(text: str) -> list[float]:
    return [float(value) for value in text.split(",")]


def markdown(report: dict, command: str) -> str:
    lines = ["| prior w | the prior alone, read by the CLIP: seen pairs | unseen pairs | cosine to the text |",
             "| ---: | ---: | ---: | ---: |"]  # fmt: skip
    for row in report["prior"]:
        lines.append(
            f"| {row['guidance_scale']:g} | {row['seen']:.1%} | {row['unseen']:.1%} | {row['cosine_to_text']:.3f} |"
        )
    lines += ["", "| prior w | decoder w | seen pairs | unseen pairs | left half | right half | images/s |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for row in report["accuracy"]:
        lines.append(
            f"| {row['guidance_scale']:g} | {row['decoder_guidance_scale']} | **{row['seen']:.1%}** | "
            f"**{row['unseen']:.1%}** | {row['left_half']:.1%} | {row['right_half']:.1%} | "
            f"{row['images_per_second']:.1f} |"
        )
    lines += ["", "| model | w | accuracy ('a left of b', seen pairs) | spread | real spread | ratio |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for row in report["spread"]:
        lines.append(
            f"| {row['model']} | {row['guidance_scale']:g} | {row['accuracy']:.1%} | {row['spread']:.2f} | "
            f"{row['real_spread']:.2f} | {row['spread_ratio']:.2f} |"
        )
    settings = report["settings"]
    lines += ["", f"Settings: {json.dumps(settings)}. Command: `{command}`"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="an unCLIP folder (ddpm-hub unclip)")
    parser.add_argument(
        "--prior_only",
        action="store_true",
        help="MODEL is a prior run's folder: measure the prior alone (its first table)",
    )
    parser.add_argument("--text_model", default=None, help="a cross-attention text model to compare the spread with")
    parser.add_argument("--prior_guidance_scales", default="1,2,4", help="the prior's w (default: 1,2,4)")
    parser.add_argument("--decoder_guidance_scale", type=float, default=None, help="default: the folder's")
    parser.add_argument("--text_guidance_scale", type=float, default=3.0, help="the text model's w (default: 3)")
    parser.add_argument("--num_per_prompt", type=int, default=4, help="per pair and sentence form (default: 4)")
    parser.add_argument("--per_prompt", type=int, default=16, help="samples of a prompt for the spread (default: 16)")
    parser.add_argument("--per_pair_prior", type=int, default=16, help="the prior alone: per pair (default: 16)")
    parser.add_argument("--steps", type=int, default=50, help="the decoder's (and text model's) steps (default: 50)")
    parser.add_argument("--prior_steps", type=int, default=None, help="the prior's steps (default: the folder's)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    if args.prior_only:  # the decoder configuration's fresh weights stand in: only the prior is called
        decoder = Source.of("ddpm-unclip-digit-pairs-decoder").build()
        stage = load_prior_stage(args.model)
        pipeline = DDPMHubUnCLIPPipeline(unet=decoder.unet, scheduler=decoder.scheduler, **stage)
    else:
        pipeline = DDPMHubUnCLIPPipeline.from_pretrained(args.model)
    pipeline.set_progress_bar_config(disable=True)
    scales = floats(args.prior_guidance_scales)
    prior = prior_caption_accuracy(pipeline, scales, args.per_pair_prior, args.prior_steps)
    if args.prior_only:
        report = {
            "model": args.model,
            "prior_steps": pipeline.setting("prior_num_inference_steps", None),
            "prior": prior,
        }
        print(json.dumps(report))
        return report
    accuracy = unclip_text_accuracy(
        pipeline, scales, args.decoder_guidance_scale, args.num_per_prompt, args.steps, args.prior_steps
    )
    call = PriorGuided(pipeline, args.decoder_guidance_scale, args.prior_steps)
    spreads = []
    for scale in scales:
        kwargs = {"guidance_scale": scale, "num_inference_steps": args.steps}
        spreads.append(
            {"model": args.model, "guidance_scale": scale, **prompt_spread(call, kwargs, per_prompt=args.per_prompt)}
        )
    if args.text_model:
        text = DDPMHubPipeline.from_pretrained(args.text_model)
        text.set_progress_bar_config(disable=True)
        kwargs = {"guidance_scale": args.text_guidance_scale, "num_inference_steps": args.steps}
        row = prompt_spread(text, kwargs, per_prompt=args.per_prompt)
        spreads.append({"model": args.text_model, "guidance_scale": args.text_guidance_scale, **row})
    settings = {
        "num_per_prompt": args.num_per_prompt,
        "per_prompt": args.per_prompt,
        "steps": args.steps,
        "prior_steps": args.prior_steps or pipeline.setting("prior_num_inference_steps", None),
        "prior_num_candidates": pipeline.setting("prior_num_candidates", 2),
        "device": f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}",
    }
    report = {"model": args.model, "settings": settings, "prior": prior, "accuracy": accuracy, "spread": spreads}
    Path(args.model, "unclip_text_accuracy.json").write_text(json.dumps(report, indent=2) + "\n")
    command = "python benchmarks/unclip_text.py " + " ".join(argv if argv is not None else sys.argv[1:])
    Path(args.model, "unclip_text_accuracy.md").write_text(markdown(report, command))
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
