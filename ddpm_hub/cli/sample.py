"""`ddpm-hub sample`: a grid (a conditional model: a column per class when no labels are given), the reverse
trajectory, a cascade with --upscale, or with --output_dir one file per image (resumable, split across the processes
of `accelerate launch`). Image i is `ddpm_hub.pipelines.sampling`'s image i in all of them.

    ddpm-hub sample runs/ddpm-digits-16-cond --class_labels 3,7 --guidance_scale 2 --num_images 8
    ddpm-hub sample runs/ddpm-digits-16 --trajectory --num_images 2 --steps 250
    ddpm-hub sample runs/ddpm-digits-16 --num_images 10000 --output_dir samples --format npz --sampler ddim --steps 50
    ddpm-hub sample runs/ddpm-digits-16 --upscale runs/ddpm-sr-16-to-64 --num_images 8
"""

import argparse
import json
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..evaluation.export import export_samples
from ..options import int_at_least
from ..pictures import reverse_trajectory, strip, to_pil_images
from ..pipelines.conditioning import ImageConditions
from ..pipelines.library import is_unclip
from ..pipelines.sampling import SAMPLERS, sample_images, with_sampler
from ..run_folder import check_writable_folder
from ..shipped.samplers_ddpm_hub import ddpm_chain
from .cascade import sample_cascade
from .common import (
    add_model_arguments,
    check_output,
    generators,
    image_conditions,
    load_model,
    model_source,
    save,
)
from .unclip import sample_unclip

HELP = "sample a grid, with class labels and guidance, or the reverse trajectory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, steps=None, num_images=16)
    parser.add_argument(
        "--sampler",
        choices=list(SAMPLERS),
        default=None,
        help="the reverse process, its timesteps and options from the model's scheduler config (default: the "
        "model's own scheduler: DDPM ancestral for a trained model, DDIM or LCM for a distilled student)",
    )
    parser.add_argument(
        "--output_dir",
        default=None,
        help="write one PNG per image there instead of a grid: resumable, split across the processes of "
        "`accelerate launch` (ddpm_hub.evaluation.export)",
    )
    parser.add_argument("--batch_size", type=int_at_least(1), default=64, help="images per UNet call (default: 64)")
    parser.add_argument(
        "--format",
        default="png",
        choices=("png", "npz"),
        help="with --output_dir: png files, or png files and one .npz of them all (default: png)",
    )
    parser.add_argument(
        "--trajectory",
        action="store_true",
        help="the reverse process instead of a grid: per image a row of x_t and a row of the predicted x_0 at "
        "--frames steps (a model saved with its fast sampler: Algorithm 2 on its DDPM chain, unless --sampler)",
    )
    parser.add_argument("--frames", type=int_at_least(2), default=8, help="steps shown by --trajectory (default: 8)")
    parser.add_argument(
        "--upscale",
        action="append",
        default=None,
        metavar="SR",
        help="a super-resolution model (folder or repo id) to upsample the samples with; repeat for a cascade. The "
        "picture: the base samples enlarged (nearest), then each stage's",
    )
    parser.add_argument(
        "--upscale_steps", type=int_at_least(1), default=100, help="steps of each --upscale stage (default: 100)"
    )
    parser.add_argument(
        "--noise_level",
        type=int_at_least(0),
        default=None,
        help="--upscale: the augmentation level of every stage (default: each model's own)",
    )
    parser.add_argument("--output", default="samples.png", help="PNG path (default: samples.png)")


def run(args: argparse.Namespace) -> int:
    """A grid (a conditional model: a column per class when no labels are given), the reverse trajectory, or
    --output_dir: one file per image. Image i is `ddpm_hub.pipelines.sampling`'s image i in all three."""
    if args.output_dir is None:
        check_output(args)
    else:
        check_writable_folder(Path(args.output_dir), "--output_dir")
    if is_unclip(model_source(args).model_index):  # text to image through a prior and a decoder (cli/unclip.py)
        return sample_unclip(args)
    pipeline = load_model(args)
    sampler = args.sampler
    chain = ddpm_chain(pipeline.scheduler)
    if sampler is None and args.trajectory and chain is not None and chain is not pipeline.scheduler:
        sampler = "ddpm"  # Algorithm 2 on the chain a fast default sampler carries
    pipeline = pipeline if sampler is None else with_sampler(pipeline, sampler)
    args.steps = args.steps or pipeline.default_num_inference_steps
    pipeline.set_progress_bar_config(disable=args.output_dir is not None)
    conditions = image_conditions(pipeline, args)
    call_kwargs = {"num_inference_steps": args.steps}
    if pipeline.conditioning:
        call_kwargs["guidance_scale"] = args.guidance_scale
    if args.upscale:
        if args.output_dir is not None or args.trajectory:
            raise UsageError("--upscale makes a picture of the cascade: not with --output_dir or --trajectory.")
        return sample_cascade(pipeline, args, conditions, call_kwargs)
    if args.output_dir is not None:
        return export(pipeline, args, conditions, call_kwargs)
    if args.trajectory:
        call = {"generator": generators(args), "batch_size": args.num_images, **conditions.inputs, **call_kwargs}
        rows, timesteps = reverse_trajectory(pipeline, num_frames=args.frames, **call)
        return save(strip(rows, args.scale), args, num_images=args.num_images, steps=args.steps, timesteps=timesteps)
    images = sample_images(
        pipeline, range(args.num_images), args.seed, args.batch_size, inputs=conditions.of, call_kwargs=call_kwargs
    )
    columns = conditions.columns if args.class_labels is None and conditions.columns else None
    tiles = to_pil_images(images)
    columns = columns or int(np.ceil(np.sqrt(len(tiles))))
    grid = strip([tiles[i : i + columns] for i in range(0, len(tiles), columns)], args.scale)
    facts = {key: conditions.inputs[key] for key in ("class_labels", "prompt") if key in conditions.inputs}
    return save(grid, args, num_images=args.num_images, steps=args.steps, **facts)


def export(pipeline, args: argparse.Namespace, conditions: ImageConditions, call_kwargs: dict) -> int:
    """`ddpm-hub sample --output_dir`: the missing images of 0 .. N-1, then the .npz if asked."""
    sampler = args.sampler or type(pipeline.scheduler).__name__  # the model's own
    settings = {"model": args.model, "sampler": sampler, "steps": args.steps, "seed": args.seed}
    settings["guidance_scale"] = call_kwargs.get("guidance_scale", 1.0)
    result = export_samples(
        pipeline,
        args.output_dir,
        args.num_images,
        settings,
        batch_size=args.batch_size,
        formats=(args.format,),
        call_kwargs=call_kwargs,
        conditions=conditions,
        seed=args.seed,
    )
    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process:
        print(json.dumps(result))
    state.destroy_process_group()  # under `accelerate launch`: each rank leaves the group before exiting
    return 0
