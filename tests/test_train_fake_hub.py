"""Helper of tests/test_train.py (no tests here): runs training/train.py with a stand-in `ddpm_hub.hub` module.

    python tests/test_train_fake_hub.py <train.py arguments>     # FAKE_HUB_RECORD=<file> receives one JSON line a call

The stand-in's `publish(output_dir, repo_id, private, token)` records its arguments (its `check_can_publish` only
asks for a token), so that a test can check that
`--push_to_hub` calls it once, from the main process, with `--hub_private_repo` and `--hub_token` passed through.
"""

import importlib.machinery
import json
import os
import runpy
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def publish(output_dir, repo_id=None, private=None, token=None):
    record = {"output_dir": str(output_dir), "repo_id": repo_id, "private": private, "token": token}
    record["rank"] = int(os.environ.get("RANK", "0"))
    record["has_pipeline"] = (Path(output_dir) / "model_index.json").is_file()
    with open(os.environ["FAKE_HUB_RECORD"], "a") as file:
        file.write(json.dumps(record) + "\n")
    return f"https://hub.example/{repo_id}"


class PublishError(RuntimeError):
    pass


def check_can_publish(repo_id, private=False, token=None):
    if not token:
        raise PublishError("no token")
    return repo_id


def install_fake_hub() -> None:
    module = types.ModuleType("ddpm_hub.hub")
    module.__spec__ = importlib.machinery.ModuleSpec("ddpm_hub.hub", loader=None)
    module.publish = publish
    module.check_can_publish = check_can_publish
    module.PublishError = PublishError
    sys.modules["ddpm_hub.hub"] = module


if __name__ == "__main__":
    install_fake_hub()
    script = ROOT / "training" / "train.py"
    sys.argv = [str(script), *sys.argv[1:]]
    runpy.run_path(str(script), run_name="__main__")
