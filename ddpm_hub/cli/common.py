"""What the commands that run a model share: the model and condition options, reading prompts and images, checking
--output before any work, and turning a pipeline's own refusal into one line."""

import argparse
import json
import re
from pathlib import Path

import torch
from PIL import Image

from ..data.decode import SkipImage, open_file
from ..errors import InputNotFoundError, UsageError, refused_as_usage, writing
from ..loading.settings import TORCH_DTYPES, LoadSettings
from ..options import guidance_scale, int_at_least
from ..pipelines.conditioning import ImageConditions
from ..pipelines.sampling import image_generator
from ..pipelines.source import Source
from ..run_folder import check_writable_folder

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def add_model_arguments(parser: argparse.ArgumentParser, steps: int | None, num_images: int) -> None:
    parser.add_argument("model", help="a trained pipeline folder, a Hub repo id, or a pipelines/<name> configuration")
    parser.add_argument(
        "--num_images", type=int_at_least(1), default=num_images, help=f"images (default: {num_images})"
    )
    shown = steps if steps is not None else "the model's own: a distilled student's calls, else 1000"
    parser.add_argument("--steps", type=int_at_least(1), default=steps, help=f"steps of the chain (default: {shown})")
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
    add_loading_arguments(parser)


def add_loading_arguments(parser: argparse.ArgumentParser) -> None:
    """--revision, --variant, --torch_dtype: how MODEL is read (`ddpm_hub.loading.settings.LoadSettings`)."""
    parser.add_argument(
        "--revision",
        default=None,
        help="a Hub repo's branch, tag or commit to load (default: main; folders have none)",
    )
    parser.add_argument(
        "--variant",
        default=None,
        help="load weights saved as a variant, e.g. fp16 (unet/diffusion_pytorch_model.fp16.safetensors)",
    )
    parser.add_argument(
        "--torch_dtype", default=None, choices=TORCH_DTYPES, help="the dtype to load the weights in (default: saved)"
    )


def model_source(args: argparse.Namespace, name: str | None = None) -> Source:
    """MODEL (or `name`) with --revision, --variant and --torch_dtype: its configs read, no weights loaded yet."""
    settings = LoadSettings(args.revision, args.variant, args.torch_dtype)
    return Source.of(args.model if name is None else name, settings)


def load_model(args: argparse.Namespace, source: Source | None = None):
    """MODEL (or its `source`, already made) of a command that draws images from noise (sample, inpaint, img2img):
    never a super-resolution model."""
    command = f"ddpm-hub {getattr(args, 'command', None) or 'sample'}"
    source = model_source(args) if source is None else source
    source.refuse_super_resolution(command)  # from the configs, before any weights are read
    return source.load(seed=args.seed).to(args.device)  # a configuration: fresh weights, to check the plumbing


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


def refused_inputs(what: str):
    """
    Around a pipeline call: its own input checks (a `ValueError`, raised before its first UNet call: a strength
    that leaves no step, an image out of range) become one line naming `what`.
    """
    return refused_as_usage(what)


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
