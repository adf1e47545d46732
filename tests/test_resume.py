"""A sweep killed with SIGKILL keeps every finished row; re-running resumes from there."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from distillbench.store.database import ResultStore

from helpers import run_cli, tiny

SWEEP = tiny("seed=0,1,2,3", "objective.steps=400")


def _done_rows(path):
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM runs WHERE status='done'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.slow
def test_sigkill_mid_sweep_then_resume(tmp_path):
    store = tmp_path / "results.sqlite"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen([sys.executable, "-m", "distillbench.cli", "run", "-q", "--store", str(store), *SWEEP],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while _done_rows(store) < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    with sqlite3.connect(store) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with ResultStore(store) as opened:
        survivors = {r.run_id: r for r in opened.records()}
        assert 1 <= len(survivors) < 4
        for record in survivors.values():
            assert record.status == "done"
            assert opened.load_artifact(record).support.x.shape[0] == 3

    result = run_cli("run", "--store", str(store), *SWEEP, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("cached") >= len(survivors)
    with ResultStore(store) as opened:
        records = {r.run_id: r for r in opened.records()}
        assert len(records) == 4 and all(r.status == "done" for r in records.values())
        for run_id, before in survivors.items():  # earlier results untouched
            assert records[run_id].finished_at == before.finished_at
            assert records[run_id].metrics == before.metrics
