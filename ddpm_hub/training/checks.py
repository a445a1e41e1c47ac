"""Checks that need no model: everything a user can get wrong fails here, in seconds, before any work is done."""

import importlib.util
from dataclasses import fields, replace
from pathlib import Path

from ..data.decode import image_size, size_text
from ..errors import InputNotFoundError, UsageError
from ..loading.settings import LoadSettings
from ..options import check_ranges
from ..pipelines.source import ModelLoadError, Source
from ..run_folder import CHECKPOINTS_DIR, check_apart_from_sources, check_writable_folder
from ..shipped.samplers_ddpm_hub import carries_ddpm_chain
from ..shipped.scheduling_ddpm_hub import VARIANCE_TYPES, is_ddpm_family
from .checkpoint_folders import TrainingState, list_checkpoints
from .distillation import check_teacher, distill_options
from .latents import autoencoder_of, check_autoencoder, pixel_size
from .model import scheduler_overrides, unet_overrides
from .options import TrainingOptions
from .prior_options import PriorOptions
from .trackers import check_trackers


def check_options(o: TrainingOptions) -> tuple[TrainingOptions, Source]:
    """All the checks, in order of cost; returns the options with the pipeline's defaults filled in."""
    check_ranges(o)
    if o.prior != PriorOptions():
        given = [
            f"--{f.name}" for f in fields(PriorOptions) if getattr(o.prior, f.name) != getattr(PriorOptions(), f.name)
        ]
        raise UsageError(
            f"{', '.join(given)}: options of a prior (--pipeline a configuration with prior/config.json, such as "
            f"ddpm-unclip-digit-pairs-prior); --pipeline {o.model.pipeline} is not one."
        )
    o = distill_options(o)  # --distill_from: the teacher is the pipeline, the student predicts v
    o.data.check()
    check_streaming_run(o)
    check_environment(o)
    source = inspect_pipeline(o.model.pipeline, o.model.loading())
    check_output_apart_from_sources(o, source)  # before the checkpoints' advice: resuming there would not help
    check_output_dir(o)
    autoencoder = autoencoder_of(o.model, source)  # latent diffusion: its config only
    o = replace(o, data=o.data.resolved(resolution=pixel_size(source.unet_config["sample_size"], autoencoder)))
    if autoencoder is not None:
        check_autoencoder(autoencoder, source, o.data.training_size)
    elif o.model.vae_scaling_factor is not None:
        raise UsageError(
            f"--vae_scaling_factor applies to latent models (--vae, or a trained latent pipeline); --pipeline "
            f"{o.model.pipeline} trains in pixels."
        )
    check_random_crop(o)
    o = resolve_class_dropout(o, source)
    o = resolve_text_options(o, source)
    o = resolve_low_res_options(o, source)
    o = resolve_image_embeds_options(o, source)
    check_model_compatibility(o, source)
    check_teacher(o, source)
    return o, source


def inspect_pipeline(name: str, settings: LoadSettings | None = None) -> Source:
    """`--pipeline` resolved (`ddpm_hub.pipelines.source`) at --revision: its configs read, no weights loaded."""
    try:
        return Source.of(name, settings)
    except ModelLoadError as error:
        raise UsageError(f"--pipeline {name!r}: {error}") from error


def check_random_crop(o: TrainingOptions) -> None:
    """A random crop is smaller than the decoded images (or as large)."""
    crop = o.data.random_crop
    if crop is None:
        return
    if any(c > r for c, r in zip(image_size(crop), image_size(o.data.resolution))):
        raise UsageError(
            f"--random_crop {size_text(crop)} is larger than the decoded images ({size_text(o.data.resolution)}, "
            "--resolution): crop at most that, or decode larger."
        )


def check_streaming_run(o: TrainingOptions) -> None:
    """A stream has no known length, no index to hold images out by, and is read in the training process."""
    if not o.data.streaming:
        return
    refused = {
        "--max_train_steps is required (a stream's length is not known, so --num_epochs cannot set it)": (
            o.length.max_train_steps is None
        ),
        f"--validation_holdout {o.validation.validation_holdout} needs a decoded dataset": (
            o.validation.validation_holdout > 0
        ),
        f"--max_images {o.data.max_images} applies to decoded datasets": o.data.max_images is not None,
        f"--dataloader_num_workers {o.batches.dataloader_num_workers} must be 0 (each rank reads its stream in "
        "order, so that a checkpoint holds its exact position)": o.batches.dataloader_num_workers > 0,
    }
    problems = [text for text, wrong in refused.items() if wrong]
    if problems:
        raise UsageError(f"--streaming: {'; '.join(problems)}.")


def resolve_class_dropout(o: TrainingOptions, source: Source) -> TrainingOptions:
    """Label dropout applies to a class-conditional UNet only; there it defaults to 0.1 (Ho & Salimans 2022)."""
    dropout = o.conditioning.class_dropout_prob
    if source.conditioning().classes is None:
        if dropout:
            raise UsageError(
                f"--class_dropout_prob {dropout} applies to class-conditional models; {o.model.pipeline} has no class "
                "embedding. Use a -cond configuration, e.g. ddpm-digits-16-cond."
            )
        return o
    return o if dropout is not None else o.changed("conditioning", class_dropout_prob=0.1)


def resolve_text_options(o: TrainingOptions, source: Source) -> TrainingOptions:
    """
    The text options apply to a text-to-image model only (a UNet with cross-attention); there caption dropout
    defaults to 0.1, and --text_encoder must name a text encoder (its config read here, before any work).
    """
    c = o.conditioning
    text_model = source.conditioning().prompts is not None
    given = {
        f"--caption_dropout_prob {c.caption_dropout_prob}": c.caption_dropout_prob,
        f"--text_encoder {c.text_encoder}": c.text_encoder is not None,
        "--train_text_encoder": c.train_text_encoder,
        "--validation_prompts": c.validation_prompts is not None,
    }
    if not text_model:
        wrong = [name for name, value in given.items() if value]
        if wrong:
            raise UsageError(
                f"{', '.join(wrong)}: text options apply to text-to-image models; {o.model.pipeline} has no "
                "cross-attention (a UNet2DModel). Use a text configuration, e.g. ddpm-digit-pairs-text."
            )
        return o
    if c.text_encoder is not None:
        if source.trained:
            raise UsageError(
                f"--text_encoder {c.text_encoder}: {o.model.pipeline} is trained with its own text encoder; "
                "fine-tune it with that one (leave --text_encoder out)."
            )
        from ..loading.text import text_encoder_config

        text_encoder_config(c.text_encoder, **o.model.loading().download())  # not a text encoder: a message now
    elif "text_encoder" not in source.components or source.components["text_encoder"][0] is None:
        decoder = source.conditioning().image_embeds is not None  # DALL-E 2's: the caption beside the embedding
        kind = "decoder reading captions too" if decoder else "text-to-image configuration"
        example = (
            "the CLIP of --image_encoder, runs/ddpm-unclip-digit-pairs-clip" if decoder else "google/t5-v1_1-base"
        )
        raise UsageError(
            f"{o.model.pipeline} is a {kind} without a text encoder: give --text_encoder NAME_OR_PATH (a transformers "
            f"text encoder and its tokenizer, e.g. {example})."
        )
    return o if c.caption_dropout_prob is not None else o.changed("conditioning", caption_dropout_prob=0.1)


CLEAN_LOW_RES_PROB = 0.8  # the default share of clean inputs of a super-resolution model (README: measured)


def resolve_low_res_options(o: TrainingOptions, source: Source) -> TrainingOptions:
    """--clean_low_res_prob applies to a super-resolution model only; there it defaults to `CLEAN_LOW_RES_PROB`."""
    share = o.conditioning.clean_low_res_prob
    if source.conditioning().low_res is None:
        if share is not None:
            raise UsageError(
                f"--clean_low_res_prob {share} applies to super-resolution models; {o.model.pipeline} takes no "
                "low-resolution image. Use an SR configuration, e.g. ddpm-sr-16-to-64."
            )
        return o
    return o if share is not None else o.changed("conditioning", clean_low_res_prob=CLEAN_LOW_RES_PROB)


def resolve_image_embeds_options(o: TrainingOptions, source: Source) -> TrainingOptions:
    """
    The decoder's options (a UNet conditioned on a CLIP image embedding) apply to a decoder only; there embedding
    dropout defaults to 0.1, and its image encoder is --image_encoder (its config read here) or the pipeline's own.
    """
    c = o.conditioning
    given = [f"--{name} {value}" for name, value in vars(c).items() if name.startswith("image_") and value is not None]
    if source.conditioning().image_embeds is None:
        if given:
            raise UsageError(
                f"{', '.join(given)}: these apply to decoders (a UNet conditioned on a CLIP image embedding); "
                f"{o.model.pipeline} is not one. Use e.g. ddpm-unclip-digit-pairs-decoder."
            )
        return o
    if autoencoder_of(o.model, source) is not None:  # the encoder would embed latents, not the images it was made for
        raise UsageError(
            f"{o.model.pipeline} is a decoder: it trains in pixels (each image embedded by CLIP), not --vae."
        )
    if c.image_encoder is not None:
        if source.trained:
            raise UsageError(
                f"--image_encoder {c.image_encoder}: {o.model.pipeline} was trained on its own image encoder's "
                "embeddings; fine-tune it with that one (leave --image_encoder out)."
            )
        from ..loading.image_encoder import image_encoder_config

        image_encoder_config(c.image_encoder, **o.model.loading().download())  # not a CLIP: a message now
    elif (source.components.get("image_encoder") or [None])[0] is None:
        raise UsageError(
            f"{o.model.pipeline} is a decoder configuration without an image encoder: give --image_encoder "
            "NAME_OR_PATH (a CLIPModel or CLIPVisionModelWithProjection, e.g. runs/ddpm-unclip-digit-pairs-clip)."
        )
    return o if c.image_embed_dropout_prob is not None else o.changed("conditioning", image_embed_dropout_prob=0.1)


def check_environment(o: TrainingOptions) -> None:
    """Optional packages and the Hub token: things that would otherwise fail after the model is built."""
    check_trackers(o.logging.report_to)
    if o.speed.enable_xformers_memory_efficient_attention and importlib.util.find_spec("xformers") is None:
        raise UsageError(
            "--enable_xformers_memory_efficient_attention needs the xformers package (pip install xformers)."
        )
    if o.hub.push_to_hub:
        check_can_publish(o)


def check_can_publish(o: TrainingOptions) -> None:
    """--push_to_hub: the token, its write access and the namespace are checked before training, not after it."""
    from .. import hub

    try:
        hub.check_can_publish(hub_repo_id(o), private=o.hub.hub_private_repo)
    except UsageError as error:  # the repo id (--hub_model_id, or the name of --output_dir)
        raise UsageError(f"--push_to_hub (--hub_model_id): {error}") from None
    except hub.PublishError as error:
        raise UsageError(f"--push_to_hub: {error}") from error


def hub_repo_id(o: TrainingOptions) -> str:
    return o.hub.hub_model_id or Path(o.output_dir).resolve().name


def check_output_dir(o: TrainingOptions) -> None:
    check_writable_folder(Path(o.output_dir), "--output_dir")
    checkpoints = list_checkpoints(Path(o.output_dir, CHECKPOINTS_DIR))
    resume = o.checkpoints.resume_from_checkpoint
    if resume is None and checkpoints and not o.overwrite_output_dir:
        raise UsageError(
            f"--output_dir {o.output_dir} holds checkpoints of an earlier run ({checkpoints[-1].name}, ...). "
            "Continue it with --resume_from_checkpoint latest, start over with --overwrite_output_dir (deletes "
            "them), or choose another --output_dir."
        )
    if resume is not None and o.overwrite_output_dir:
        raise UsageError("--resume_from_checkpoint and --overwrite_output_dir contradict each other; give one.")
    if resume not in (None, "latest"):
        path = Path(resume)
        if not path.is_dir():
            raise InputNotFoundError(
                f"--resume_from_checkpoint {resume!r} is not a folder; give a {CHECKPOINTS_DIR}/checkpoint-<step> "
                "folder or 'latest'."
            )
        TrainingState.read(path)  # not a checkpoint of this script: a message naming the folder


def run_sources(o: TrainingOptions, source: Source) -> dict[str, tuple[str, str]]:
    """The local folders a run reads, by the option that names them, with what writing into each would do."""
    sources = {}
    if source.kind != "hub":  # a configuration or a trained folder (the teacher, when distilling)
        if o.distillation.distill_from is not None:
            sources["--distill_from"] = (
                source.location,
                "the student would replace the teacher's weights and configs",
            )
        else:
            sources["--pipeline"] = (source.location, "the trained model would overwrite the one it starts from")
    data = {"--train_data_dir": o.data.train_data_dir, "--dataset_name": o.data.dataset_name}
    for option, folder in data.items():
        if folder is not None and Path(folder).is_dir():
            sources[option] = (folder, "the run's samples.png and checkpoints would become training images")
    text_encoder = o.conditioning.text_encoder
    if text_encoder is not None and Path(text_encoder).is_dir():
        sources["--text_encoder"] = (text_encoder, "the saved pipeline would be written over the encoder's folder")
    image_encoder = o.conditioning.image_encoder
    if image_encoder is not None and Path(image_encoder).is_dir():
        sources["--image_encoder"] = (image_encoder, "the saved pipeline would be written over the encoder's folder")
    if o.model.vae is not None and Path(o.model.vae).is_dir():
        sources["--vae"] = (o.model.vae, "the saved pipeline would be written over the autoencoder's folder")
    return sources


def check_output_apart_from_sources(o: TrainingOptions, source: Source) -> None:
    """--output_dir is none of the folders the run reads, nor inside one, nor around one (`run_sources`)."""
    check_apart_from_sources(Path(o.output_dir), "--output_dir", run_sources(o, source))


def check_model_compatibility(o: TrainingOptions, source: Source) -> None:
    unet = source.unet_config
    downsamplings = len(unet["block_out_channels"]) - 1
    autoencoder = autoencoder_of(o.model, source)
    multiple = 2**downsamplings * (autoencoder.factor if autoencoder else 1)  # in pixels: a latent is factor x factor
    if any(side % multiple for side in image_size(o.data.training_size)):
        option = "--random_crop" if o.data.random_crop else "--resolution"
        raise UsageError(
            f"{option} {size_text(o.data.training_size)} does not fit the UNet of {o.model.pipeline}: it halves the "
            f"image {downsamplings} times, so the resolution must be a multiple of {multiple} in height and width "
            f"(its sample_size is {unet['sample_size']})."
        )
    scheduler = {**source.scheduler_config, **scheduler_overrides(o.model)}
    student = source.scheduler_config.get("_class_name") == "DDIMScheduler"  # a distilled student's own sampler
    if not (_trains_on_the_ddpm_chain(source) or student and o.distillation.distill_from is not None):
        raise UsageError(
            f"{o.model.pipeline}: training needs a DDPMHubScheduler or DDPMScheduler, not "
            f"{scheduler.get('_class_name')}"
            + (" (a distilled student trains only as the teacher of a further --distill_from)." if student else ".")
        )
    variance_type = scheduler.get("variance_type", "fixed_small")
    if variance_type not in VARIANCE_TYPES:
        raise UsageError(
            f"{o.model.pipeline}: variance_type {variance_type!r} samples here but does not train: training takes "
            f"{', '.join(VARIANCE_TYPES)}; choose one with --variance_type."
        )
    out_channels = unet_overrides(o, source).get("out_channels", unet["out_channels"])
    wanted = source.conditioning().image_channels(unet["in_channels"]) * (2 if variance_type == "learned_range" else 1)
    if out_channels != wanted:
        raise UsageError(
            f"variance_type {variance_type} needs a UNet with {wanted} output channels; the trained UNet of "
            f"{o.model.pipeline} has {out_channels}. Keep the pipeline's variance_type to fine-tune it."
        )
    num_timesteps = scheduler.get("num_train_timesteps", 1000)
    if o.validation.ddpm_num_inference_steps > num_timesteps:
        raise UsageError(
            f"--ddpm_num_inference_steps {o.validation.ddpm_num_inference_steps} exceeds the {num_timesteps} "
            "training timesteps."
        )


def _trains_on_the_ddpm_chain(source: Source) -> bool:
    from ..loading.components import scheduler_class

    try:
        klass = scheduler_class(source.model_index["scheduler"], source.location)
    except UsageError:
        return False
    # a trained model's fast default sampler (`ddpm_hub.pipelines.sampling.default_sampler`) carries its chain
    return is_ddpm_family(klass) or carries_ddpm_chain(klass.__name__, source.scheduler_config)
