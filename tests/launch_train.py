"""Helper of tests/test_training_runs.py and others (no tests here): runs training/train.py with test doubles
installed from the environment, so that fault injection and the Hub stand-in live in the tests, not in the product's
options.

    FAKE_HUB_RECORD=<file>            `ddpm_hub.hub` is a stand-in whose `publish` appends its arguments as one JSON
                                      line (its `check_can_publish` only asks for a token)
    FAULT_KILL_AFTER_CHECKPOINT=<n>   SIGKILL this process right after the checkpoint of step n is saved
    FAULT_NONFINITE_LOSS_AT_STEP=<n>  the loss of optimizer step n becomes NaN
    FAULT_NONFINITE_WEIGHTS_AT_STEP=<n>  after optimizer step n, one weight tensor becomes NaN (the loss was finite)
    FAULT_DISK_FULL_AT_CHECKPOINT=<n> from the checkpoint of step n on, files may not grow past 4 kB (RLIMIT_FSIZE:
                                      writes fail with EFBIG, as on a full disk)
    CLOSE_RECORD=<file>               `close_accelerator` appends one JSON line per rank: how many DDP models were
                                      alive before it and after it, and whether the process group was still there

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


def record_close() -> None:
    """Wrap `close_accelerator`: the process group must outlive every DDP model (its reducer), and be gone after."""
    import gc

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from ddpm_hub.training import run

    close_accelerator = run.close_accelerator

    def ddp_alive() -> int:
        return sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())

    def close_and_record(accelerator):
        before = ddp_alive()
        close_accelerator(accelerator)
        record = {"rank": int(os.environ.get("RANK", "0")), "ddp_before": before, "ddp_after": ddp_alive()}
        record["group_after"] = dist.is_initialized()
        with open(os.environ["CLOSE_RECORD"], "a") as file:
            file.write(json.dumps(record) + "\n")

    run.close_accelerator = close_and_record


def install_faults(faults: dict[str, int]) -> None:
    import resource

    import torch

    from ddpm_hub.training import loop

    save_checkpoint, micro_batch_loss, optimizer_step = (
        loop.save_checkpoint,
        loop.micro_batch_loss,
        loop.optimizer_step,
    )

    def save_with_faults(run, step):
        if step == faults.get("DISK_FULL_AT_CHECKPOINT"):
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        saved = save_checkpoint(run, step)
        if step == faults.get("KILL_AFTER_CHECKPOINT"):
            os.kill(os.getpid(), signal.SIGKILL)
        return saved

    def loss_with_faults(run, m, x_0, values):
        loss = micro_batch_loss(run, m, x_0, values)
        step = m // run.options.batches.gradient_accumulation_steps + 1
        return loss * float("nan") if step == faults.get("NONFINITE_LOSS_AT_STEP") else loss

    def step_with_faults(run, micro_batches):
        result = optimizer_step(run, micro_batches)
        if micro_batches[-1][0] // run.options.batches.gradient_accumulation_steps + 1 == faults.get(
            "NONFINITE_WEIGHTS_AT_STEP"
        ):
            with torch.no_grad():
                next(run.unet.parameters()).fill_(float("nan"))
        return result

    loop.save_checkpoint, loop.micro_batch_loss, loop.optimizer_step = (
        save_with_faults,
        loss_with_faults,
        step_with_faults,
    )


if __name__ == "__main__":
    if "FAKE_HUB_RECORD" in os.environ:
        install_fake_hub()
    faults = {name[len("FAULT_") :]: int(value) for name, value in os.environ.items() if name.startswith("FAULT_")}
    if faults:
        install_faults(faults)
    if "CLOSE_RECORD" in os.environ:
        record_close()
    script = ROOT / "training" / "train.py"
    sys.argv = [str(script), *sys.argv[1:]]
    runpy.run_path(str(script), run_name="__main__")
