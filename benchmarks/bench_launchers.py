"""Launchers: per-cell overhead of ``ray`` over ``local``, the shared compile cache, and the bars of
a 12-cell digits sweep run by ``local``, ``ray`` and ``slurm`` (submitit's local executor).

* ``overhead``: N cells (seeds) one at a time: ``local`` in this process, then ``ray`` with
  ``max_parallel=1`` (each cell submitted when the previous one is stored). Per-cell wall time is
  the interval between two stored cells as the driver sees them; the first ``--warm`` cells of
  each are dropped (JAX import, worker start). Bar: median(ray) - median(local) <= 0.5 s.
* ``compile-cache``: one identical cell twice, each in a fresh Ray worker process (``max_calls=1``)
  sharing one new persistent-cache folder: ``compile_s`` of the second against the first (aim
  <= 0.3x), and the same pair without the cache.
* ``kill-driver`` / ``kill-worker``: the same 12 cells with ``ray``, the driver SIGKILLed (with
  its Ray instance) once 4 cells are stored and the command re-run; or one worker SIGKILLed
  mid-cell. Counts finished cells recomputed, cells ``done``, accuracies against ``local``.
* ``sweep``: the 12-cell digits sweep under ``local``, ``ray`` (local instance, 2 workers) and
  ``slurm`` (``cluster=local``) through the CLI, each into its own store: rc, cells ``done`` and
  whether every cell's accuracy and distilled support are identical to ``local``'s.

Usage: python benchmarks/bench_launchers.py [overhead|compile-cache|sweep|kill-driver|kill-worker|all]
       [--cells 8] [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common import banner, median  # noqa: E402

SWEEP = ["dataset=digits", "seed=0,1,2,3,4,5", "ipc=1,2"]  # 12 cells


class _Clock:
    """A reporter that notes when each cell is stored (the driver's view)."""

    def __init__(self):
        from distillbench.runner.reporter import Reporter

        class Stamp(Reporter):
            def __init__(self):
                self.times = []

            def sweep_started(self, total):
                self.times.append(time.perf_counter())

            def run_finished(self, index, total, label, outcome):
                self.times.append(time.perf_counter())

        self.reporter = Stamp()

    def intervals(self, warm: int) -> list[float]:
        t = self.reporter.times
        return [b - a for a, b in zip(t, t[1:])][warm:]


def overhead(cells: int, steps: int, warm: int) -> None:
    import ray

    from distillbench.launchers.ray import RayLauncher
    from distillbench.registry import load_registry
    from distillbench.runner.plan import plan as make_plan
    from distillbench.runner.sweep import run_sweep
    from distillbench.store.database import ResultStore

    registry = load_registry()
    plan = make_plan(["dataset=digits", f"seed={','.join(map(str, range(cells)))}", f"objective.steps={steps}"],
                     registry)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, launcher in (("local", None), ("ray", "ray")):
            clock = _Clock()
            with ResultStore(Path(tmp) / f"{name}.sqlite") as store:
                if launcher:
                    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
                    launcher = RayLauncher(max_parallel=1)
                run_sweep(plan, registry, store, clock.reporter, launcher=launcher)
                if launcher:
                    ray.shutdown()
            out[name] = clock.intervals(warm)
    banner(f"per-cell wall time, {cells} digits cells of {steps} steps, first {warm} dropped")
    for name, values in out.items():
        print(f"{name:<6} median {median(values):.3f} s  ({', '.join(f'{v:.2f}' for v in values)})")
    extra = median(out["ray"]) - median(out["local"])
    print(f"ray overhead per cell: {extra:+.3f} s (bar <= 0.5 s: {'met' if extra <= 0.5 else 'NOT met'})")


def compile_cache(steps: int) -> None:
    import json

    import ray

    from distillbench.registry import load_registry
    from distillbench.runner.cell import CellTask, record_files, run_cell
    from distillbench.runner.plan import plan as make_plan

    registry = load_registry()
    (config,) = make_plan(["dataset=digits", f"objective.steps={steps}"], registry).configs
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    fresh = ray.remote(max_calls=1)(run_cell)  # each call in a new worker process
    banner("compile_s of one identical cell, twice, each in a fresh worker process")
    try:
        for cached in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                cells = Path(tmp) / "cells"
                cache = str(Path(tmp) / "cache") if cached else None
                times = []
                for _ in range(2):
                    ray.get(fresh.remote(CellTask(config, str(cells), compile_cache=cache)))
                    (path,) = record_files(cells)
                    timings = json.loads(path.read_text())["timings"]
                    times.append((timings["compile_s"], timings["wall_s"]))
                    path.unlink()
                label = "shared cache" if cached else "no cache    "
                (c1, w1), (c2, w2) = times
                print(f"{label}: compile_s first {c1:.3f} s, second {c2:.3f} s, ratio {c2 / c1:.2f}x"
                      + (f" (aim <= 0.3x: {'met' if c2 <= 0.3 * c1 else 'NOT met'})" if cached else "")
                      + f"; cell wall_s {w1:.2f} s -> {w2:.2f} s")
    finally:
        ray.shutdown()
    _compile_split(steps)


_SPLIT = """
import json, sys, time
import jax
from pathlib import Path
from distillbench.registry import load_registry
from distillbench.runner.cell import CellTask, record_files, run_cell
from distillbench.runner.plan import plan
xla = []
compile_ = jax.stages.Lowered.compile
def timed(self, *args, **kwargs):
    t = time.perf_counter()
    out = compile_(self, *args, **kwargs)
    xla.append(time.perf_counter() - t)
    return out
jax.stages.Lowered.compile = timed  # the step's AOT compile (execute: lower(...).compile())
(config,) = plan(["dataset=digits", "objective.steps=%d"], load_registry()).configs
run_cell(CellTask(config, sys.argv[1] + "/cells", compile_cache=sys.argv[1] + "/cache"))
(path,) = record_files(Path(sys.argv[1]) / "cells")
print(json.dumps([json.loads(path.read_text())["timings"]["compile_s"], max(xla)]))
path.unlink()
"""


def _compile_split(steps: int) -> None:
    """Where compile_s goes: XLA's compile (what the persistent cache skips) vs tracing and lowering."""
    import json

    with tempfile.TemporaryDirectory() as tmp:
        got = [json.loads(subprocess.run([sys.executable, "-c", _SPLIT % steps, tmp], capture_output=True,
                                         text=True, check=True).stdout.strip().splitlines()[-1]) for _ in range(2)]
    (c1, x1), (c2, x2) = got
    print(f"split (fresh processes, shared cache): longest XLA compile (the step) {x1:.3f} s -> {x2:.3f} s "
          f"({x2 / x1:.2f}x); tracing+lowering {c1 - x1:.3f} s -> {c2 - x2:.3f} s (not cached)")


def sweep(steps: int) -> None:
    from distillbench.store.database import open_existing

    args = [*SWEEP, f"objective.steps={steps}"]
    runs = {"local": [], "ray": ["launcher=ray"], "slurm": ["launcher=slurm", "launcher.cluster=local",
                                                             "launcher.array_parallelism=2"]}
    banner(f"12-cell digits sweep ({' '.join(args)})")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in runs.items():
            store = Path(tmp) / f"{name}.sqlite"
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "distillbench.cli", "run", "-q", "--store", str(store),
                                   *args, *extra], capture_output=True, text=True)
            wall = time.perf_counter() - t
            with open_existing(store) as s:
                rows = {r.run_id: (r.status, r.metrics.get("acc"), s.load_artifact(r).support.x.tobytes()
                                   if r.artifact else None) for r in s.records()}
            results[name] = rows
            done = sum(1 for status, _, _ in rows.values() if status == "done")
            same = ""
            if name != "local":
                base = results["local"]
                acc = all(k in rows and rows[k][1] == v[1] for k, v in base.items())
                support = all(k in rows and rows[k][2] == v[2] for k, v in base.items())
                same = f"; accuracies identical: {acc}, supports identical: {support}"
            print(f"{name:<6} rc {proc.returncode}; {done}/{len(rows)} done; wall {wall:.1f} s{same}")
            if proc.returncode != 0:
                print(proc.stderr[-1500:])


def _rows(store):
    import json
    import sqlite3

    if not Path(store).exists():
        return {}
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5) as conn:
            return {r: (st, json.loads(t)) for r, st, t in conn.execute("SELECT run_id, status, timings FROM runs")}
    except sqlite3.OperationalError:
        return {}


def kill_driver(steps: int) -> None:
    """SIGKILL the driver (and its local Ray instance) once 4 cells are stored, re-run the command."""
    import json
    import signal

    from distillbench.runner.cell import cells_folder, record_files

    banner("driver SIGKILLed mid-campaign (12 digits cells, launcher=ray), then the same command again")
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "r.sqlite"
        cmd = [sys.executable, "-m", "distillbench.cli", "run", "-q", "--store", str(store), *SWEEP,
               f"objective.steps={steps}", "launcher=ray"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        while proc.poll() is None and len(_rows(store)) < 4:
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        before = _rows(store)
        files = {json.loads(p.read_text())["run_id"]: json.loads(p.read_text())["timings"]
                 for p in record_files(cells_folder(store))}
        rerun = subprocess.run(cmd, capture_output=True, text=True)
        after = _rows(store)
        recomputed = sum(after[r][1] != t for r, (_, t) in before.items()) + \
            sum(after[r][1] != t for r, t in files.items())
        done = sum(1 for st, _ in after.values() if st == "done")
        print(f"killed with {len(before)} cells stored and {len(files)} finished but not stored; re-run rc "
              f"{rerun.returncode}; {done}/{len(after)} done; finished cells recomputed: {recomputed}")


def kill_worker(steps: int) -> None:
    """SIGKILL the worker of the first running cell of the 12-cell sweep; compare with local."""
    import json
    import signal
    import threading

    import ray

    from distillbench.launchers.ray import RayLauncher
    from distillbench.registry import load_registry
    from distillbench.runner.cell import PROGRESS_SUFFIX, cells_folder
    from distillbench.runner.plan import plan as make_plan
    from distillbench.runner.sweep import run_sweep
    from distillbench.store.database import ResultStore

    banner("a Ray worker SIGKILLed mid-cell (12 digits cells, 2 workers)")
    registry = load_registry()
    plan = make_plan([*SWEEP, f"objective.steps={steps}"], registry)
    killed = []

    def killer(cells):
        while not killed:
            for p in cells.glob(f"*{PROGRESS_SUFFIX}") if cells.is_dir() else []:
                try:
                    info = json.loads(p.read_text())
                except ValueError:
                    continue
                if info.get("step", 0) > 0:  # mid-cell: distilling
                    os.kill(info["pid"], signal.SIGKILL)
                    killed.append(info)
                    return
            time.sleep(0.05)

    with tempfile.TemporaryDirectory() as tmp:
        accs = {}
        for name in ("local", "ray"):
            with ResultStore(Path(tmp) / f"{name}.sqlite") as store:
                launcher = None
                if name == "ray":
                    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
                    threading.Thread(target=killer, args=(cells_folder(store.path),), daemon=True).start()
                    launcher = RayLauncher(retries=2)
                outcomes = run_sweep(plan, registry, store, launcher=launcher)
                if launcher:
                    ray.shutdown()
                accs[name] = {o.config.run_id: (o.status, o.metrics.get("acc")) for o in outcomes}
        done = sum(1 for st, _ in accs["ray"].values() if st == "done")
        print(f"killed pid {killed[0]['pid'] if killed else None} at step {killed[0]['step'] if killed else '-'} "
              f"of {killed[0]['label'] if killed else '-'}; {done}/12 done; accuracies identical to local: "
              f"{accs['ray'] == accs['local']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="?", default="all",
                        choices=["overhead", "compile-cache", "sweep", "kill-driver", "kill-worker", "all"])
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warm", type=int, default=2)
    args = parser.parse_args()
    if args.what in ("overhead", "all"):
        overhead(args.cells, args.steps, args.warm)
    if args.what in ("compile-cache", "all"):
        compile_cache(args.steps)
    if args.what in ("sweep", "all"):
        sweep(args.steps)
    if args.what in ("kill-driver", "all"):
        kill_driver(args.steps)
    if args.what in ("kill-worker", "all"):
        kill_worker(args.steps)


if __name__ == "__main__":
    main()
