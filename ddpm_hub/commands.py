"""The image commands of `ddpm-hub`: sample (grids, class labels, guidance, the reverse trajectory), noise (the
forward process), inpaint (RePaint) and img2img (SDEdit). Each writes one PNG and prints a JSON line.

    ddpm-hub sample runs/ddpm-digits-16-cond --class_labels 3,7 --guidance_scale 2 --num_images 8
    ddpm-hub sample runs/ddpm-digits-16 --trajectory --num_images 2 --steps 250
    ddpm-hub noise digit.png --timesteps 0,50,100,250,500,1000
    ddpm-hub sample runs/ddpm-digits-16 --num_images 10000 --output_dir samples --format npz --sampler ddim --steps 50
    ddpm-hub inpaint runs/ddpm-digits-16 digit.png mask.png --num_images 4
    ddpm-hub img2img runs/ddpm-digits-16 noisy.png --strength 0.6 --num_images 4
"""

import argparse
import contextlib
import json
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .conditioning import ImageConditions
from .configs import build_pipeline
from .data.decode import SkipImage, open_file
from .errors import InputNotFoundError, UsageError, writing
from .export import export_samples
from .image_processing_ddpm_hub import SIXTEEN_BIT_MODES, convert_mode
from .options import guidance_scale, int_at_least
from .pictures import forward_strip, reverse_trajectory, strip, to_pil, to_pil_images
from .pipeline import DDPMHubImg2ImgPipeline, DDPMHubInpaintPipeline, DDPMHubSuperResolutionPipeline
from .resolver import load_pipeline
from .run_folder import check_writable_folder
from .sampling import SAMPLERS, image_generator, sample_images, with_sampler

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
GRAYSCALE_MODES = ("1", "L", "LA", "La", "F", *SIXTEEN_BIT_MODES)  # `ddpm-hub noise` keeps these one channel


# ----------------------------------------------------------------------------------------------------------------
# Options shared by the commands that run a model


def add_model_arguments(parser: argparse.ArgumentParser, steps: int, num_images: int) -> None:
    parser.add_argument("model", help="a trained pipeline folder, a Hub repo id, or a pipelines/<name> configuration")
    parser.add_argument(
        "--num_images", type=int_at_least(1), default=num_images, help=f"images (default: {num_images})"
    )
    parser.add_argument("--steps", type=int_at_least(1), default=steps, help=f"respaced DDPM steps (default: {steps})")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="image i uses seed + i (default: 0)")
    parser.add_argument(
        "--class_labels",
        default=None,
        help="a class-conditional model: labels (names or ids), comma separated, one per image or one for all "
        "(default: every class in turn, a column per class)",
    )
    parser.add_argument(
        "--prompt", default=None, help="a text-to-image model: the prompt of every image (or see --prompts_file)"
    )
    parser.add_argument(
        "--prompts_file",
        default=None,
        help="a text-to-image model: a text file of prompts, one per line; image i gets prompt i mod their number "
        "(a column per prompt)",
    )
    parser.add_argument(
        "--negative_prompt", default=None, help="a text-to-image model: the null branch of guidance (default: '')"
    )
    parser.add_argument(
        "--guidance_scale",
        type=guidance_scale,
        default=1.0,
        help="classifier-free guidance w, in [0, 100] (1: none; 0: the null branch; default: 1)",
    )
    parser.add_argument("--scale", type=int_at_least(1), default=4, help="nearest-neighbour enlargement (default: 4)")
    parser.add_argument("--device", default=DEVICE, help=f"torch device (default: {DEVICE})")


def load_model(args: argparse.Namespace):
    """MODEL of a command that draws images from noise (sample, inpaint, img2img): never a super-resolution model."""
    command = f"ddpm-hub {getattr(args, 'command', None) or 'sample'}"
    return load_pipeline(args.model, seed=args.seed, command=command).to(args.device)  # untrained: the plumbing


def image_conditions(pipeline, args: argparse.Namespace) -> ImageConditions:
    """
    --class_labels (names or ids, comma separated, one per image or one for all) or --prompt / --prompts_file as
    each image's condition, checked by the pipeline before any sampling; without them, the model's cycle (every
    class in turn, a column per class).
    """
    prompts = read_prompts(args)
    if prompts is not None:
        conditions = ImageConditions(
            args.num_images, {"prompt": [prompts[i % len(prompts)] for i in range(args.num_images)]}, len(prompts)
        )
        if args.class_labels is not None:
            raise UsageError("--class_labels and --prompt/--prompts_file: give one kind of condition.")
    elif args.class_labels is None:
        conditions = pipeline.conditioning.cycle(args.num_images)
    else:
        items = [part.strip() for part in args.class_labels.split(",")]
        values = [int(item) if re.fullmatch(r"-?[0-9]+", item) else item for item in items]  # else a name
        values = values * args.num_images if len(values) == 1 else values
        if len(values) != args.num_images:
            raise UsageError(
                f"--class_labels gives {len(values)} labels for --num_images {args.num_images}: one each, or one."
            )
        conditions = ImageConditions(args.num_images, {"class_labels": values})
    if args.negative_prompt is not None:
        conditions = ImageConditions(
            conditions.num_images, {**conditions.inputs, "negative_prompt": [args.negative_prompt] * args.num_images},
            conditions.columns,
        )  # fmt: skip
    try:  # the pipeline's own checks (an unconditional model, unknown names, no null label, ids out of range)
        pipeline.prepare_condition(args.num_images, args.guidance_scale, **conditions.inputs)
    except ValueError as error:
        given = [name for name, value in (("--class_labels", args.class_labels), ("--prompt", prompts)) if value]
        raise UsageError(f"{'/'.join([*given, '--guidance_scale'])}: {error}") from None
    return conditions


@contextlib.contextmanager
def refused_inputs(what: str):
    """
    Around a pipeline call: its own input checks (a `ValueError`, raised before its first UNet call: a strength
    that leaves no step, a mask of another size, an image out of range) become one line naming `what`.
    """
    try:
        yield
    except UsageError:
        raise
    except ValueError as error:
        raise UsageError(f"{what}: {error}") from None


def read_prompts(args: argparse.Namespace) -> list[str] | None:
    """--prompt, or the lines of --prompts_file (blank lines skipped), or None."""
    if args.prompt is not None and args.prompts_file is not None:
        raise UsageError("--prompt and --prompts_file: give one.")
    if args.prompts_file is None:
        return None if args.prompt is None else [args.prompt]
    path = Path(args.prompts_file)
    if not path.is_file():
        raise InputNotFoundError(f"--prompts_file {args.prompts_file!r} is not a file.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(
            f"--prompts_file {args.prompts_file!r} is not UTF-8 text (byte {error.start}: {error.reason}); give a "
            "UTF-8 text file with one prompt per line."
        ) from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise UsageError(f"--prompts_file {args.prompts_file!r} holds no prompt (one per line).")
    return prompts


def generators(args: argparse.Namespace) -> list[torch.Generator]:
    return [image_generator(args.seed, i) for i in range(args.num_images)]


def conditioning(pipeline, args: argparse.Namespace) -> dict:
    """The condition arguments of a call on all --num_images images, with --guidance_scale where it applies."""
    conditions = image_conditions(pipeline, args)
    return {**conditions.inputs, "guidance_scale": args.guidance_scale} if pipeline.conditioning else {}


def read_image(path: str, what: str) -> Image.Image:
    """An image file as training reads one (`ddpm_hub.data.decode.open_file`: decoded fully, EXIF orientation)."""
    if not Path(path).is_file():
        raise InputNotFoundError(f"{what} {path!r} is not a file.")
    try:
        return open_file(path)
    except SkipImage as reason:
        raise UsageError(f"{what} {path!r} cannot be read as an image: {reason}.") from None


def check_output(args: argparse.Namespace) -> None:
    """--output, before any work: a file name PIL can write (by its extension) in a folder that can be written."""
    output = Path(args.output)
    extension = output.suffix.lower()
    writable = sorted(ext for ext, kind in Image.registered_extensions().items() if kind in Image.SAVE)
    if extension not in writable:
        shown = ", ".join(ext for ext in (".png", ".jpg", ".webp", ".tif", ".bmp", ".gif") if ext in writable)
        raise UsageError(
            f"--output {args.output}: {extension or 'no extension'} is not an image format PIL writes; use {shown}."
        )
    if output.is_dir():
        raise UsageError(f"--output {args.output} is a folder; give a file name such as {output / 'samples.png'}.")
    check_writable_folder(output.parent, f"--output {args.output}: the folder")


def save(picture: Image.Image, args: argparse.Namespace, **facts) -> int:
    with writing(args.output, "--output"):
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        picture.save(args.output)
    print(json.dumps({"output": args.output, **facts}))
    return 0


# ----------------------------------------------------------------------------------------------------------------
# The commands


def add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, steps=1000, num_images=16)
    parser.add_argument(
        "--sampler", choices=list(SAMPLERS), default="ddpm", help="the reverse process (default: ddpm)"
    )
    parser.add_argument(
        "--output_dir",
        default=None,
        help="write one PNG per image there instead of a grid: resumable, split across the processes of "
        "`accelerate launch` (ddpm_hub.export)",
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
        "--frames steps",
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


def run_sample(args: argparse.Namespace) -> int:
    """A grid (a conditional model: a column per class when no labels are given), the reverse trajectory, or
    --output_dir: one file per image. Image i is `ddpm_hub.sampling`'s image i in all three."""
    if args.output_dir is None:
        check_output(args)
    else:
        check_writable_folder(Path(args.output_dir), "--output_dir")
    pipeline = with_sampler(load_model(args), args.sampler)
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


def sample_cascade(pipeline, args: argparse.Namespace, conditions: ImageConditions, call_kwargs: dict) -> int:
    """`ddpm-hub sample BASE --upscale SR [--upscale SR2]`: a row per stage, the same images upsampled."""
    from .cascade import DDPMHubCascadePipeline

    stages = [load_pipeline(name, seed=args.seed).to(args.device) for name in args.upscale]
    for name, stage in zip(args.upscale, stages):
        if not isinstance(stage, DDPMHubSuperResolutionPipeline):
            raise UsageError(f"--upscale {name}: it is not a super-resolution model.")
    cascade = DDPMHubCascadePipeline(pipeline, stages)
    steps = [args.steps] + [args.upscale_steps] * len(stages)
    output = cascade(
        generator=generators(args), batch_size=args.num_images, num_inference_steps=steps,
        noise_level=args.noise_level, output_type="pt", **conditions.inputs,
        **({"guidance_scale": call_kwargs["guidance_scale"]} if "guidance_scale" in call_kwargs else {}),
    )  # fmt: skip
    size = output.images.shape[-2:]
    rows = []
    for images in output.stages:  # enlarged (nearest) to the last stage's size, in its channels
        enlarged = torch.nn.functional.interpolate(images, size=size, mode="nearest")
        if enlarged.shape[1] != output.images.shape[1]:
            enlarged = enlarged.expand(-1, output.images.shape[1], -1, -1)
        rows.append(to_pil(enlarged * 2 - 1))
    return save(strip(rows, args.scale), args, num_images=args.num_images, stages=[args.model, *args.upscale])


def add_upscale_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a trained super-resolution folder or Hub repo id")
    parser.add_argument("images", nargs="+", help="image files to upsample (each is upsampled on its own)")
    parser.add_argument(
        "--noise_level", type=int_at_least(0), default=None, help="augmentation level (default: the model's)"
    )
    parser.add_argument("--steps", type=int_at_least(1), default=100, help="respaced DDPM steps (default: 100)")
    parser.add_argument("--num_samples", type=int_at_least(1), default=1, help="samples per image (default: 1)")
    parser.add_argument(
        "--seed", type=int_at_least(0), default=0, help="sample j of image k uses seed + ... (default: 0)"
    )
    parser.add_argument(
        "--consistency",
        action="store_true",
        help="project each step's x_0 onto the input (its box average is the input; consistency=True)",
    )
    parser.add_argument("--prompt", default=None, help="a text-conditioned upscaler's prompt")
    parser.add_argument("--guidance_scale", type=float, default=1.0, help="classifier-free guidance w (default: 1)")
    parser.add_argument("--device", default=DEVICE, help=f"torch device (default: {DEVICE})")
    parser.add_argument("--output_dir", default="upscaled", help="where NAME_upscaled[_j].png go (default: upscaled)")


def run_upscale(args: argparse.Namespace) -> int:
    """`ddpm-hub upscale MODEL IMAGE...`: each image upsampled `low_res_scale` times, one PNG per sample."""
    from tqdm.auto import tqdm

    pipeline = load_pipeline(args.model, seed=args.seed).to(args.device)
    if not isinstance(pipeline, DDPMHubSuperResolutionPipeline):
        raise UsageError(f"{args.model} is not a super-resolution model: upscale takes one (e.g. ddpm-sr-16-to-64).")
    pipeline.set_progress_bar_config(disable=True)
    images = [read_image(path, "IMAGE") for path in args.images]  # every file read before any work
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written, index = [], 0
    extra = {"prompt": args.prompt} if args.prompt is not None else {}
    if args.consistency:
        extra["consistency"] = True
    if args.guidance_scale != 1:
        extra["guidance_scale"] = args.guidance_scale
    for path, image in tqdm(list(zip(args.images, images)), desc="upscale", unit="image"):
        generator = [image_generator(args.seed, index + j) for j in range(args.num_samples)]
        index += args.num_samples
        with refused_inputs(path):
            results = pipeline(
                image=image, noise_level=args.noise_level, num_inference_steps=args.steps, generator=generator,
                batch_size=args.num_samples, **extra,
            ).images  # fmt: skip
        for j, result in enumerate(results):
            suffix = f"_{j}" if args.num_samples > 1 else ""
            target = output_dir / f"{Path(path).stem}_upscaled{suffix}.png"
            result.save(target)
            written.append(str(target))
    print(json.dumps({"written": written, "scale": pipeline.config.low_res_scale}))
    return 0


def export(pipeline, args: argparse.Namespace, conditions: ImageConditions, call_kwargs: dict) -> int:
    """`ddpm-hub sample --output_dir`: the missing images of 0 .. N-1, then the .npz if asked."""
    settings = {"model": args.model, "sampler": args.sampler, "steps": args.steps, "seed": args.seed}
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


def add_noise_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="an image file")
    parser.add_argument(
        "--timesteps", default="0,50,100,250,500,1000", help="paper timesteps, 0 = the data (default: %(default)s)"
    )
    parser.add_argument(
        "--pipeline", default="ddpm-cifar10-32", help="whose noise schedule (default: the paper's linear one)"
    )
    parser.add_argument("--size", type=int_at_least(1), default=None, help="resize the image to SIZE x SIZE first")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="(default: 0)")
    parser.add_argument("--scale", type=int_at_least(1), default=4, help="enlargement (default: 4)")
    parser.add_argument("--output", default="forward.png", help="PNG path (default: forward.png)")


def run_noise(args: argparse.Namespace) -> int:
    """The forward process of one image: x_t ~ q(x_t | x_0) at each of --timesteps."""
    check_output(args)
    try:
        timesteps = [int(t) for t in args.timesteps.split(",")]
    except ValueError:
        raise UsageError(f"--timesteps must be integers separated by commas, got {args.timesteps!r}.") from None
    scheduler = build_pipeline(args.pipeline, seed=None).scheduler
    image = read_image(args.image, "IMAGE")
    image = convert_mode(image, 1 if image.mode in GRAYSCALE_MODES else 3)  # 16-bit, float, alpha: as training
    if args.size:
        image = image.resize((args.size, args.size), Image.Resampling.BILINEAR)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1)
    x_0 = (pixels[None, None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)[None]).double()
    try:
        frames = forward_strip(x_0, scheduler, timesteps, torch.Generator().manual_seed(args.seed))
    except ValueError as error:
        raise UsageError(f"--timesteps: {error}") from None
    return save(strip([frames], args.scale), args, timesteps=timesteps, schedule=scheduler.config.beta_schedule)


def add_inpaint_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, steps=250, num_images=4)
    parser.add_argument("image", help="the image to complete")
    parser.add_argument("mask", help="the mask: white = the region to generate, black = the pixels to keep")
    parser.add_argument("--jump_length", type=int_at_least(1), default=10, help="RePaint's jump length (default: 10)")
    parser.add_argument(
        "--jump_n_sample", type=int_at_least(1), default=10, help="RePaint's resamplings (default: 10)"
    )
    parser.add_argument("--output", default="inpainted.png", help="PNG path (default: inpainted.png)")


def run_inpaint(args: argparse.Namespace) -> int:
    """A row: the input, the input with the region to generate greyed, then --num_images completions."""
    check_output(args)
    pipeline = DDPMHubInpaintPipeline.from_pipe(load_model(args))
    image, mask = read_image(args.image, "IMAGE"), read_image(args.mask, "MASK")
    call = {"num_inference_steps": args.steps, "generator": generators(args), "jump_length": args.jump_length}
    call.update(conditioning(pipeline, args), jump_n_sample=args.jump_n_sample)
    with torch.no_grad():
        x_0 = pipeline.preprocess(image, pipeline.image_channels)
        unknown = pipeline.preprocess_mask(mask, what="MASK") == 1
    with refused_inputs(f"{args.image} / {args.mask}"):
        results = pipeline(image=[image] * args.num_images, mask_image=mask, **call).images
    shown = [to_pil(x_0 * 2 - 1)[0], to_pil(torch.where(unknown, torch.zeros_like(x_0), x_0 * 2 - 1))[0]]
    return save(strip([shown + list(results)], args.scale), args, num_images=args.num_images, steps=args.steps)


def add_img2img_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, steps=1000, num_images=4)
    parser.add_argument("image", help="the image to edit")
    parser.add_argument("--strength", type=float, default=0.6, help="t = strength x T, in [0, 1] (default: 0.6)")
    parser.add_argument("--output", default="img2img.png", help="PNG path (default: img2img.png)")


def run_img2img(args: argparse.Namespace) -> int:
    """A row: the input, then --num_images SDEdit results."""
    check_output(args)
    if not 0 <= args.strength <= 1:
        raise UsageError(f"--strength must be in [0, 1], got {args.strength}.")
    pipeline = DDPMHubImg2ImgPipeline.from_pipe(load_model(args))
    image = read_image(args.image, "IMAGE")
    call = {"num_inference_steps": args.steps, "generator": generators(args), "strength": args.strength}
    call.update(conditioning(pipeline, args))
    with refused_inputs(f"--strength {args.strength} --steps {args.steps}"):
        results = pipeline(image=[image] * args.num_images, **call).images
    shown = to_pil(pipeline.preprocess(image, pipeline.image_channels) * 2 - 1)
    return save(strip([shown + list(results)], args.scale), args, num_images=args.num_images, strength=args.strength)


COMMANDS = {
    "sample": (
        "sample a grid, with class labels and guidance, or the reverse trajectory",
        add_sample_arguments,
        run_sample,
    ),
    "noise": ("the forward process of an image: x_t at chosen t", add_noise_arguments, run_noise),
    "inpaint": ("complete the white region of a mask (RePaint)", add_inpaint_arguments, run_inpaint),
    "img2img": ("edit an image by noising and denoising it (SDEdit)", add_img2img_arguments, run_img2img),
    "upscale": ("upsample images with a super-resolution model", add_upscale_arguments, run_upscale),
}
