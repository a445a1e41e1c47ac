"""The test suite's process runner: a command whose children hang must not hang the suite (CI waited 90 minutes on
one rank of a 2-process run that torch's launcher had started in a session of its own)."""

import json
import os
import sys
import time

import psutil
import pytest
from processes import run_process_group

# Starts a child in a new session (as torch's launcher starts each rank) that inherits stdout and never ends, tells
# its pid, then waits for it.
HANGING_LAUNCHER = """
import json, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"], start_new_session=True)
print(json.dumps({"child": child.pid}), flush=True)
child.wait()
"""


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_timeout_kills_children_in_other_sessions_and_reports_the_output():
    started = time.monotonic()
    with pytest.raises(AssertionError, match="did not end within 3 s") as failure:
        run_process_group([sys.executable, "-c", HANGING_LAUNCHER], 3)
    assert time.monotonic() - started < 30
    child = json.loads(str(failure.value).split("stdout ends:\n")[1].splitlines()[0])["child"]
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


def test_a_command_that_ends_returns_its_output_and_exit_status():
    result = run_process_group([sys.executable, "-c", "import sys; print('out'); sys.exit(3)"], 60)
    assert (result.returncode, result.stdout) == (3, "out\n")


# What `python SCRIPT ARGS` shows, and what tests/warm_start.py must show the same: argv, the working directory, the
# script's folder first on sys.path, __name__, an environment variable, stdout and stderr, and the exit status.
SCRIPT = """
import os, sys
print(sys.argv[1:], os.getcwd(), sys.path[0] == os.path.dirname(os.path.abspath(__file__)), __name__)
print(os.environ.get("FAULT_PROBE"), file=sys.stderr)
how = sys.argv[1]
if how == "raise":
    raise KeyError("probe")
if how == "kill":
    import signal; os.kill(os.getpid(), signal.SIGKILL)
if how == "message":
    sys.exit("stopped: probe")
sys.exit(int(how))
"""


@pytest.mark.parametrize("how", ["0", "3", "raise", "kill", "message"])
def test_a_warm_started_script_behaves_as_a_fresh_interpreter(tmp_path, how):
    from warm_start import import_time_differences, run_warm

    script = tmp_path / "probe.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "FAULT_PROBE": "on", "OMP_NUM_THREADS": "1", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path)}
    assert not import_time_differences(env)  # what a test or a library in this process may have set is no obstacle
    warm = run_warm(script, [how, "x y"], env, tmp_path, 60)
    cold = run_process_group([sys.executable, str(script), how, "x y"], 60, cwd=tmp_path, env=env)
    assert (warm.returncode, warm.stdout) == (cold.returncode, cold.stdout), (warm, cold)
    assert warm.stderr.splitlines()[0] == cold.stderr.splitlines()[0] == "on"
    assert ("KeyError: 'probe'" in warm.stderr) == ("KeyError: 'probe'" in cold.stderr) == (how == "raise")
    assert ("stopped: probe" in warm.stderr) == (how == "message")


def test_an_environment_a_library_reads_at_import_is_not_warm_started():
    from warm_start import import_time_differences, warm_startable

    assert import_time_differences({**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}) == ["HF_HUB_OFFLINE"]
    without_home = {key: value for key, value in os.environ.items() if key != "HF_HOME"}
    assert not warm_startable({**without_home, "OMP_NUM_THREADS": "1"})
