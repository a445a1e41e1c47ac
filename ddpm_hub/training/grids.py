"""Sample grids of a run: sampled from the weights that will be saved, shared among the ranks (so that no rank idles
into a collective timeout), laid out by the model's conditioning (a row per class), logged and written.

Image i of a grid is `ddpm_hub.pipelines.sampling`'s image i for the run's --seed: the grid `samples.png` is what
`ddpm-hub sample OUTPUT_DIR --seed SEED --steps N --num_images M` draws from the saved pipeline.
"""

import numpy as np
from accelerate.utils import gather_object
from PIL import Image

from ..data.decode import image_size
from ..pictures import make_grid, upscale
from ..pipelines.conditioning import ImageConditions
from ..pipelines.sampling import sample_images
from ..run_folder import GUIDANCE_FILE, SAMPLES_FILE
from .options import ValidationOptions
from .run import Run
from .trackers import log_grid

# The guidance strip of a conditional model: these scales, the images GUIDANCE_FIRST + class.
GUIDANCE_STRIP_SCALES = (0.0, 1.0, 2.0, 4.0)
GUIDANCE_FIRST = 100_000


def grid_conditions(run: Run) -> ImageConditions:
    """What each image of the grid is conditioned on (`TrainingConditioning.grid`: a row per class) and its columns."""
    return run.conditioning.grid(run.options.validation.num_validation_images)


def grid_guidance(run: Run) -> float | None:
    """The guidance scale of the grid: --validation_guidance_scale where the model has a null branch, else none."""
    return run.options.validation.validation_guidance_scale if run.conditioning.has_null else None


def sample_grid_images(
    run: Run, conditions: ImageConditions, guidance_scale: float | None, first: int = 0
) -> list[np.ndarray]:
    """
    uint8 [H x W x C] images first .. first + N - 1 (`ddpm_hub.pipelines.sampling`, from the run's --seed) with the
    conditions given, shared among the ranks and gathered in order on every rank.
    """
    with run.final_weights_on_device():
        return _sample_grid_images(run, conditions, guidance_scale, first)


def _sample_grid_images(run: Run, conditions: ImageConditions, guidance_scale: float | None, first: int):
    accelerator = run.accelerator
    modules = list(run.final_components().values())
    was_training = [module.training for module in modules]
    for module in modules:
        module.eval()
    pipeline = run.sampling_pipeline()
    call_kwargs = {"num_inference_steps": run.sampling_steps}
    if guidance_scale is not None:
        call_kwargs["guidance_scale"] = guidance_scale
    with accelerator.split_between_processes(list(range(conditions.num_images))) as mine:
        images = []
        if mine:
            with accelerator.autocast():
                batch = sample_images(
                    pipeline,
                    [first + i for i in mine],
                    run.options.seed,
                    len(mine),
                    inputs=lambda indices: conditions.of([i - first for i in indices]),
                    call_kwargs=call_kwargs,
                )
            images = list(batch.permute(0, 2, 3, 1).numpy())
    for module, mode in zip(modules, was_training):
        module.train(mode)
    return gather_object(images)


def grid_image(images: list[np.ndarray], resolution, columns: int | None = None) -> Image.Image:
    """Tiles of [H x W x C] uint8 samples, enlarged so that the longer side of a tile is about 64 pixels."""
    tiles = [Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im) for im in images]
    return upscale(make_grid(tiles, columns=columns), max(1, 64 // max(image_size(resolution))))


def write_validation_grid(run: Run, step: int) -> None:
    """A grid under logging_dir/samples/step-N.png, and in the tracker."""
    conditions = grid_conditions(run)
    images = sample_grid_images(run, conditions, grid_guidance(run))
    if run.accelerator.is_main_process:
        grid = grid_image(images, run.options.data.training_size, conditions.columns)
        folder = run.output_dir / run.options.logging.logging_dir / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        grid.save(folder / f"step-{step:07d}.png")
        log_grid(run.accelerator, grid, step)
    run.accelerator.wait_for_everyone()


def write_final_grids(run: Run, step: int) -> None:
    """`samples.png` (every rank samples, the main process writes) and a conditional model's `guidance.png`."""
    conditions = grid_conditions(run)
    images = sample_grid_images(run, conditions, grid_guidance(run))
    strip = guidance_strip(run)
    if run.accelerator.is_main_process:
        grid = grid_image(images, run.options.data.training_size, conditions.columns)
        grid.save(run.output_dir / SAMPLES_FILE)
        log_grid(run.accelerator, grid, step)
        if strip is not None:
            strip.save(run.output_dir / GUIDANCE_FILE)


def guidance_strip(run: Run) -> Image.Image | None:
    """A model with a null branch: one row per class or prompt, a column per guidance scale, the same noise."""
    conditions = run.conditioning.strip()
    if conditions is None or run.conditioning.embedded_guidance is not None:  # a guided student serves its range only
        return None
    columns = [sample_grid_images(run, conditions, w, first=GUIDANCE_FIRST) for w in GUIDANCE_STRIP_SCALES]
    rows = [column[c] for c in range(conditions.num_images) for column in columns]
    return grid_image(rows, run.options.data.training_size, len(GUIDANCE_STRIP_SCALES))


def samples_record(run: Run, validation: ValidationOptions) -> dict:
    """What the summary says of the grid: its size, steps and guidance."""
    prompts = run.conditioning.prompts if run.conditioning.get("image_embeds") is None else None  # decoder: variations
    return {
        "num_images": grid_conditions(run).num_images,
        "steps": run.sampling_steps,
        "guidance_scale": grid_guidance(run) if run.conditioning else None,
        "prompts": (prompts.prompts or [""]) if prompts is not None else None,
    }
