"""`ddpm-hub info`: the parameter count and key settings of a pipeline configuration (a name or a folder).

ddpm-hub info ddpm-cifar10-32
"""

import argparse
import json

from ..loading.configs import available_pipelines, count_parameters
from ..pipelines.source import Source

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
    if getattr(pipeline, "text_encoder", None) is not None:
        info["text_encoder"] = type(pipeline.text_encoder).__name__
        info["text_encoder_parameters"] = count_parameters(pipeline.text_encoder)
    print(json.dumps(info, indent=2))
    return 0
