"""The model card of a published pipeline: the top-level `model_card.md` template filled in from the output folder.

    card = render_model_card("ddpm-digits-16-trained", repo_id="alice/ddpm-digits-16")
    card.save("README.md")

Every value comes from a file of the run: the pipeline's configs and safetensors weights (architecture, parameter
count), `training_summary.json` and `training_options.json` (written by training/train.py), `samples.png`,
`metrics.json`, `sweep.md` and `bits_per_timestep.png` (written by `ddpm-hub eval`). A file that is missing leaves
its section out or says that nothing was measured; nothing is filled with a placeholder. The YAML metadata goes
through huggingface_hub's `ModelCardData`, so the Hub reads it (library, tags, pipeline tag, dataset, license,
`model-index` of the metrics). Every user-supplied value the card shows (class names, dataset names and splits, paths,
commands) is escaped for Markdown and HTML by `ddpm_hub.public` (`escape_markdown`, `code_span`), never inserted
raw.
"""

import math
import os
import re
from dataclasses import asdict
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..errors import InputNotFoundError
from ..public import code_span, escape_markdown, is_local_path, python_literal
from ..resources import resource_path
from ..run_folder import (
    BPD_PLOT_FILE,
    CLASS_ACCURACY_FILE,
    GUIDANCE_FILE,
    MODEL_INDEX,
    OPTIONS_FILE,
    SAMPLES_FILE,
    SCHEDULER_CONFIG,
    SUMMARY_FILE,
    SWEEP_FILE,
    TEXT_ACCURACY_FILE,
    UNET_CONFIG,
    Metric,
    TrainingSummary,
    read_json,
    read_metrics,
)
from ..version import __version__
from .card_decoder import DECODER_PIPELINE_TAG, DECODER_TAGS, decoder_facts
from .card_prior import prior_facts, prior_usage_call
from .card_training import distillation_facts, training_rows

TEMPLATE_NAME = "model_card.md"
DEFAULT_LICENSE = "apache-2.0"
TAGS = ["pytorch", "diffusers", "unconditional-image-generation", "ddpm", "ddpm_hub"]
CONDITIONAL_TAGS = ["class-conditional", "classifier-free-guidance"]
TEXT_TAGS = ["text-to-image", "classifier-free-guidance"]
LATENT_TAGS = ["latent-diffusion"]
VAE_CONFIG = "vae/config.json"
PIPELINE_TAG = "unconditional-image-generation"
TEXT_PIPELINE_TAG = "text-to-image"

BUILTIN_DATASETS = {
    "builtin:digits": (
        "scikit-learn's hand-written digits (`builtin:digits`: the UCI ML digits, 8×8 grayscale, shipped with "
        "scikit-learn)"
    ),
}
METRIC_NAMES = {
    "bpd": "Bits/dim (variational bound on the negative log-likelihood)",
    "fid": "FID",
    "kid": "KID",
    "fd_digits": "Fréchet distance in the repo's digit-classifier features",
    "kd_digits": "Kernel distance in the repo's digit-classifier features, standardized by the reference set",
    "is": "Inception score",
    "precision": "Precision (Kynkäänniemi et al. 2019, k = 3, Inception features)",
    "recall": "Recall (Kynkäänniemi et al. 2019, k = 3, Inception features)",
    "is_digits": "Classifier score (the Inception score's formula) of the repo's digit classifier",
    "precision_digits": "Precision (Kynkäänniemi et al. 2019, k = 3) in the repo's digit-classifier features",
    "recall_digits": "Recall (Kynkäänniemi et al. 2019, k = 3) in the repo's digit-classifier features",
}


def find_template(template_path: str | os.PathLike | None = None) -> Path:
    """The model card template: `template_path`, else the top-level `model_card.md` (bundled in a wheel)."""
    if template_path is None:
        return resource_path(TEMPLATE_NAME)
    if not Path(template_path).is_file():
        raise InputNotFoundError(f"No model card template at {template_path}.")
    return Path(template_path)


def render_model_card(
    output_dir: str | os.PathLike,
    repo_id: str,
    revision: str | None = None,
    license: str = DEFAULT_LICENSE,
    private: bool = False,
    template_path: str | os.PathLike | None = None,
    local_dataset: bool | None = None,
) -> ModelCard:
    """
    The model card (`README.md`) of the pipeline in `output_dir`, to be published as `repo_id`.

    Args:
        output_dir: a pipeline folder (`save_pretrained` output), usually a training run's `--output_dir`.
        repo_id: `namespace/name` on the Hub; the usage code loads it by this id.
        revision: the branch it is published to, if not `main` (the usage code then passes it).
        license: the license of the weights, a Hub license id.
        private: the repo is private (the card then says how to authenticate).
        template_path: another Jinja template (default: the top-level `model_card.md`).
        local_dataset: whether the options' `dataset_name` is a local path (datasets.load_dataset of a folder), not a
            Hub dataset; default: judged from the name. Publishing passes it, as it publishes only the path's name.
    """
    folder = Path(output_dir)
    facts = collect_facts(folder, local_dataset)
    tags = list(TAGS) + (CONDITIONAL_TAGS if facts["conditional"] else []) + (TEXT_TAGS if facts["text"] else [])
    tags += LATENT_TAGS if facts["model"]["latent"] else []
    tags += DECODER_TAGS if facts["model"]["decoder"] else []
    decoder = facts["model"]["decoder"] and not facts["model"]["prior"]  # variations (its caption, if any, optional)
    pipeline_tag = DECODER_PIPELINE_TAG if decoder else TEXT_PIPELINE_TAG if facts["text"] else None
    if pipeline_tag is not None:
        tags.remove(PIPELINE_TAG)
    card_data = ModelCardData(
        library_name="diffusers",
        license=license,
        tags=list(dict.fromkeys(tags)),
        pipeline_tag=pipeline_tag or PIPELINE_TAG,
        datasets=[facts["dataset"]["hub_id"]] if facts["dataset"] and facts["dataset"]["hub_id"] else None,
        model_name=repo_id.split("/")[-1] if facts["metrics"] else None,
        eval_results=_eval_results(facts) or None,
    )
    revision = None if revision in (None, "main") else revision
    card = ModelCard.from_template(
        card_data,
        template_path=str(find_template(template_path)),
        repo_id=repo_id,
        model_name=repo_id.split("/")[-1],
        revision=revision,
        revision_argument=f", revision={revision!r}" if revision else "",
        private=private,
        ddpm_hub_version=__version__,
        **facts,
    )
    return ModelCard(_tidy(str(card)))


def _tidy(text: str) -> str:
    """Jinja leaves blank lines where block tags stood: at most one blank line in a row, one newline at the end."""
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


# ----------------------------------------------------------------------------------------------------------------
# Facts read from the output folder


def collect_facts(folder: Path, local_dataset: bool | None = None) -> dict:
    """
    Everything the template states, as plain values, user-supplied text escaped (`ddpm_hub.public`); a missing file
    gives `None` for its part.
    """
    record = TrainingSummary.read(folder)
    summary = asdict(record) if record is not None else {}
    options = read_json(folder / OPTIONS_FILE, "the training options") or {}
    model = _model_facts(folder, options)
    return {
        "model": model,
        "samples": _samples_facts(folder, summary),
        "training": training_rows(summary, options) or None,
        "objective": _objective(model, options),
        "dataset": _dataset_facts(summary, options, local_dataset),
        "metrics": _metric_rows(read_metrics(folder)),
        "sweep": _read_text(folder / SWEEP_FILE),
        "conditional": (conditional := _conditional_facts(folder, summary)),
        "text": (text := _text_facts(folder, summary, options)),
        "distillation": distillation_facts(folder, options),
        "usage_call": _usage_call(conditional, summary, text, model),
        "class_accuracy": _read_text(folder / CLASS_ACCURACY_FILE),
        "text_accuracy": _read_text(folder / TEXT_ACCURACY_FILE),
        "bpd_plot": BPD_PLOT_FILE if (folder / BPD_PLOT_FILE).is_file() else None,
        "steps": summary.get("steps"),
        "epochs": summary.get("epochs"),
        "has_options": (folder / OPTIONS_FILE).is_file(),
        "source_pipeline": _code(options.get("pipeline") or summary.get("pipeline")),
    }


def _read_text(path: Path) -> str | None:
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


def count_safetensors_parameters(folder: Path, component: str = "unet") -> int:
    """Parameters of a component (the UNet), read from the safetensors headers (no weights are loaded)."""
    from safetensors import safe_open

    total = 0
    for path in sorted(folder.glob(f"{component}/*.safetensors")):
        with safe_open(str(path), framework="pt") as weights:
            total += sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())
    return total


def _model_facts(folder: Path, options: dict | None = None) -> dict:
    """The network, the chain and the images; a latent model's images are its autoencoder's (`_latent_facts`)."""
    unet = read_json(folder / UNET_CONFIG, "the UNet configuration") or {}
    scheduler = read_json(folder / SCHEDULER_CONFIG, "the scheduler configuration") or {}
    size = unet.get("sample_size")
    height, width = (size, size) if isinstance(size, int) else tuple(size or (None, None))
    conditioning = _conditioning(folder, unet)
    channels = conditioning.image_channels(unet["in_channels"]) if unet.get("in_channels") else None
    latent = _latent_facts(folder, options or {}, (channels, height, width))
    attention = [
        f"{height // 2**i}×{width // 2**i}" if height else "?"
        for i, block in enumerate(unet.get("down_block_types", []))
        if block.startswith(("Attn", "CrossAttn"))
    ]
    if latent is not None:  # the images are the decoder's: f times the latent grid, in the autoencoder's channels
        height, width, channels = latent["height"], latent["width"], latent["channels"]
    sampler = None
    if scheduler.get("_class_name") == "UniPCMultistepScheduler" and scheduler.get("variance_type"):
        index = read_json(folder / MODEL_INDEX, "the pipeline's model index") or {}
        sampler = {
            "class_name": "UniPCMultistepScheduler",
            "spacing": scheduler.get("timestep_spacing"),
            "steps": index.get("default_num_inference_steps"),
        }  # the fast sampler a trained model ships with (ddpm_hub.pipelines.sampling.default_sampler)
    beta_schedule = scheduler.get("beta_schedule")
    betas = f"{beta_schedule} betas"
    if beta_schedule == "linear":
        betas = f"linear betas {scheduler.get('beta_start')} → {scheduler.get('beta_end')}"
    elif beta_schedule in ("cosine", "squaredcos_cap_v2"):
        betas = "cosine schedule (Nichol & Dhariwal 2021)"
    return {
        "height": height,
        "width": width,
        "channels": channels,
        "color": _color(channels),
        "coordinates": conditioning.get("position") is not None,
        "super_resolution": _super_resolution_facts(conditioning, height, width, channels),
        "decoder": decoder_facts(folder, conditioning, options or {}, count_safetensors_parameters),
        "prior": prior_facts(folder, count_safetensors_parameters),  # a text-to-image unCLIP folder's
        "parameters": f"{count_safetensors_parameters(folder):,}",
        "block_out_channels": ", ".join(map(str, unet.get("block_out_channels", []))),
        "layers_per_block": unet.get("layers_per_block"),
        "attention": ", ".join(attention) or "none",
        "unet_class": unet.get("_class_name") or "UNet2DModel",
        "cross_attention": unet.get("cross_attention_dim") is not None,
        "scheduler_class": "DDPMScheduler" if sampler else scheduler.get("_class_name"),  # the chain's
        "sampler": sampler,
        "num_train_timesteps": scheduler.get("num_train_timesteps"),
        "betas": betas,
        "variance_type": scheduler.get("variance_type"),
        "prediction_type": scheduler.get("prediction_type"),
        "latent": latent,
    }


def _latent_facts(folder: Path, options: dict, latent_shape: tuple) -> dict | None:
    """
    A latent diffusion model (a `vae/` component): its autoencoder, where it came from (`--vae`: a Hub repo, or a
    local folder, trained with ddpm_hub when it holds a training record), its factor f, the latents' shape and scale.
    """
    index = read_json(folder / MODEL_INDEX, "the pipeline's model index") or {}
    if (index.get("vae") or [None])[0] is None:
        return None
    config = read_json(folder / VAE_CONFIG, "the autoencoder configuration") or {}
    factor = 2 ** (len(config.get("block_out_channels") or [None]) - 1)
    channels, height, width = latent_shape
    source, subfolder = options.get("vae"), options.get("vae_subfolder")
    inside = f" (its `{escape_markdown(subfolder)}`)" if subfolder else ""
    if not source:
        origin = "as published in this repo's `vae/`"
    elif is_local_path(source):
        trained = (Path(source).expanduser() / SUMMARY_FILE).is_file()  # a ddpm_hub run folder
        origin = f"{'trained with ddpm_hub' if trained else 'a local autoencoder'} ({code_span(Path(source).name)})"
    elif HUB_DATASET_ID.fullmatch(source):
        origin = f"[{code_span(source, in_table=True)}](https://huggingface.co/{source}){inside}"
    else:
        origin = code_span(source, in_table=True) + inside
    return {
        "vae_class": index["vae"][1],
        "parameters": f"{count_safetensors_parameters(folder, 'vae'):,}",
        "origin": origin,
        "factor": factor,
        "shape": "×".join(str(value) for value in (channels, height, width)),
        "height": height * factor if height else None,
        "width": width * factor if width else None,
        "channels": config.get("in_channels"),
        "scaling_factor": config.get("scaling_factor"),
        "shift_factor": config.get("shift_factor"),
    }


def _conditioning(folder: Path, unet: dict):
    """
    What the model is conditioned on, read as its pipeline reads it (`TrainingConditioning.of`: UNet config and index).
    """
    from ..pipelines.conditioning import TrainingConditioning

    index = read_json(folder / MODEL_INDEX, "the pipeline's model index") or {}
    components = {name: entry for name, entry in index.items() if isinstance(entry, list)}
    return TrainingConditioning.of(unet, index, components)


def _color(channels: int | None) -> str:
    return {1: "grayscale", 3: "RGB"}.get(channels, f"{channels}-channel")


def _super_resolution_facts(conditioning, height: int | None, width: int | None, channels: int | None) -> dict | None:
    """A super-resolution model: its input's size, the scale, the residual and the augmentation levels."""
    low_res = conditioning.low_res
    if low_res is None:
        return None
    return {
        "scale": low_res.scale,
        "input": f"{height // low_res.scale}×{width // low_res.scale} {_color(channels)}" if height else "smaller",
        "residual_scale": low_res.residual_scale,
        "max_noise_level": low_res.max_noise_level,
        "default_noise_level": low_res.default_noise_level,
    }


def _conditional_facts(folder: Path, summary: dict) -> dict | None:
    """A class-conditional model: its classes, its null label, the guidance scale of the grid, the guidance strip."""
    from ..pipelines.conditioning import TrainingConditioning

    unet = read_json(folder / UNET_CONFIG, "the UNet configuration") or {}
    index = read_json(folder / MODEL_INDEX, "the pipeline's model index") or {}
    classes = TrainingConditioning.of(unet, index).classes
    if classes is None:
        return None
    facts = classes.card_facts()
    return {
        **facts,
        "names": ", ".join(code_span(name, in_table=True) for name in facts["names"]) or None,
        "guidance_scale": ((summary.get("samples") or {}).get("guidance_scale")),
        "guidance_plot": GUIDANCE_FILE if (folder / GUIDANCE_FILE).is_file() else None,
    }


def _text_facts(folder: Path, summary: dict, options: dict) -> dict | None:
    """A text-to-image model: its text encoder, whether it was trained, the captions, the grid's prompts."""
    index = read_json(folder / MODEL_INDEX, "the pipeline's model index") or {}
    encoder = (index.get("text_encoder") or [None, None])[1]
    if encoder is None:
        return None
    samples = summary.get("samples") or {}
    prompts = samples.get("prompts") or []  # --validation_prompts, by default the dataset's own captions
    tokenizer = (index.get("tokenizer") or [None, None])[1]
    return {
        "encoder": code_span(encoder, in_table=True),
        "tokenizer": code_span(tokenizer, in_table=True) if tokenizer else None,
        "encoder_parameters": f"{count_safetensors_parameters(folder, 'text_encoder'):,}",
        "source": _code(options.get("text_encoder"), in_table=True),  # --text_encoder, else the configuration's own
        "trained": options.get("train_text_encoder") if options else None,
        "caption_dropout_prob": options.get("caption_dropout_prob"),
        "prompts": ", ".join(f'"{escape_markdown(prompt)}"' for prompt in prompts) or None,
        "guidance_scale": samples.get("guidance_scale"),
        "guidance_plot": GUIDANCE_FILE if (folder / GUIDANCE_FILE).is_file() else None,
        "example": (prompts or ["a prompt"])[0],
    }


def _usage_call(conditional: dict | None, summary: dict, text: dict | None, model: dict) -> str:
    """
    The arguments of the sampling call the card shows: the grid's steps (none with a saved fast sampler: its own
    calls), a class or prompt and guidance; the image to upsample or (a decoder's) to vary; an unCLIP folder's prompt.
    """
    super_resolution, sampler, decoder = model["super_resolution"], model["sampler"], model["decoder"]
    if model["prior"]:
        return prior_usage_call(model["prior"])
    if decoder:  # DDPMHubUnCLIPImageVariationPipeline's arguments
        guidance = (summary.get("samples") or {}).get("guidance_scale") or 3.0
        arguments = ['image=Image.open("canvas.png")', "num_images_per_prompt=4", f"decoder_guidance_scale={guidance}"]
        return ", ".join([*arguments, "generator=torch.manual_seed(0)"])
    arguments = ['image=Image.open("small.png")'] if super_resolution else []
    if conditional:
        example = conditional["example"]
        arguments.append(f"class_labels={python_literal(example)}" if example else "class_labels=3")
    if text:
        arguments.append(f"prompt={python_literal(text['example'])}")
    arguments.append("batch_size=4")
    if conditional and conditional["null_class_label"] is not None:
        arguments.append(f"guidance_scale={conditional['guidance_scale'] or 2.0}")
    if text:
        arguments.append(f"guidance_scale={text['guidance_scale'] or 3.0}")
    steps = (summary.get("samples") or {}).get("steps")
    if steps and sampler is None:
        arguments.append(f"num_inference_steps={steps}")
    return ", ".join([*arguments, "generator=torch.manual_seed(0)"])


def _samples_facts(folder: Path, summary: dict) -> dict | None:
    if not (folder / SAMPLES_FILE).is_file():
        return None
    samples = summary.get("samples") or {}
    return {"file": SAMPLES_FILE, "num_images": samples.get("num_images"), "steps": samples.get("steps")}


def _objective(model: dict, options: dict) -> str | None:
    """The training loss, from the scheduler config and the options (None without a training record)."""
    if not options:
        return None
    target = {"epsilon": "the noise ε", "sample": "x_0", "v_prediction": "v"}.get(model["prediction_type"])
    if model["variance_type"] == "learned_range":
        loss = "L_hybrid = L_simple + 0.001 · L_vlb (Nichol & Dhariwal 2021), learning the variance interpolation"
    else:
        loss = "L_simple (Algorithm 1, eq. 14)"
    if options.get("snr_gamma"):
        loss += f", min-SNR-γ weighting with γ = {options['snr_gamma']} (Hang et al. 2023)"
    return f"{loss}; the UNet predicts {target or model['prediction_type']}"


def _code(value, in_table: bool = False) -> str | None:
    return code_span(value, in_table) if value not in (None, "") else None


HUB_DATASET_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")  # what may be linked to https://huggingface.co/datasets/...


def _dataset_facts(summary: dict, options: dict, local: bool | None = None) -> dict | None:
    recorded = summary.get("dataset") or {}
    source = options.get("dataset_name") or recorded.get("source")
    folder = options.get("train_data_dir")
    split = f", split {code_span(options['dataset_split'])}" if options.get("dataset_split") else ""
    local = is_local_path(source) if local is None else local
    if folder:
        description, hub_id, label = f"a local image folder ({code_span(Path(folder).name)})", None, "imagefolder"
    elif source in BUILTIN_DATASETS:
        description, hub_id, label = BUILTIN_DATASETS[source], None, source
    elif source and (local or not HUB_DATASET_ID.fullmatch(source)):
        name = (Path(source).name if local else None) or source
        description, hub_id, label = f"a local dataset ({code_span(name)}){split}", None, name
    elif source:
        description = f"the Hub dataset [{code_span(source)}](https://huggingface.co/datasets/{source}){split}"
        hub_id, label = source, source
    else:
        return None
    return {
        "description": description,
        "hub_id": hub_id,
        "label": label,
        "num_images": recorded.get("num_images"),
        "num_skipped": recorded.get("num_skipped"),
        "resolution": _resolution_text(options.get("resolution")),
        "random_flip": options.get("random_flip"),
        "center_crop": None if source in BUILTIN_DATASETS and not folder else options.get("center_crop"),
    }


def _resolution_text(resolution) -> str | None:
    """`32×32`, or `8×16` (height × width) for a non-square size; None when not recorded."""
    if resolution is None:
        return None
    height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
    return f"{height}×{width}"


def _metric_rows(metrics: list[Metric]) -> list[dict] | None:
    """One row per measured metric: name, value, ± spread, images, how it was measured."""
    rows = [
        {
            "key": metric.key,
            "name": METRIC_NAMES.get(metric.key, metric.key),
            "value": f"{metric.value:.4g}",
            "number": round(metric.value, 6),
            "spread": f"{metric.spread:.2g} ({metric.spread_kind})" if metric.spread is not None else None,
            "num_images": f"{metric.num_images:,}" if metric.num_images is not None else None,
            "method": escape_markdown(metric.method) if metric.method else None,
            "dataset": escape_markdown(metric.dataset) if metric.dataset else None,
            "split": escape_markdown(metric.split) if metric.split else None,
            "command": _code(metric.command),
            "dataset_name": metric.dataset,  # raw, for the YAML metadata (`model-index`)
            "split_name": metric.split,
        }
        for metric in metrics
    ]
    return rows or None


def _eval_results(facts: dict) -> list[EvalResult]:
    """The `model-index` entries: the metrics with a dataset (their own, else the training data's)."""
    results = []
    for row in facts["metrics"] or []:
        dataset = row["dataset_name"] or (facts["dataset"] or {}).get("label")
        if dataset is None:
            continue
        results.append(
            EvalResult(
                task_type=PIPELINE_TAG,
                task_name="Unconditional image generation",
                dataset_type=dataset,
                dataset_name=dataset,
                dataset_split=row["split_name"],
                metric_type=row["key"],
                metric_name=row["name"],
                metric_value=row["number"],
            )
        )
    return results
