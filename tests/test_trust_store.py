"""Issue 13: a stored number is never silently wrong.

Artifacts belong to one store; a cached result is served only for the data it was computed on;
what evaluated a run is the one stored and shown; a run below its random subset is flagged; a
failure to save one cell never stops the others; ``--debug`` keeps the traceback.
"""

import io
import json
import os
import sqlite3
import stat
import types

import numpy as np
import pytest
from rich.console import Console

from distillbench import Component, hookimpl
from distillbench.components.datasets import DataSplit
from distillbench.components.kernels import Kernel
from distillbench.registry import load_registry
from distillbench.reports.console import ConsoleReporter
from distillbench.reports.leaderboard import build_leaderboard, leaderboard_from_stores, load_runs
from distillbench.runner.plan import plan
from distillbench.runner.reporter import Reporter
from distillbench.runner.sweep import run_sweep
from distillbench.store.database import ResultStore

from helpers import make_plugin_dist, run_cli, tiny

# -- a plugin with a dataset read from a file (its path is not part of the identity, like a data
# directory) and a kernel without an arch ---------------------------------------------------------
DATA_FILE = {"path": None}


def _build_filedata():
    with np.load(DATA_FILE["path"]) as f:
        return DataSplit(f["x_train"], f["y_train"], f["x_test"], f["y_test"], 3)


def _linear_kernel_fn(x1, x2, key):
    return x1.reshape(len(x1), -1) @ x2.reshape(len(x2), -1).T


@hookimpl
def _components():
    return [
        Component(kind="dataset", name="filedata", summary="s", build=_build_filedata),
        Component(kind="kernel", name="linear", summary="s", build=lambda: Kernel(kernel_fn=_linear_kernel_fn)),
    ]


PLUGIN = types.ModuleType("trust_plugin")
PLUGIN.distillbench_components = _components


@pytest.fixture(scope="module")
def registry():
    return load_registry(entry_points=False, extra=(PLUGIN,))


def _write_data(path, seed):
    rng = np.random.default_rng(seed)
    y_train, y_test = np.arange(60, dtype=np.int32) % 3, np.arange(30, dtype=np.int32) % 3
    np.savez(path, x_train=(rng.normal(size=(60, 4, 4, 1)) + y_train[:, None, None, None]).astype(np.float32),
             y_train=y_train, x_test=(rng.normal(size=(30, 4, 4, 1)) + y_test[:, None, None, None]).astype(np.float32),
             y_test=y_test)


class Collecting(Reporter):
    def __init__(self):
        self.notices = []

    def notice(self, line):
        self.notices.append(line)


# -- defect 1: artifacts of different stores ------------------------------------------------------
@pytest.mark.slow
def test_two_stores_in_one_folder_never_touch_each_others_artifacts(registry, tmp_path):
    """The issue's scenario: s1 done, then s2 (same run_id) times out in the same folder."""
    with ResultStore(tmp_path / "s1.sqlite") as s1:
        (done,) = run_sweep(plan(tiny("objective.steps=20"), registry), registry, s1)
        assert done.status == "done"
        record = s1.get(done.config.run_id)
        path = s1.artifact_path(record)
        before = path.read_bytes()
    with ResultStore(tmp_path / "s2.sqlite") as s2:
        (timed,) = run_sweep(plan(tiny("objective.steps=20", "timeout=0.001"), registry), registry, s2)
        assert timed.status == "timeout" and timed.config.run_id == done.config.run_id
        assert s2.artifact_path(s2.get(timed.config.run_id)).parent.name == "s2.sqlite.artifacts"
    with ResultStore(tmp_path / "s1.sqlite") as s1:
        record = s1.get(done.config.run_id)
        assert record.status == "done" and s1.artifact_path(record) == path
        assert path.read_bytes() == before  # byte for byte
        assert s1.load_artifact(record).support.x.shape == (3, 4, 4, 1)


@pytest.mark.slow
def test_a_rerun_writes_a_new_artifact_and_removes_the_old_one_only_after_commit(registry, tmp_path):
    p = plan(tiny("objective.steps=2"), registry)
    with ResultStore(tmp_path / "r.sqlite") as store:
        (first,) = run_sweep(p, registry, store)
        old = store.artifact_path(store.get(first.config.run_id))
        run_sweep(p, registry, store, force=True)
        new = store.artifact_path(store.get(first.config.run_id))
        assert new != old and new.exists() and not old.exists()
        assert sorted(f.name for f in store._artifact_dir.iterdir()) == [new.name]


def test_artifacts_get_the_store_permissions(tmp_path):
    from test_store import result, support

    path = tmp_path / "r.sqlite"
    ResultStore(path).close()
    os.chmod(path, 0o640)
    with ResultStore(path) as store:
        record = store.save(result("a", artifact=support(np.ones((3, 1)))))
        assert stat.S_IMODE(store.artifact_path(record).stat().st_mode) == 0o640
        assert stat.S_IMODE(store._artifact_dir.stat().st_mode) == 0o750


KILLED_SAVE = """
import os, sys
import numpy as np
from distillbench.store import database
from test_store import result, support

def die(*args, **kwargs):  # the process dies after the artifact is written, before its row commits
    os._exit(9)

store = database.ResultStore(sys.argv[1])
real_write = database.write_npz
def write_then_die(path, arrays, mode=None):
    real_write(path, arrays, mode)
    (path.parent / (path.name + "k1lled.tmp")).write_bytes(b"half-written")
    die()
database.write_npz = write_then_die
store.save(result("b", artifact=support(np.ones((2, 1)))))
"""


def test_opening_removes_what_a_killed_save_left_and_nothing_else(tmp_path):
    """Only files the store committed to making (their names pending) are deleted at the next open;
    a file someone else put in the folder, or an older release's orphan, stays (``store check`` lists it)."""
    import subprocess
    import sys

    from test_store import result, support

    with ResultStore(tmp_path / "r.sqlite") as store:
        kept = store.artifact_path(store.save(result("a", artifact=support(np.ones((2, 1))))))
        (store._artifact_dir / "b-123.npz").write_bytes(b"not made by this store")
        (store._artifact_dir / "c-1.npzab12.tmp").write_bytes(b"not made by this store either")
    killed = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(tmp_path / "r.sqlite")],
                            cwd=os.path.dirname(__file__), capture_output=True, text=True)
    assert killed.returncode == 9, killed.stderr
    left = sorted(f.name for f in (tmp_path / "r.sqlite.artifacts").iterdir())
    assert any(n.startswith("b-") and n.endswith(".npz") and n != "b-123.npz" for n in left), left
    shared = tmp_path / "artifacts"  # the folder older versions shared between stores: never touched
    shared.mkdir()
    (shared / "zzz.npz").write_bytes(b"another store's")
    with ResultStore(tmp_path / "r.sqlite") as store:
        assert sorted(f.name for f in store._artifact_dir.iterdir()) == sorted([kept.name, "b-123.npz",
                                                                                "c-1.npzab12.tmp"])
        assert store._conn.execute("SELECT COUNT(*) FROM pending_artifacts").fetchone()[0] == 0
    assert (shared / "zzz.npz").exists()


def test_a_schema_1_store_is_upgraded_with_its_rows(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript("""
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO meta VALUES ('schema_version', '1');
            CREATE TABLE runs (run_id TEXT PRIMARY KEY, finished_at TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('done', 'error', 'diverged', 'timeout')), message TEXT,
                dataset TEXT NOT NULL, objective TEXT NOT NULL, kernel TEXT NOT NULL, loss TEXT NOT NULL,
                evaluator TEXT NOT NULL, ipc INTEGER NOT NULL, seed INTEGER NOT NULL, acc REAL, random_acc REAL,
                config TEXT NOT NULL, metrics TEXT NOT NULL, timings TEXT NOT NULL, environment TEXT NOT NULL,
                artifact TEXT);
        """)
        from test_store import CONFIG, result

        conn.execute("INSERT INTO runs VALUES ('r1', '2024-01-01T00:00:00+00:00', 'done', NULL, 'd', 'o', 'k', 'l',"
                     " 'e', 1, 0, 0.5, 0.4, ?, '{\"acc\": 0.5}', '{}', '{}', 'artifacts/r1.npz')", (json.dumps(CONFIG),))
    from distillbench.store.database import open_existing

    reader = open_existing(path)  # read-only, as `report` opens it: old columns are enough
    assert [r.run_id for r in reader.records()] == ["r1"] and reader.get("r1").data_fingerprint is None
    reader.close()
    with ResultStore(path) as store:
        (record,) = store.records()
        assert (record.run_id, record.metrics, record.artifact) == ("r1", {"acc": 0.5}, "artifacts/r1.npz")
        assert record.data_fingerprint is None and record.traceback is None
        store.save(result("r2", "interrupted", message="interrupted by SIGTERM"))
        assert store.get("r2").status == "interrupted"


# -- defect 2: the data fingerprint ---------------------------------------------------------------
@pytest.mark.slow
def test_changed_data_is_rerun_not_served_from_the_cache(registry, tmp_path):
    DATA_FILE["path"] = tmp_path / "data.npz"
    _write_data(DATA_FILE["path"], seed=0)
    p = plan(["dataset=filedata", "objective.steps=2"], registry)
    with ResultStore(tmp_path / "r.sqlite") as store:
        (first,) = run_sweep(p, registry, store)
        assert first.status == "done" and len(first.data_fingerprint) == 32
        assert store.get(first.config.run_id).data_fingerprint == first.data_fingerprint
        reporter = Collecting()
        (again,) = run_sweep(p, registry, store, reporter)
        assert again.cached and reporter.notices == []

        _write_data(DATA_FILE["path"], seed=1)  # same command, different files
        reporter = Collecting()
        (changed,) = run_sweep(p, registry, store, reporter)
        assert not changed.cached and changed.status == "done"
        assert changed.data_fingerprint != first.data_fingerprint
        assert reporter.notices == [
            f"re-running {p.configs[0].label()}: data changed since the cached run (fingerprint "
            f"{first.data_fingerprint[:12]} -> {changed.data_fingerprint[:12]})"]
        assert store.get(first.config.run_id).data_fingerprint == changed.data_fingerprint

        DATA_FILE["path"] = tmp_path / "missing.npz"  # the data no longer loads: not served either
        reporter = Collecting()
        (gone,) = run_sweep(p, registry, store, reporter)
        assert not gone.cached and gone.status == "error"
        assert len(reporter.notices) == 1 and "the data no longer loads" in reporter.notices[0]


# -- the evaluation that ran ----------------------------------------------------------------------
@pytest.mark.slow
def test_the_evaluation_that_ran_is_stored_and_shown(registry, tmp_path):
    """A kernel without arch: nn trains convnet3 (reports used to say fc1); krr uses nngp(fc1) and says so."""
    args = tiny("kernel=linear", "objective.steps=2", "dataset.height=8", "dataset.width=8")
    sweep = plan([*args, "evaluator=nn,krr", "evaluator.width=4", "evaluator.steps=2", "evaluator.seeds=2"],
                 registry)
    out = io.StringIO()
    reporter = ConsoleReporter(console=Console(file=out, width=400), err_console=Console(file=io.StringIO()))
    with ResultStore(tmp_path / "r.sqlite") as store:
        nn, krr = run_sweep(sweep, registry, store, reporter)
    assert nn.status == krr.status == "done", (nn.message, krr.message)
    assert nn.metrics["eval_arch"] == "convnet3" and "eval_kernel" not in nn.metrics
    assert (krr.metrics["eval_kernel"], krr.metrics["eval_arch"]) == ("nngp", "fc1")
    text = out.getvalue()
    assert "eval nn convnet3" in text and "eval krr nngp(fc1)" in text
    assert "kernel 'linear' has no arch, so it was evaluated with nngp(fc1), not with itself" in text
    board = leaderboard_from_stores([tmp_path / "r.sqlite"])
    assert sorted(r.evaluator for _, r in board.all_rows()) == ["krr(nngp, fc1)", "nn(convnet3)"]


# -- gain below zero ------------------------------------------------------------------------------
def test_a_done_run_below_its_random_subset_is_flagged(registry, tmp_path):
    from distillbench.reports import formats
    from distillbench.records import Metrics, RunResult

    (config,) = plan(tiny("seed=4"), registry).configs
    outcome = RunResult(config, metrics=Metrics(acc=0.30, random_acc=0.50, gain=-0.20))
    out = io.StringIO()
    reporter = ConsoleReporter(console=Console(file=out, width=300), err_console=Console(file=io.StringIO()))
    reporter.run_finished(1, 1, config.label(), outcome)
    reporter.sweep_finished([outcome])
    text = out.getvalue()
    assert "gain -20.00) WARNING: below the random subset" in text
    assert "done, below the random subset" in text and "-20.00 !" in text

    with ResultStore(tmp_path / "r.sqlite") as store:
        store.save(outcome)
    runs, _ = load_runs([tmp_path / "r.sqlite"])
    (row,) = [r for _, r in build_leaderboard(runs).all_rows()]
    assert row.status_text == "1/1 done; 1 below random (seed 4)"
    board = build_leaderboard(runs)
    assert "-20.00 ± n/a !" in formats.to_markdown(board)
    assert "1 below random (seed 4)" in formats.to_csv(board)


# -- a failure to save one cell -------------------------------------------------------------------
def test_a_cell_that_cannot_be_saved_does_not_stop_the_sweep(registry, tmp_path):
    path = tmp_path / "r.sqlite"
    ResultStore(path).close()
    (tmp_path / "r.sqlite.artifacts").write_text("a file where the artifact folder belongs")
    err = io.StringIO()
    reporter = ConsoleReporter(console=Console(file=io.StringIO()), err_console=Console(file=err, width=80))
    with ResultStore(path) as store:
        outcomes = run_sweep(plan(tiny("seed=0,1"), registry), registry, store, reporter)
        assert [o.status for o in outcomes] == ["error", "error"]
        assert all(o.message.startswith("not saved: ") for o in outcomes)
        assert store.count() == 0
    lines = err.getvalue().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: synthetic kip/ntk(fc1)/mse ipc=1 seed=") for line in lines)
    assert not any("Error:" in line or "Traceback" in line for line in lines)


# -- --debug: the traceback of a plugin kernel that raises ----------------------------------------
FRAGILE = """
    from distillbench import Component, hookimpl

    @hookimpl
    def distillbench_components():
        return [Component(kind="kernel", name="fragile", summary="s", build="fragile_plugin_impl:build")]
"""
FRAGILE_IMPL = """\
from distillbench.components.kernels import Kernel


def kernel_fn(x1, x2, key):
    if x1.shape[0] > 8:  # fine on a few images, fails on a real batch
        raise ValueError("fragile kernel cannot take more than 8 rows")
    return x1.reshape(len(x1), -1) @ x2.reshape(len(x2), -1).T


def build():
    return Kernel(kernel_fn=kernel_fn)
"""


@pytest.mark.slow
def test_debug_prints_and_stores_the_traceback_of_a_plugin_kernel(tmp_path):
    site = make_plugin_dist(tmp_path / "site", "fragile-plugin", "fragile_plugin", FRAGILE)
    (site / "fragile_plugin_impl.py").write_text(FRAGILE_IMPL)
    env = {"PYTHONPATH": str(site)}
    store = tmp_path / "r.sqlite"
    args = ("run", "-q", "--store", str(store), *tiny("kernel=fragile"))

    plain = run_cli(*args, cwd=tmp_path, env_extra=env)
    assert plain.returncode == 1, plain.stdout + plain.stderr
    (line,) = plain.stderr.splitlines()  # one plain line: the run, the plugin, what went wrong
    assert line.startswith("error: synthetic kip/fragile/mse ipc=1 seed=0"), line
    assert line.endswith(": kernel 'fragile' (fragile-plugin 0.1): fragile kernel cannot take more than 8 rows"), line
    assert "ValueError" not in line
    with sqlite3.connect(store) as conn:
        (status, traceback), = conn.execute("SELECT status, traceback FROM runs").fetchall()
    assert status == "error" and "Traceback (most recent call last)" in traceback
    assert "fragile_plugin_impl.py" in traceback and "ValueError: fragile kernel cannot" in traceback

    for how, extra in (("--debug", {}), ("env", {"DISTILLBENCH_DEBUG": "1"})):
        flags = ("--debug",) if how == "--debug" else ()
        debug = run_cli(*args[:2], *flags, *args[2:], cwd=tmp_path, env_extra={**env, **extra})
        assert debug.returncode == 1, debug.stdout + debug.stderr
        assert debug.stderr.startswith("error: synthetic kip/fragile/mse"), (how, debug.stderr)
        assert "Traceback (most recent call last)" in debug.stderr, how
        assert 'fragile_plugin_impl.py", line 6, in kernel_fn' in debug.stderr, how
