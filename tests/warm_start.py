"""
Single-process runs of a script (`python training/train.py ...`) without paying its imports each time.

Most of a tiny training run's ten seconds here is importing torch, diffusers, transformers, accelerate and datasets.
`run_warm` has each run forked by a server process (tests/warm_start_server.py) that imported those third-party
libraries once, in the environment the suite started with; the child then does what `python SCRIPT ARGS` does: its
own session, its own stdout and stderr, `sys.argv`, the script's folder first on `sys.path`, the working directory,
`runpy` with `__name__ == "__main__"`, the exit status of `SystemExit` (1 and a traceback for any other exception),
atexit handlers, and death by a signal reported as the negative signal number. ddpm_hub itself is imported fresh by
every run (never by the server), so the test doubles tests/launch_train.py installs still take.

A library reads some of the environment when it is imported (HF_HOME, HF_HUB_OFFLINE, ...): a run whose environment
differs from the suite's in such a variable (`IMPORT_TIME_VARIABLES`) is not warm-started (`warm_startable`); the
caller then starts a fresh interpreter as before.
"""

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from processes import kill_tree

# Variables some library reads when it is imported (or the interpreter when it starts): a run whose environment
# differs from the server's in one of these starts a fresh interpreter. Others (what tests/launch_train.py reads, what
# a library sets in the suite's own process, as scikit-learn's KMP_ or torch's TORCHINDUCTOR_CACHE_DIR) are read when
# used.
IMPORT_TIME_VARIABLES = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "DIFFUSERS_", "DATASETS_", "TOKENIZERS_", "TORCH_",
                         "PYTORCH_", "CUDA_", "XDG_", "HOME", "PYTHON", "LD_", "OMP_", "MKL_")  # fmt: skip
SERVER = Path(__file__).resolve().parent / "warm_start_server.py"
SUITE_ENVIRONMENT = dict(os.environ)  # as tests/conftest.py left it: this module is imported while collecting
_server = None


def warm_startable(env: dict) -> bool:
    """Whether a run with this full environment may be forked by the server (see the module's docstring)."""
    return not import_time_differences(env)


def import_time_differences(env: dict) -> list[str]:
    """The variables read at import in which `env` differs from the environment the server started with."""
    server = {**SUITE_ENVIRONMENT, "OMP_NUM_THREADS": "1"}
    keys = sorted(set(env) | set(server))
    differing = [key for key in keys if env.get(key) != server.get(key) and key != "PYTHONPATH"]
    return [key for key in differing if key.startswith(IMPORT_TIME_VARIABLES)]


def server() -> subprocess.Popen:
    """The server, started on first use with the suite's environment; it ends when the suite closes its stdin."""
    global _server
    if _server is None or _server.poll() is not None:
        env = {**SUITE_ENVIRONMENT, "OMP_NUM_THREADS": "1"}  # as run_script's runs have it
        _server = subprocess.Popen(
            [sys.executable, str(SERVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=env, text=True,
        )  # fmt: skip
    return _server


def run_warm(script: Path, args: list[str], env: dict, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """`python script *args` in `cwd` with `env`, forked by the server; as `processes.run_process_group`."""
    command = [sys.executable, str(script), *args]
    with tempfile.TemporaryDirectory(prefix="ddpm_hub_run_") as folder:
        out, err = Path(folder) / "stdout", Path(folder) / "stderr"
        request = {"script": str(script), "args": list(args), "env": env, "cwd": str(cwd)}
        process = server()
        process.stdin.write(json.dumps({**request, "stdout": str(out), "stderr": str(err)}) + "\n")
        process.stdin.flush()
        reply = process.stdout.readline()  # the pid (after the server's imports, on its first request)
        if not reply.strip().isdigit():
            raise AssertionError(f"tests/warm_start_server.py ended ({reply!r}); run {SERVER} to see why.")
        pid = int(reply)
        deadline = time.monotonic() + timeout
        try:
            ready, _, _ = select.select([process.stdout], [], [], timeout)
            if not ready:
                kill_tree(pid)
                process.stdout.readline()
                raise AssertionError(
                    f"{command[:6]}... did not end within {timeout} s; its processes were killed.\n"
                    f"stdout ends:\n{_read(out)[-3000:]}\nstderr ends:\n{_read(err)[-6000:]}"
                )
            status = int(process.stdout.readline())
        except BaseException:  # interrupted (pytest-timeout, Ctrl-C): leave nothing running
            if time.monotonic() < deadline:
                kill_tree(pid)
                process.kill()
            raise
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        return subprocess.CompletedProcess(command, code, _read(out), _read(err))


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""
