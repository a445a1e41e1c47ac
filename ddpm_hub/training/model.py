"""The model a run trains: the pipeline from its source with the run's overrides, its speed settings, its optimizer."""

import torch
from diffusers import UNet2DModel

from ..data.decode import image_size
from ..pipelines.source import Source
from ..shipped.conditioning_ddpm_hub import EmbeddedGuidance
from .distillation import guidance_student
from .latents import autoencoder_of, latent_size
from .options import ModelOptions, OptimizerOptions, SpeedOptions, TrainingOptions


def scheduler_overrides(model: ModelOptions) -> dict:
    """The scheduler settings the options change (prediction type, variance, T, betas); the rest is the config's."""
    overrides = {
        "prediction_type": model.prediction_type,
        "variance_type": model.variance_type,
        "num_train_timesteps": model.ddpm_num_steps,
        "beta_schedule": model.ddpm_beta_schedule,
    }
    return {k: v for k, v in overrides.items() if v is not None}


def unet_overrides(o: TrainingOptions, source: Source) -> dict:
    """
    The run's resolution as the UNet's `sample_size`; a configuration also gets 2C output channels for
    learned_range (a trained UNet keeps its channels: its weights fix them).
    """
    size = latent_size(o.data.training_size, autoencoder_of(o.model, source))
    sample_size = sample_size_config(size)
    text = text_encoder_overrides(o, source)
    if source.trained:
        return (
            {"sample_size": sample_size} if image_size(source.unet_config["sample_size"]) != image_size(size) else {}
        )
    variance_type = o.model.variance_type or source.scheduler_config.get("variance_type", "fixed_small")
    image_channels = source.conditioning().image_channels(source.unet_config["in_channels"])
    channels = image_channels * (2 if variance_type == "learned_range" else 1)
    return {"sample_size": sample_size, "out_channels": channels, **text, **image_encoder_overrides(o, source)}


def text_encoder_overrides(o: TrainingOptions, source: Source) -> dict:
    """
    --text_encoder on a configuration: the UNet's cross-attention reads that encoder's hidden states, projected to
    its `cross_attention_dim` when their widths differ (`encoder_hid_dim_type="text_proj"`).
    """
    name = o.conditioning.text_encoder
    if name is None or source.trained:
        return {}
    from ..loading.text import hidden_size, text_encoder_config

    width = hidden_size(text_encoder_config(name, **o.model.loading().download()))
    if source.unet_config.get("encoder_hid_dim_type") == "text_image_proj":  # a decoder's caption beside its embedding
        return {"encoder_hid_dim": width}
    if width == source.unet_config.get("cross_attention_dim"):
        return {}
    return {"encoder_hid_dim": width, "encoder_hid_dim_type": "text_proj"}


def image_encoder_overrides(o: TrainingOptions, source: Source) -> dict:
    """--image_encoder on a decoder configuration: the UNet reads embeddings of its width (`encoder_hid_dim`; with
    `text_image_proj`, whose encoder_hid_dim is the caption's width, the embedding's is `cross_attention_dim`)."""
    name = o.conditioning.image_encoder
    if name is None or source.trained:
        return {}
    from ..loading.image_encoder import image_encoder_config

    width = image_encoder_config(name, **o.model.loading().download()).projection_dim
    text_image = source.unet_config.get("encoder_hid_dim_type") == "text_image_proj"
    return {"cross_attention_dim" if text_image else "encoder_hid_dim": width}


def sample_size_config(resolution: int | tuple[int, int]) -> int | list[int]:
    """The UNet's `sample_size` for a resolution: an int when square (as the paper's configurations), else [H, W]."""
    return resolution if isinstance(resolution, int) else list(image_size(resolution))


def training_pipeline(o: TrainingOptions, source: Source):
    """
    The pipeline to train: a configuration built fresh from --seed, or a trained one loaded, with the overrides; a
    text model's encoder (the configuration's, or --text_encoder's) frozen unless --train_text_encoder.
    """
    pipeline = source.load(
        seed=o.seed, unet_overrides=unet_overrides(o, source), scheduler_overrides=scheduler_overrides(o.model)
    )
    autoencoder = autoencoder_of(o.model, source)
    if autoencoder is not None and autoencoder.option == "--vae":  # else the trained pipeline's own, loaded with it
        pipeline.register_modules(vae=autoencoder.load())
    if o.model.vae_scaling_factor is not None:  # checked: a latent model
        pipeline.vae.register_to_config(scaling_factor=o.model.vae_scaling_factor)
    if o.conditioning.text_encoder is not None:
        from ..loading.text import load_text_encoder

        text_encoder, tokenizer = load_text_encoder(o.conditioning.text_encoder, o.model.revision, o.model.variant)
        pipeline.register_modules(text_encoder=text_encoder, tokenizer=tokenizer)
    if o.conditioning.image_encoder is not None:  # a decoder's CLIP image encoder, frozen: --torch_dtype
        from ..loading.image_encoder import load_image_encoder

        image_encoder, feature_extractor = load_image_encoder(o.conditioning.image_encoder, o.model.loading(True))
        pipeline.register_modules(image_encoder=image_encoder, feature_extractor=feature_extractor)
    if getattr(pipeline, "image_encoder", None) is not None:
        pipeline.image_encoder.eval().requires_grad_(False)
    if o.distillation.distill_guidance is not None:  # checked: a text model's teacher (check_guided_teacher)
        pipeline.register_modules(unet=guidance_student(pipeline.unet))
        embedded = EmbeddedGuidance(pipeline.unet.config.time_cond_proj_dim, o.distillation.distill_guidance)
        pipeline.register_to_config(**embedded.settings())
    if getattr(pipeline, "text_encoder", None) is not None:
        trained = o.conditioning.train_text_encoder
        dtype = torch.float32 if trained else o.model.loading(frozen=True).dtype or torch.float32
        pipeline.text_encoder.to(dtype).train(trained).requires_grad_(trained)
    if getattr(pipeline, "vae", None) is not None:  # frozen: --torch_dtype
        pipeline.vae.to(o.model.loading(frozen=True).dtype or torch.float32)
    return pipeline


def apply_speed_settings(unet: UNet2DModel, speed: SpeedOptions, device: torch.device) -> None:
    """TF32 on GPUs; channels_last memory (faster convolutions on GPUs and on this project's CPU, see the README)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = speed.allow_tf32
        torch.backends.cudnn.allow_tf32 = speed.allow_tf32
    if speed.channels_last:
        unet.to(memory_format=torch.channels_last)
    if speed.gradient_checkpointing:  # activations recomputed in the backward pass: memory for time
        unet.enable_gradient_checkpointing()
    if speed.enable_xformers_memory_efficient_attention:
        unet.enable_xformers_memory_efficient_attention()


def make_optimizer(parameters, optimizer: OptimizerOptions, device: torch.device) -> torch.optim.Optimizer:
    """AdamW, fused into one kernel per step (CUDA, and CPU since torch 2.4: 12% of a step on this CPU)."""
    return torch.optim.AdamW(
        parameters,
        lr=optimizer.learning_rate,
        betas=(optimizer.adam_beta1, optimizer.adam_beta2),
        weight_decay=optimizer.adam_weight_decay,
        eps=optimizer.adam_epsilon,
        fused=device.type in ("cuda", "cpu"),
    )
