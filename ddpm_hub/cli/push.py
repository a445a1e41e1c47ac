"""`ddpm-hub push`: publish a trained output folder to the Hugging Face Hub (`ddpm_hub.hub.publish`); the token
comes from the environment or the login cache, never from the command line.

    ddpm-hub push runs/ddpm-digits-16 --repo-id you/ddpm-digits-16 [--private] [--revision BRANCH]
"""

import argparse
import json
import logging

from ..errors import UsageError
from ..hub.model_card import DEFAULT_LICENSE
from ..hub.publishing import publish
from ..loading.hub_errors import TOKEN_ADVICE

HELP = "publish a trained output folder to the Hugging Face Hub"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output_dir", help="the pipeline folder to publish (a training run's --output_dir)")
    parser.add_argument("--repo-id", "--repo_id", dest="repo_id", required=True, help="NS/NAME (or NAME: your own)")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--revision", default=None, help="branch to commit to, created if missing (default: main)")
    parser.add_argument(
        "--commit-message",
        "--commit_message",
        dest="commit_message",
        default=None,
        help="the commit message (default: 'Upload DDPM pipeline (N training steps)')",
    )
    parser.add_argument("--token", metavar="TOKEN", default=None, help=f"not accepted: {TOKEN_ADVICE}")
    parser.add_argument(
        "--license", default=DEFAULT_LICENSE, help=f"license of the weights, for the card (default: {DEFAULT_LICENSE})"
    )


def run(args: argparse.Namespace) -> int:
    """`ddpm-hub push`: publish, print the commit URL as JSON (a PublishError reaches the command line's boundary)."""
    if args.token is not None:
        raise UsageError(f"--token is refused: {TOKEN_ADVICE}")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    url = publish(
        args.output_dir,
        repo_id=args.repo_id,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
        license=args.license,
    )
    print(json.dumps({"output_dir": args.output_dir, "repo_id": args.repo_id, "commit_url": url}))
    return 0
