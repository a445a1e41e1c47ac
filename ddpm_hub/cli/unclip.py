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


def sample_unclip(args: argparse.Namespace) -> int:
    """
    `ddpm-hub sample` on an unCLIP folder: a grid of --num_images for --prompt (or --prompts_file's prompts in turn,
    a column each), each through the prior and the decoder (and with --upscale each super-resolution stage: a row per
    stage). --guidance_scale is the prior's w when given (not 1), --steps the decoder's; the folder's defaults
    otherwise. Image i uses seed + i, as every grid.
    """
    import numpy as np

    from ..evaluation.unclip_accuracy import PriorGuided
    from ..loading.settings import LoadSettings
    from ..pictures import strip, to_pil_images
    from ..pipelines.sampling import sample_images
    from .common import read_prompts, save

    given = {"--trajectory": args.trajectory, "--output_dir": args.output_dir, "--class_labels": args.class_labels,
             "--sampler": args.sampler}  # fmt: skip
    for flag in (flag for flag, value in given.items() if value):
        raise UsageError(
            f"{flag}: an unCLIP model samples grids of prompts (--prompt or --prompts_file), upsampled with --upscale."
        )
    prompts = read_prompts(args)
    if not prompts:
        raise UsageError(f"{args.model} is a text-to-image unCLIP model: give --prompt or --prompts_file.")
    settings = LoadSettings(args.revision, args.variant, args.torch_dtype)
    pipeline = DDPMHubUnCLIPPipeline.from_pretrained(args.model, **settings.from_pretrained())
    pipeline = pipeline.to(args.device)
    pipeline.set_progress_bar_config(disable=True)
    prior_w = None if args.guidance_scale == 1.0 else args.guidance_scale
    per_image = [prompts[i % len(prompts)] for i in range(args.num_images)]
    if args.upscale:  # DALL-E 2's cascade: the prior, the decoder, then each super-resolution stage; a row per stage
        from ..pipelines.condition_kinds import ImageConditions
        from .cascade import sample_cascade

        conditions = ImageConditions(args.num_images, {"prompt": per_image})
        call_kwargs = {} if prior_w is None else {"prior_guidance_scale": prior_w}
        return sample_cascade(pipeline, args, conditions, call_kwargs)
    images = sample_images(
        PriorGuided(pipeline), range(args.num_images), args.seed, args.batch_size,
        inputs=lambda batch: {"prompt": [per_image[i] for i in batch]},
        call_kwargs={"num_inference_steps": args.steps, "guidance_scale": prior_w},
    )  # fmt: skip
    tiles = to_pil_images(images)
    columns = len(prompts) if len(prompts) > 1 else int(np.ceil(np.sqrt(len(tiles))))
    grid = strip([tiles[i : i + columns] for i in range(0, len(tiles), columns)], args.scale)
    return save(grid, args, num_images=args.num_images, prompt=prompts, prior_guidance_scale=prior_w)
