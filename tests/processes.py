"""Run a command whose children must not outlive it (accelerate launch starts one process per rank)."""

import os
import signal
import subprocess


def run_process_group(command: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """
    `subprocess.run(command, capture_output=True, text=True, timeout=...)`, except that on a timeout the whole
    process group is killed: a rank left waiting in a collective after its launcher is gone would wait forever.
    """
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
