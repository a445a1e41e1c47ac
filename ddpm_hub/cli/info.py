"""`ddpm-hub info`: the parameter count and key settings of a pipeline configuration (a name or a folder); for a
latent model (a `vae/` component), its autoencoder and both shapes: the latents the chain runs on, the images decoded.

ddpm-hub info ddpm-cifar10-32
"""

import argparse
import json

from ..loading.configs import available_pipelines, count_parameters
from ..pipelines.source import Source
from ..shipped.latents_ddpm_hub import latent_factors, vae_scale_factor

HELP = "parameter count and settings of a pipeline configuration"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", help=f"a pipelines/<name> folder or a name: {', '.join(available_pipelines())}")


def run(args: argparse.Namespace) -> int:
    """Parameter count and key settings of a pipeline configuration folder."""
    source = Source.of(args.pipeline)
    pipeline = source.build(seed=None)
    unet, scheduler = pipeline.unet.config, pipeline.scheduler.config
    info = {
        "pipeline": source.location,
        "parameters": count_parameters(pipeline.unet),
        "resolution": unet.sample_size,
        "channels": pipeline.image_channels,
        "beta_schedule": scheduler.beta_schedule,
        "variance_type": scheduler.variance_type,
        "prediction_type": scheduler.prediction_type,
        "num_train_timesteps": scheduler.num_train_timesteps,
    }
    if getattr(pipeline, "vae", None) is not None:
        info.update(latent_info(pipeline))
    if getattr(pipeline, "text_encoder", None) is not None:
        info["text_encoder"] = type(pipeline.text_encoder).__name__
        info["text_encoder_parameters"] = count_parameters(pipeline.text_encoder)
    print(json.dumps(info, indent=2))
    return 0


def latent_info(pipeline) -> dict:
    """A latent model's images (resolution and channels are the decoded image's), latents and autoencoder."""
    latent_shape, image_shape = pipeline.latent_shape(1)[1:], pipeline.sample_shape(1)[1:]
    scaling_factor, shift_factor = latent_factors(pipeline.vae)
    return {
        "resolution": image_shape[1] if image_shape[1] == image_shape[2] else list(image_shape[1:]),
        "channels": image_shape[0],
        "image_shape": list(image_shape),
        "latent_shape": list(latent_shape),
        "vae": type(pipeline.vae).__name__,
        "vae_parameters": count_parameters(pipeline.vae),
        "vae_scale_factor": vae_scale_factor(pipeline.vae),
        "scaling_factor": scaling_factor,
        "shift_factor": shift_factor,
    }
