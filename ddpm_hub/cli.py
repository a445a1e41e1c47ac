"""The `ddpm-hub` command line: info, sample, noise, inpaint, img2img (`ddpm_hub.commands`), eval
(`ddpm_hub.evaluation`) and push (`ddpm_hub.hub`)."""

import argparse
import json
import sys

from .commands import COMMANDS
from .configs import available_pipelines, build_pipeline, count_parameters, resolve_pipeline_config
from .errors import DDPMHubError
from .evaluation import add_eval_arguments, run_eval
from .hub import add_push_arguments, run_push


def _info(args: argparse.Namespace) -> int:
    """Parameter count and key settings of a pipeline configuration folder."""
    pipeline = build_pipeline(args.pipeline, seed=None)
    unet, scheduler = pipeline.unet.config, pipeline.scheduler.config
    info = {
        "pipeline": str(resolve_pipeline_config(args.pipeline)),
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddpm-hub", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("info", help="parameter count and settings of a pipeline configuration")
    info.add_argument("pipeline", help=f"a pipelines/<name> folder or a name: {', '.join(available_pipelines())}")
    info.set_defaults(func=_info)

    for name, (description, add_arguments, run) in COMMANDS.items():
        command = commands.add_parser(name, help=description)
        add_arguments(command)
        command.set_defaults(func=run)

    evaluate = commands.add_parser("eval", help="bits/dim (--bpd), FID/KID (--fid), the sampler sweep (--sweep)")
    add_eval_arguments(evaluate)
    evaluate.set_defaults(func=run_eval)

    push = commands.add_parser("push", help="publish a trained output folder to the Hugging Face Hub")
    add_push_arguments(push)
    push.set_defaults(func=run_push)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; the project's own errors (`DDPMHubError`) become one line and their exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # argparse: --help (0) or a bad option (2), already printed
        return exit.code
    try:
        return args.func(args)
    except DDPMHubError as error:
        print(f"ddpm-hub {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
