"""SIGINT and SIGTERM stop a sweep cleanly: the running cell is stored as `interrupted`, the
summary of what finished is printed, one line says how to resume, and re-running retries it."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from helpers import run_cli, tiny

#: A short cell that finishes, then one that would run for a long time.
SWEEP = tiny("objective.steps=3,1000000")
MESSAGE = "interrupted: finished runs are saved; re-run the same command to resume"


def _statuses(path):
    try:
        with sqlite3.connect(path, timeout=5) as conn:
            return dict(conn.execute("SELECT json_extract(config, '$.objective.params.steps'), status FROM runs"))
    except sqlite3.OperationalError:
        return {}


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stores_the_running_cell_as_interrupted(tmp_path, signum):
    store = tmp_path / "r.sqlite"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", COLUMNS="200")
    proc = subprocess.Popen([sys.executable, "-m", "distillbench.cli", "run", "-q", "--store", str(store), *SWEEP],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while _statuses(store).get(3) != "done" and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(1.0)  # the long cell is compiling or stepping
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)

    assert proc.returncode == 128 + signum, stderr
    assert stderr.splitlines()[-1] == MESSAGE and stderr.count(MESSAGE) == 1, stderr
    assert "Traceback" not in stderr + stdout and "KeyboardInterrupt" not in stderr
    name = signal.Signals(signum).name
    assert "interrupted: synthetic kip/ntk(fc1)/mse ipc=1 seed=0 dataset." in stderr  # labels name what was set
    assert f"objective.steps=1000000: interrupted by {name}; re-run to retry" in stderr
    assert "distillbench results" in stdout  # the summary of what finished
    assert "done" in stdout and f"interrupted: interrupted by {name}" in stdout
    assert _statuses(store) == {3: "done", 1000000: "interrupted"}
    with sqlite3.connect(store) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    if signum == signal.SIGTERM:  # re-running retries the interrupted cell (a timeout now ends it)
        again = run_cli("run", "--store", str(store), *SWEEP, "timeout=1", cwd=tmp_path)
        assert again.returncode == 1, again.stderr
        assert "cached" in again.stdout
        assert _statuses(store) == {3: "done", 1000000: "timeout"}
