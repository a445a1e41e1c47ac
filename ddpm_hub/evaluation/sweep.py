"""The sampler sweep: FID and KID against a dataset (`ddpm_hub.evaluation.metrics`), quality and images/s against the
number of UNet evaluations, for `ddpm-hub eval` (`ddpm_hub.cli.evaluate`) and the benchmarks.
"""

import json
import os
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..errors import UsageError
from ..pipelines.sampling import Sampler, sample_batches, with_sampler
from ..public import code_span, escape_markdown
from ..run_folder import (
    SWEEP_FILE,
    SWEEP_JSON_FILE,
    check_finite,
)
from .metrics import (
    FeatureExtractor,
    Reference,
    extract_features_and_logits,
    sample_quality,
)

# ----------------------------------------------------------------------------------------------------------------
# The sweep

DEFAULT_SWEEP = (
    Sampler("ddpm", 1000),
    Sampler("ddpm", 250),
    Sampler("ddpm", 50),
    Sampler("ddim", 50),
    Sampler("ddim", 20),
    Sampler("dpmsolver++", 20),
    Sampler("dpmsolver++", 10),
)


@torch.no_grad()
def generate_images(
    pipeline,
    num_images: int,
    steps: int,
    seed: int = 0,
    batch_size: int = 64,
    guidance_scale: float = 1.0,
    progress: bool = False,
) -> tuple[torch.Tensor, dict]:
    """
    `num_images` samples as uint8 `[N x C x H x W]` (`ddpm_hub.pipelines.sampling.sample_images`: image i from seed +
    i, the same whatever the batch size, and every sampler starts from the same x_T; a class-conditional model draws
    class i mod classes, at `guidance_scale`), and the timing: `{"seconds", "images_per_second", "nfe"}`, NFE counted
    as UNet calls per image.
    """
    from tqdm.auto import tqdm

    if not isinstance(num_images, int) or num_images < 1:
        raise UsageError(f"num_images must be a positive integer, got {num_images!r}.")
    calls = []
    hook = pipeline.unet.register_forward_hook(lambda *_: calls.append(1))
    call_kwargs = {"num_inference_steps": steps}
    if pipeline.conditioning:
        call_kwargs["guidance_scale"] = guidance_scale
    bar = partial(tqdm, desc=f"{steps} steps", unit="batch", disable=not progress)
    start_time = time.perf_counter()
    try:
        batches = list(sample_batches(pipeline, range(num_images), seed, batch_size, None, call_kwargs, bar))
    finally:
        hook.remove()
    seconds = time.perf_counter() - start_time
    timing = {"seconds": seconds, "images_per_second": num_images / seconds, "nfe": len(calls) // len(batches)}
    return torch.cat([images for _, images in batches]), timing


def sampler_sweep(
    pipeline,
    reference_features: np.ndarray,
    feature_extractor: FeatureExtractor,
    num_images: int,
    samplers: Sequence[Sampler] = DEFAULT_SWEEP,
    seed: int = 0,
    batch_size: int = 64,
    kid_subset_size: int = 1000,
    classify=None,
    guidance_scale: float = 1.0,
    progress: bool = False,
    standardize_kernel: bool = False,
) -> list[dict]:
    """
    One row per sampler: the Frechet and kernel distances (`fid`, `kid_mean`: FID/KID with Inception features),
    `precision` and `recall`, the Inception Score when the extractor gives class logits (`inception_score_mean`), NFE
    and images/s for `num_images` samples against `reference_features` (`metrics.sample_quality`); with `classify`
    (uint8 images -> class ids) also the class balance of the samples, `class_balance_tv`: the total-variation
    distance from uniform classes.

    With a `metrics.Reference` (a reference half and a held-out half of the dataset), every row also has the floor:
    the same distances of `num_images` real held-out images to the reference (`fid_floor`, `kid_floor`), and
    `fid_ratio` = fid / fid_floor (1.0: as close as real images are), and the real images' `precision_floor` and
    `recall_floor`.
    """
    floor = None
    if isinstance(reference_features, Reference):
        floor = reference_features.floor(num_images, kid_subset_size, seed, standardize_kernel)
        reference_features = reference_features.features
    rows = []
    for sampler in samplers:
        images, timing = generate_images(
            with_sampler(pipeline, sampler.name), num_images, sampler.steps, seed, batch_size, guidance_scale, progress
        )
        features, logits = extract_features_and_logits(images, feature_extractor)
        quality = sample_quality(features, reference_features, kid_subset_size, seed, standardize_kernel, logits)
        row = {"sampler": sampler.name, "label": sampler.label, "steps": sampler.steps, **timing, **quality}
        if floor is not None:
            row.update(fid_floor=floor["fid"], kid_floor=floor["kid_mean"], fid_ratio=quality["fid"] / floor["fid"])
            row.update({f"{key}_floor": floor[key] for key in ("precision", "recall") if key in floor})
        if classify is not None:
            row["class_balance_tv"] = _class_balance(classify(images))
        rows.append(row)
    return rows


def _class_balance(labels: torch.Tensor) -> float:
    from .digit_classifier import class_balance

    return class_balance(labels)["total_variation_from_uniform"]


def sweep_markdown(rows: list[dict], settings: dict) -> str:
    """The Markdown table the model card includes, with the settings that produced it underneath."""
    metric = settings.get("metric_label", "FID ↓")
    balance = all("class_balance_tv" in row for row in rows)
    floor = all("fid_ratio" in row for row in rows)
    kernel = settings.get("kernel_label", "KID × 10³ ↓")
    header = f"| sampler | steps | NFE | {metric} |" + (" ÷ floor ↓ |" if floor else "") + f" {kernel} |"
    header += " classes (TV) ↓ |" if balance else ""
    lines = [header + " images/s |", "| --- " + "| ---: " * (5 + balance + floor) + "|"]
    for row in rows:
        ratio = f" **{row['fid_ratio']:.2f}** |" if floor else ""
        line = (
            f"| {row['label']} | {row['steps']} | {row['nfe']} | {row['fid']:.2f} |{ratio} "
            f"{1e3 * row['kid_mean']:.2f} ± {1e3 * row['kid_std']:.2f} |"
        )
        line += f" {row['class_balance_tv']:.3f} |" if balance else ""
        lines.append(line + f" {row['images_per_second']:.2f} |")
    if floor:
        first = rows[0]
        lines += [
            "",
            f"Floor: {first['num_generated']} real images of the held-out half against the reference half score "
            f"{first['fid_floor']:.2f} ({metric.split(' ')[0]}) and {1e3 * first['kid_floor']:.2f} (kernel distance "
            "× 10³); ÷ floor is the samples' distance divided by it: 1.0 means as close to the reference as real "
            "images are.",
        ]
    setup = f"device: {settings['device']}"
    if settings.get("batch_size"):
        setup += f", batch size {settings['batch_size']}"
    against = (
        f"a seeded half of {escape_markdown(settings['dataset'])} ({settings['num_reference']} images; the other half "
        "gives the floor)"
        if floor
        else f"{settings['num_reference']} images of {escape_markdown(settings['dataset'])}"
    )
    lines += [
        "",
        f"{rows[0].get('num_generated', settings['num_images'])} generated images per sampler against {against}; "
        f"features: {settings['features']}; {setup}. Distances of small sets are biased upwards: compare with the "
        "floor and the rows of one table, not with numbers from other papers."
        + (
            " Classes (TV): how far the classes the digit classifier reads in the samples are from uniform."
            if balance
            else ""
        ),
    ]
    if settings.get("command"):
        lines += ["", f"Produced by {code_span(settings['command'])}."]
    return "\n".join(lines) + "\n"


def write_sweep(rows: list[dict], settings: dict, output_dir: str | os.PathLike) -> dict:
    """`sweep.md` and `sweep.json` in `output_dir`; returns their paths."""
    for row in rows:
        check_finite(row, f"the sweep's row {row.get('label', row.get('sampler'))!r}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    markdown, data = output_dir / SWEEP_FILE, output_dir / SWEEP_JSON_FILE
    markdown.write_text(sweep_markdown(rows, settings))
    data.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n")
    return {"markdown": str(markdown), "json": str(data)}
