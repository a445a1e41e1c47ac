"""`ddpm-hub unclip`: the text-to-image unCLIP pipeline of a trained prior and a trained decoder, saved as one folder
that `DDPMHubUnCLIPPipeline` and `DDPMHubUnCLIPImageVariationPipeline` both load (issue 33, item 5).

ddpm-hub unclip --prior runs/ddpm-unclip-digit-pairs-prior --decoder runs/ddpm-unclip-digit-pairs-decoder \\
    --output_dir runs/ddpm-unclip-digit-pairs
"""

import argparse
import json
from pathlib import Path

from ..errors import UsageError
from ..options import guidance_scale, int_at_least
from ..pipelines.library import DDPMHubUnCLIPPipeline

HELP = "unCLIP: a trained prior and decoder as one text-to-image pipeline folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prior", required=True, help="a prior run's folder (prior/, prior_scheduler/, text_encoder/)"
    )
    parser.add_argument("--decoder", required=True, help="a decoder: a trained folder or Hub repo")
    parser.add_argument("--output_dir", required=True, help="the pipeline folder to write")
    defaults = "default: the prior run's measured value"
    parser.add_argument(
        "--prior_guidance_scale", type=guidance_scale, default=None, help=f"w of the prior ({defaults})"
    )
    parser.add_argument(
        "--prior_num_inference_steps", type=int_at_least(1), default=None, help=f"the prior's steps ({defaults})"
    )
    parser.add_argument(
        "--decoder_guidance_scale", type=guidance_scale, default=None, help="w of the decoder (default: its run's)"
    )
    parser.add_argument(
        "--decoder_num_inference_steps", type=int_at_least(1), default=None, help="the decoder's steps (default: 1000)"
    )
    parser.add_argument("--prior_num_candidates", type=int_at_least(1), default=None, help="default: 2, as DALL-E 2")


def run(args: argparse.Namespace) -> int:
    output = Path(args.output_dir)
    if output.exists() and any(output.iterdir()) and not (output / "model_index.json").is_file():
        raise UsageError(f"--output_dir {output} holds other files; give an empty folder or an earlier unCLIP folder.")
    names = ("prior_guidance_scale", "prior_num_inference_steps", "decoder_guidance_scale", "prior_num_candidates")
    settings = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.decoder_num_inference_steps is not None:
        settings["default_num_inference_steps"] = args.decoder_num_inference_steps
    pipeline = DDPMHubUnCLIPPipeline.from_stages(prior=args.prior, decoder=args.decoder, **settings)
    pipeline.save_pretrained(output)
    defaults = {key: pipeline.config.get(key) for key in (*names, "default_num_inference_steps")}
    print(json.dumps({"output_dir": str(output), **defaults}))
    return 0
