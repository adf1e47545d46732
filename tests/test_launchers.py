"""Launchers on real engines: a local Ray instance and submitit's local executor (no mocks).

The same cells run by ``local``, ``ray`` and ``slurm`` (cluster=local) get the same run_ids and,
on CPU with the same seed, bit-identical accuracies and distilled supports. Workers write per-cell
files that the driver alone ingests: a killed worker's cell is retried, a killed driver loses no
finished cell and recomputes none.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from distillbench.errors import ConfigError
from distillbench.registry import load_registry
from distillbench.runner.cell import PROGRESS_SUFFIX, cells_folder, ingest, record_files
from distillbench.runner.plan import parse_overrides, plan_launcher, plan_parsed
from distillbench.runner.plan import plan as make_plan
from distillbench.runner.sweep import run_sweep
from distillbench.store.database import ResultStore

from helpers import run_cli, tiny

EIGHT = tiny("seed=0,1,2,3", "loss=mse,platt")  # 8 cells
FOUR = tiny("seed=0,1", "loss=mse,platt")  # 4 of them (the slower engines: fewer cells, same checks)
# One pytest-xdist worker runs this module: its tests share one local Ray instance.
pytestmark = pytest.mark.xdist_group("launchers")


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def _results(store_path):
    """run_id -> (status, acc, support images) of every row in a store."""
    out = {}
    with ResultStore(store_path) as store:
        for record in store.records():
            support = store.load_artifact(record).support if record.artifact else None
            out[record.run_id] = (record.status, record.metrics.acc, support.x if support is not None else None)
    return out


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for run_id in a:
        assert a[run_id][0] == b[run_id][0] == "done", run_id
        assert a[run_id][1] == b[run_id][1], run_id
        np.testing.assert_array_equal(a[run_id][2], b[run_id][2])


@pytest.fixture(scope="module")
def local_results(tmp_path_factory, registry):
    path = tmp_path_factory.mktemp("local") / "r.sqlite"
    with ResultStore(path) as store:
        run_sweep(make_plan(EIGHT, registry), registry, store)
    return _results(path)


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


# -- options, never identity ----------------------------------------------------------------------
def test_launcher_keys_are_options_not_identity(registry):
    args = ["launcher=ray", "launcher.retries=5", *tiny("seed=0,1")]
    launcher, rest = plan_launcher(parse_overrides(args), registry)
    assert rest == parse_overrides(tiny("seed=0,1"))
    assert [c.run_id for c in plan_parsed(rest, registry).configs] == \
        [c.run_id for c in make_plan(tiny("seed=0,1"), registry).configs]
    assert launcher.name == "ray" and launcher.as_dict()["retries"] == 5 and launcher.as_dict()["address"] == ""
    assert plan_launcher({}, registry)[0].name == "local"


@pytest.mark.parametrize("args, words", [
    (["launcher=rey"], "ray"),
    (["launcher=ray", "launcher.retires=2"], "retries"),
    (["launcher=ray", "launcher.retries=-1"], ">= 0"),
    (["launcher=ray,slurm"], "cannot be swept"),
    (["launcher=slurm", "launcher.cluster=kube"], "slurm, local"),
])
def test_bad_launcher_input_is_one_line(registry, args, words):
    with pytest.raises(ConfigError, match=words):
        plan_launcher(parse_overrides(args), registry)


@pytest.mark.parametrize("launcher", ["ray", "slurm"])
def test_missing_extra_is_one_line_exit_2_nothing_written(tmp_path, launcher):
    """Imports of ``ray`` and ``submitit`` blocked the way a missing package fails (ImportError)."""
    store = tmp_path / "r.sqlite"
    code = ("import sys; sys.modules['ray'] = None; sys.modules['submitit'] = None\n"
            "from distillbench.cli import main\n"
            f"sys.argv = ['distillbench', 'run', '--store', {str(store)!r}, 'launcher={launcher}', *{tiny()!r}]\n"
            "main()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 2, proc.stderr
    # (installed example plugins may add their own "distillbench: plugin ..." notices)
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith("distillbench: plugin ")]
    assert len(lines) == 1 and f'pip install "distillbench[{launcher}]"' in lines[0], proc.stderr
    assert not store.exists() and list(tmp_path.iterdir()) == []


def test_slurm_without_sbatch_is_one_line_exit_2_nothing_written(tmp_path):
    import shutil

    pytest.importorskip("submitit")
    if shutil.which("sbatch"):
        pytest.skip("SLURM is installed here")
    result = run_cli("run", "--store", str(tmp_path / "r.sqlite"), "launcher=slurm", *tiny(), cwd=tmp_path)
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("distillbench: plugin ")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "sbatch" in lines[0] and "launcher.cluster=local" in lines[0]
    assert list(tmp_path.iterdir()) == []


# -- the per-cell files ---------------------------------------------------------------------------
@pytest.mark.slow
def test_ingest_never_replaces_a_done_row(tmp_path, registry):
    """A late file of a cell already done (a previous driver's job) is dropped, not stored twice."""
    from distillbench.runner.cell import CellTask, run_cell

    config = make_plan(tiny(), registry).configs[0]
    cells = cells_folder(tmp_path / "r.sqlite")
    with ResultStore(tmp_path / "r.sqlite") as store:
        run_cell(CellTask(config, str(cells)))
        (stored,) = ingest(store, cells)
        first = store.get(config.run_id)
        assert stored.status == first.status == "done" and record_files(cells) == []
        assert list(cells.iterdir()) == []  # artifact moved into the store, progress file gone
        run_cell(CellTask(config, str(cells)))  # the same cell again, finished late
        assert ingest(store, cells) == [] and record_files(cells) == []
        assert store.get(config.run_id) == first


def test_worker_without_the_data_fails_its_cell_naming_host_and_file(tmp_path, registry):
    """A cell planned where the data is, run on a host that cannot see it: one line, host and file."""
    import socket
    from dataclasses import replace

    from distillbench.runner.cell import CellTask, run_cell
    from distillbench.runner.plan import ComponentChoice

    nowhere = tmp_path / "not-mounted"
    params = registry.get("dataset", "mnist").default_params()
    params["data_dir"] = str(nowhere)
    config = replace(make_plan(tiny(), registry).configs[0],
                     dataset=ComponentChoice("dataset", "mnist", tuple(sorted(params.items())), ("data_dir",)))
    cells = tmp_path / "cells"
    assert run_cell(CellTask(config, str(cells)))["status"] == "error"
    (path,) = record_files(cells)
    message = json.loads(path.read_text())["message"]
    assert message.startswith(f"on host {socket.gethostname()}: ") and "\n" not in message
    assert str(nowhere) in message


# -- Ray --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ray_sweep_is_bit_identical_to_local(tmp_path, registry, local_results, ray_instance):
    from distillbench.launchers.ray import RayLauncher

    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        outcomes = run_sweep(make_plan(EIGHT, registry), registry, store, launcher=RayLauncher(),
                             compile_cache=tmp_path / "cache")
    assert len(outcomes) == 8 and {o.status for o in outcomes} == {"done"}
    _assert_same(_results(path), local_results)
    assert record_files(cells_folder(path)) == []
    with ResultStore(path) as store:
        hosts = {r.environment["hostname"] for r in store.records()}
        assert len(hosts) == 1 and None not in hosts


def _kill_first_worker(cells, killed):
    """SIGKILL the worker of the first cell that reports progress, once."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not killed:
        for path in cells.glob(f"*{PROGRESS_SUFFIX}") if cells.is_dir() else []:
            try:
                info = json.loads(path.read_text())
            except ValueError:
                continue
            os.kill(info["pid"], signal.SIGKILL)
            killed.append(info)
            return
        time.sleep(0.05)


def _sweep_killing_a_worker(path, registry, retries: int):
    """Two cells on Ray, one at a time; the first worker to start a cell is SIGKILLed mid-cell.
    Returns ``(plan, outcomes, killed)``; ``killed[0]`` names the cell whose worker died."""
    from distillbench.launchers.ray import RayLauncher

    killed: list = []
    watcher = threading.Thread(target=_kill_first_worker, args=(cells_folder(path), killed), daemon=True)
    watcher.start()
    plan = make_plan(tiny("seed=0,1"), registry)
    with ResultStore(path) as store:
        outcomes = run_sweep(plan, registry, store, launcher=RayLauncher(retries=retries, max_parallel=1))
    watcher.join(1)
    assert killed, "no worker was running a cell"
    return plan, outcomes, killed


@pytest.mark.slow
def test_ray_worker_killed_mid_cell_is_retried(tmp_path, registry, local_results, ray_instance):
    path = tmp_path / "r.sqlite"
    plan, outcomes, _ = _sweep_killing_a_worker(path, registry, retries=2)
    assert {o.config.run_id: o.status for o in outcomes} == {c.run_id: "done" for c in plan.configs}
    with ResultStore(path) as store:
        pids = {r.run_id: r for r in store.records()}
    assert set(pids) == {c.run_id for c in plan.configs}
    # the killed cell's result equals the local one: a clean retry, not a half-written cell
    for run_id, (status, acc, support) in _results(path).items():
        if run_id in local_results:
            assert acc == local_results[run_id][1]


@pytest.mark.slow
def test_ray_retries_exhausted_store_error_and_others_go_on(tmp_path, registry, ray_instance):
    path = tmp_path / "r.sqlite"
    _, outcomes, killed = _sweep_killing_a_worker(path, registry, retries=0)
    statuses = sorted(o.status for o in outcomes)
    with ResultStore(path) as store:
        killed_row = store.get(killed[0]["run_id"])
    assert statuses == ["done", "error"]
    assert killed_row.status == "error" and "worker failed (ray)" in killed_row.message
    assert "\n" not in killed_row.message


@pytest.mark.slow
def test_driver_sigkilled_then_rerun_recomputes_nothing(tmp_path):
    """SIGKILL the whole driver (its local Ray instance too) mid-campaign; the same command resumes."""
    store = tmp_path / "r.sqlite"
    args = ["run", "-q", "--store", str(store), "launcher=ray", "launcher.max_parallel=1", *FOUR]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen([sys.executable, "-m", "distillbench.cli", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    before = {}
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            before = _timings(store)
            if len(before) >= 1 and len(record_files(cells_folder(store))) + len(before) >= 2:
                break
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert 1 <= len(before) < 4, "the driver ended before it could be killed mid-campaign"
    before = _timings(store)
    pending_files = [json.loads(p.read_text()) for p in record_files(cells_folder(store))]
    rerun = run_cli(*args, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    after = _timings(store)
    assert len(after) == 4 and len(_done(store)) == 4
    for run_id, timings in before.items():  # stored before the kill: untouched
        assert after[run_id] == timings
    for data in pending_files:  # finished but not ingested when the driver died: ingested, not rerun
        assert after[data["run_id"]] == data["timings"]


def _timings(store):
    if not store.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5) as conn:
            return {r: json.loads(t) for r, t in conn.execute("SELECT run_id, timings FROM runs")}
    except sqlite3.OperationalError:
        return {}


def _done(store):
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
        return [r for (r,) in conn.execute("SELECT run_id FROM runs WHERE status = 'done'")]


# -- submitit ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_submitit_local_executor_matches_local(tmp_path, registry, local_results):
    pytest.importorskip("submitit")
    from distillbench.launchers.slurm import SlurmLauncher

    path = tmp_path / "r.sqlite"
    launcher = SlurmLauncher(cluster="local", array_parallelism=2, folder=str(tmp_path / "jobs"))
    with ResultStore(path) as store:
        outcomes = run_sweep(make_plan(FOUR, registry), registry, store, launcher=launcher)
    assert len(outcomes) == 4 and {o.status for o in outcomes} == {"done"}
    got = _results(path)
    _assert_same(got, {k: v for k, v in local_results.items() if k in got})
    assert any((tmp_path / "jobs").glob("*_log.out"))  # submitit's files, directly in the folder given
    assert not [p for p in (tmp_path / "jobs").rglob("*") if "%" in p.name]  # no literal "%j" folder left


class _TwiceLauncher:
    """A third-party launcher through the contract: each cell runs in this process, and a second,
    late copy of it finishes after the first was stored (a killed driver's job still running)."""

    name = "twice"
    in_process = False
    memory_fraction = None

    def run(self, tasks, finished, tick, folder):
        from distillbench.runner.cell import run_cell

        for task in tasks:
            run_cell(task)
            finished(task, None)
            run_cell(task)
            finished(task, None)
            tick()


@pytest.mark.slow
def test_a_late_second_copy_of_a_cell_is_not_stored_twice(tmp_path, registry):
    path = tmp_path / "r.sqlite"
    plan = make_plan(tiny("seed=0,1"), registry)
    with ResultStore(path) as store:
        outcomes = run_sweep(plan, registry, store, launcher=_TwiceLauncher())
        rows = {r.run_id: r for r in store.records()}
    assert [o.status for o in outcomes] == ["done", "done"]  # one outcome per cell, not two
    assert set(rows) == {c.run_id for c in plan.configs}
    assert record_files(cells_folder(path)) == []
    # the row is the first copy's: its timings are those the first finished() reported
    assert [rows[o.config.run_id].timings["wall_s"] for o in outcomes] == [o.timings["wall_s"] for o in outcomes]


def test_live_view_shows_counts_and_each_running_cells_host_device_step(tmp_path, registry):
    import io

    from rich.console import Console

    from distillbench.launchers.progress import CampaignView
    from distillbench.records import RunResult

    configs = make_plan(tiny("seed=0,1,2"), registry).configs
    cells = tmp_path / "cells"
    cells.mkdir()
    info = {"run_id": configs[1].run_id, "host": "node-7", "pid": 1, "device": "gpu:0 H100", "step": 40,
            "steps": 300, "label": configs[1].label()}
    (cells / f"{configs[1].run_id}{PROGRESS_SUFFIX}").write_text(json.dumps(info))
    out = io.StringIO()
    view = CampaignView(Console(file=out, force_terminal=True, width=200))
    view.start(configs, cells)
    view.finished(RunResult(configs[0], "done"))
    view.refresh()
    text = view._render()
    view.stop()
    console = Console(file=io.StringIO(), width=200)
    console.print(text)
    shown = console.file.getvalue()
    assert "queued 1  running 1  done 1  failed 0" in shown
    assert "node-7" in shown and "gpu:0 H100" in shown and "40/300" in shown and "ETA" in shown
