"""The test suite's process runner: a command whose children hang must not hang the suite (CI waited 90 minutes on
one rank of a 2-process run that torch's launcher had started in a session of its own)."""

import json
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
