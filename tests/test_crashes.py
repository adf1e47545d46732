"""A cell that kills its process (a segfault in a library, the OOM killer) does not take the rest of
the sweep with it on every re-run: the next run records what happened to that cell, goes on with
the others and says how to retry it (distillbench.runner.crashes)."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys

import pytest

from distillbench.runner import crashes

from helpers import make_plugin_dist, run_cli, tiny

PLUGIN = """
    from distillbench import Component, Param, hookimpl

    @hookimpl
    def distillbench_components():
        return [Component(kind="kernel", name="crashy", summary="dies with SIGSEGV when told to",
                          params=[Param("die", str, "no", "no, segv or kill")],
                          build="crashy_impl:build")]
"""
IMPL = """
import os, signal
from distillbench.components.kernels import Kernel

def build(die="no"):
    if die != "no":
        os.kill(os.getpid(), {"segv": signal.SIGSEGV, "kill": signal.SIGKILL}[die])
    return Kernel(kernel_fn=lambda x1, x2, key: (x1.reshape(len(x1), -1) @ x2.reshape(len(x2), -1).T))
"""


def _site(tmp_path):
    site = make_plugin_dist(tmp_path / "site", "crashy-plugin", "crashy_plugin", PLUGIN)
    (site / "crashy_impl.py").write_text(IMPL)
    return {"PYTHONPATH": str(site)}


def _rows(store):
    with sqlite3.connect(store) as conn:
        return dict(conn.execute("SELECT json_extract(config, '$.kernel.params.die'), status || ': ' || "
                                 "COALESCE(message, '') FROM runs"))


@pytest.mark.slow
def test_a_segfaulting_cell_is_recorded_skipped_and_retried_on_request(tmp_path):
    env, store = _site(tmp_path), tmp_path / "r.sqlite"
    args = ("run", "--store", str(store), *tiny("kernel=crashy", "kernel.die=segv,no"))
    first = run_cli(*args, cwd=tmp_path, env_extra=env)
    assert first.returncode == -signal.SIGSEGV, first.stderr[-2000:]  # the process is gone: nothing to do there
    second = run_cli(*args, cwd=tmp_path, env_extra=env)
    assert second.returncode == 1, second.stderr[-2000:]  # one cell failed, the sweep finished
    rows = _rows(store)
    assert rows["no"] == "done: "
    assert rows["segv"] == ("error: the process died with SIGSEGV in this cell; later runs skip it "
                            "(add --retry-crashed to run it again)")
    third = run_cli(*args, cwd=tmp_path, env_extra=env)  # skipped: it does not kill this run
    assert third.returncode == 1 and "died with SIGSEGV" in third.stdout + third.stderr
    again = run_cli(*args, "--retry-crashed", cwd=tmp_path, env_extra=env)
    assert again.returncode == -signal.SIGSEGV  # run again, as asked
    assert "Traceback" not in second.stderr + third.stderr


@pytest.mark.slow
def test_a_killed_process_is_always_retried(tmp_path):
    """A death without a fatal signal or an OOM kill on record (a user's kill -9, a machine that
    stopped) is retried like an interrupted cell, however often: a kill never costs a result."""
    env, store = _site(tmp_path), tmp_path / "r.sqlite"
    args = ("run", "--store", str(store), *tiny("kernel=crashy", "kernel.die=kill,no"))
    for _ in range(3):
        assert run_cli(*args, cwd=tmp_path, env_extra=env).returncode == -signal.SIGKILL
    assert not _rows(store)  # nothing stored: the cell never ended, and it was never skipped


def _dead_marker(store, run_id, **fields):
    """A marker of a process that has exited, as ``crashes.watching`` writes it."""
    folder = crashes.markers_folder(store)
    folder.mkdir(exist_ok=True)
    pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                             text=True).stdout)
    marker = folder / f"{run_id}.{pid}.json"
    marker.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), **fields}))
    return marker


def test_an_oom_kill_while_the_cell_ran_makes_it_a_crash(tmp_path):
    now = crashes.oom_kills()
    if now is None:
        pytest.skip("no out-of-memory counter readable here")
    store = tmp_path / "r.sqlite"
    _dead_marker(store, "grew", oom_kills=now - 1)  # the counter grew while it ran
    quiet = _dead_marker(store, "same", oom_kills=now)
    assert crashes.crash_report(store, "grew").startswith(
        "the process was killed by the kernel's out-of-memory killer (SIGKILL) in this cell")
    assert crashes.crash_report(store, "same") is None and not quiet.exists()  # judged: retried, forgotten


@pytest.mark.slow
def test_a_done_cell_is_never_replaced_by_a_crash_record(tmp_path):
    store = tmp_path / "r.sqlite"
    assert run_cli("run", "--store", str(store), *tiny(), cwd=tmp_path).returncode == 0
    with sqlite3.connect(store) as conn:
        (run_id,) = conn.execute("SELECT run_id FROM runs").fetchone()
    marker = _dead_marker(store, run_id)
    marker.with_suffix(".fault").write_text("Fatal Python error: Segmentation fault\n")
    forced = run_cli("run", "--store", str(store), "--force", *tiny(), cwd=tmp_path)
    assert forced.returncode == 1
    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT status FROM runs").fetchall() == [("done",)]


def test_markers_of_live_processes_other_hosts_and_foreign_files_are_never_judged(tmp_path):
    store = tmp_path / "r.sqlite"
    folder = crashes.markers_folder(store)
    folder.mkdir()
    here = socket.gethostname()
    (folder / f"a.{os.getpid()}.json").write_text(json.dumps({"pid": os.getpid(), "host": here}))
    (folder / "b.1.json").write_text(json.dumps({"pid": 1, "host": "another-host"}))
    (folder / "c.99.json").write_text("not json")
    (folder / "d.7.json").write_text(json.dumps({"pid": 8, "host": here}))  # name and pid disagree
    for run_id in "abcd":
        assert crashes.crash_report(store, run_id) is None
        crashes.clear(store, run_id)
    assert sorted(p.name for p in folder.iterdir()) == [f"a.{os.getpid()}.json", "b.1.json", "c.99.json", "d.7.json"]
