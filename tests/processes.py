"""Run a command whose children must not outlive it (accelerate launch starts one process per rank)."""

import os
import signal
import subprocess

import psutil


def run_process_group(command: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """
    `subprocess.run(command, capture_output=True, text=True, timeout=...)`, except that on a timeout every process
    the command started is killed, and the error shows the end of what it printed. torch's launcher starts each rank
    in a session of its own, so killing the launcher's process group is not enough: a rank left waiting in a
    collective (or at exit) would keep the pipes open, and the test would wait for it forever.
    """
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(process.pid)
        stdout, stderr = process.communicate()
        raise AssertionError(
            f"{command[:6]}... did not end within {timeout} s; its processes were killed.\n"
            f"stdout ends:\n{stdout[-3000:]}\nstderr ends:\n{stderr[-6000:]}"
        ) from None
    except BaseException:  # interrupted (pytest-timeout, Ctrl-C): leave nothing running
        kill_tree(process.pid)
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def kill_tree(pid: int) -> None:
    """SIGKILL a process, its process group and all its descendants, whatever session they are in."""
    try:
        root = psutil.Process(pid)
        processes = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(processes, timeout=10)
