"""Helper of tests/test_train.py (no tests here): runs training/train.py with test doubles installed from the
environment, so that fault injection and the Hub stand-in live in the tests, not in the product's options.

    FAKE_HUB_RECORD=<file>            `ddpm_hub.hub` is a stand-in whose `publish` appends its arguments as one JSON
                                      line (its `check_can_publish` only asks for a token)
    FAULT_KILL_AFTER_CHECKPOINT=<n>   SIGKILL this process right after the checkpoint of step n is saved
    FAULT_NONFINITE_LOSS_AT_STEP=<n>  the loss of optimizer step n becomes NaN

    python tests/launch_train.py <train.py arguments>
"""

import importlib.machinery
import json
import os
import runpy
import signal
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def publish(output_dir, repo_id=None, private=None, token=None):
    record = {"output_dir": str(output_dir), "repo_id": repo_id, "private": private, "token": token}
    record["rank"] = int(os.environ.get("RANK", "0"))
    record["has_pipeline"] = (Path(output_dir) / "model_index.json").is_file()
    with open(os.environ["FAKE_HUB_RECORD"], "a") as file:
        file.write(json.dumps(record) + "\n")
    return f"https://hub.example/{repo_id}"


def check_can_publish(repo_id, private=False, token=None):
    from ddpm_hub.errors import DDPMHubError

    if not (token or os.environ.get("HF_TOKEN")):
        raise DDPMHubError("no token")
    return repo_id


def install_fake_hub() -> None:
    import ddpm_hub
    from ddpm_hub.errors import DDPMHubError

    module = types.ModuleType("ddpm_hub.hub")
    module.__spec__ = importlib.machinery.ModuleSpec("ddpm_hub.hub", loader=None)
    module.publish, module.check_can_publish = publish, check_can_publish
    module.PublishError = type("PublishError", (DDPMHubError, RuntimeError), {})
    sys.modules["ddpm_hub.hub"] = module
    ddpm_hub.hub = module


def install_faults(kill_after: int | None, nonfinite_at: int | None) -> None:
    from ddpm_hub.training import loop

    save_checkpoint, micro_batch_loss = loop.save_checkpoint, loop.micro_batch_loss

    def save_then_maybe_kill(run, step):
        saved = save_checkpoint(run, step)
        if step == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        return saved

    def loss_maybe_nonfinite(run, m, x_0):
        loss = micro_batch_loss(run, m, x_0)
        step = m // run.options.gradient_accumulation_steps + 1
        return loss * float("nan") if step == nonfinite_at else loss

    loop.save_checkpoint, loop.micro_batch_loss = save_then_maybe_kill, loss_maybe_nonfinite


if __name__ == "__main__":
    if "FAKE_HUB_RECORD" in os.environ:
        install_fake_hub()
    faults = [os.environ.get(name) for name in ("FAULT_KILL_AFTER_CHECKPOINT", "FAULT_NONFINITE_LOSS_AT_STEP")]
    if any(faults):
        install_faults(*(int(value) if value else None for value in faults))
    script = ROOT / "training" / "train.py"
    sys.argv = [str(script), *sys.argv[1:]]
    runpy.run_path(str(script), run_name="__main__")
