"""One cell of a sweep as a serializable unit, and the durable per-cell files a driver ingests.

:func:`run_cell` takes a frozen, picklable :class:`CellTask` (the cell's ``RunConfig`` plus
execution options) and runs it wherever it is called: in process, in a Ray worker or in a
SLURM job. It never touches the SQLite store: several hosts writing one SQLite file on a network
file system is not safe. It writes the finished cell into the cells folder next to the store
(``<store>.cells/``, on shared storage for remote workers): the artifact first, then the record,
each under a fresh name and renamed into place atomically, so a record file always points to a
complete artifact. The driver alone (one writer) moves those files into the store with
:func:`ingest`, then deletes them; a driver killed at any point leaves files that the next run
of the same command ingests. A record already ``done`` in the store is never replaced by a
later file of the same cell (unless the driver was told to ``--force``).

While a cell runs, its worker keeps ``<run_id>.progress.json`` up to date (host, device, pid,
step), which the driver's live view reads.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillbench.records import Metrics, Timings
from distillbench.runner.execute import DataCache, Outcome
from distillbench.runner.plan import RunConfig
from distillbench.runner.reporter import Reporter

PROGRESS_SUFFIX = ".progress.json"
RECORD_SUFFIX = ".json"
#: seconds between two writes of a cell's progress file
PROGRESS_EVERY_S = 1.0


def cells_folder(store_path: str | os.PathLike) -> Path:
    """``results.sqlite`` -> ``results.sqlite.cells``: where workers leave finished cells for the driver."""
    path = Path(store_path)
    return path.parent / (path.name + ".cells")


def default_compile_cache(store_path: str | os.PathLike) -> Path:
    """``results.sqlite`` -> ``results.sqlite.compile-cache``: JAX's persistent cache, shared by workers."""
    path = Path(store_path)
    return path.parent / (path.name + ".compile-cache")


@dataclass(frozen=True)
class CellTask:
    """Everything a worker needs to run one cell; pickles (Ray, submitit) and is launcher-agnostic."""

    config: RunConfig
    cells_dir: str
    timeout: float | None = None
    compile_cache: str | None = None
    #: JAX's share of a GPU's memory (``XLA_PYTHON_CLIENT_MEM_FRACTION``) when cells share a GPU
    memory_fraction: float | None = None
    index: int = 1
    total: int = 1

    @property
    def run_id(self) -> str:
        return self.config.run_id


def enable_compile_cache(folder: str | os.PathLike) -> None:
    """Turn on JAX's persistent compilation cache in ``folder`` (every compiled program, however fast)."""
    import jax

    Path(folder).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def run_cell(task: CellTask) -> dict[str, Any]:
    """Run one cell and write its record file; returns ``{"run_id", "status", "record"}``.

    Called in the worker process. A data file the worker cannot see fails the cell with one line
    naming the host and the file, before anything is computed.
    """
    from distillbench.compat import xla_flags

    xla_flags.apply()  # before JAX starts; this worker's own jaxlib decides (hosts may differ)
    if task.memory_fraction is not None and "jax" not in sys.modules:
        os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{task.memory_fraction:g}"

    from distillbench.registry import load_registry
    from distillbench.runner.environment import collect_environment
    from distillbench.runner.execute import execute

    if task.compile_cache:
        enable_compile_cache(task.compile_cache)
    cells = Path(task.cells_dir)
    cells.mkdir(parents=True, exist_ok=True)
    registry = load_registry()
    progress = _ProgressFile(cells / f"{task.run_id}{PROGRESS_SUFFIX}")
    problem = data_problem(task.config, registry)
    if problem is not None:
        outcome = Outcome(task.config, "error", problem, plain=problem)
    else:
        outcome = execute(task.config, registry, progress, task.timeout, task.index, task.total, DataCache())
    record = write_cell(cells, task.run_id, task.config, outcome, collect_environment())
    progress.remove()
    return {"run_id": task.run_id, "status": outcome.status, "record": str(record)}


def data_problem(config: RunConfig, registry) -> str | None:
    """Why this host cannot load the cell's data (one line naming the host and the file), or None."""
    component = registry.get("dataset", config.dataset.name)
    if component.validate is None:
        return None
    try:
        problem = component.validate(config.dataset.as_dict())
    except Exception as exc:  # a validate that raises is a problem too, never a silent pass
        problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"on host {socket.gethostname()}: {problem}" if problem else None


def write_cell(cells: Path, run_id: str, config: RunConfig, outcome: Outcome, environment: dict[str, Any]) -> Path:
    """Artifact, then record, each atomically renamed into ``cells``: the record file is the commit."""
    from distillbench.store.artifacts import fsync_dir, write_npz

    token = secrets.token_hex(6)
    artifact = None
    if outcome.arrays:
        artifact = f"{run_id}.{token}.npz"
        write_npz(cells / artifact, dict(outcome.arrays))
    record = {
        "run_id": run_id, "status": outcome.status, "message": outcome.message, "plain": outcome.plain,
        "config": config.to_dict(), "metrics": dict(outcome.metrics), "timings": dict(outcome.timings),
        "environment": environment, "artifact": artifact, "data_fingerprint": outcome.data_fingerprint,
        "traceback": outcome.traceback,
    }
    from distillbench.store.database import _dumps

    path = cells / f"{run_id}.{token}{RECORD_SUFFIX}"
    tmp = cells / f".{path.name}.tmp"
    with open(tmp, "w") as f:
        f.write(_dumps(record))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(cells)
    return path


def record_files(cells: Path, run_ids: Collection[str] | None = None) -> list[Path]:
    """The finished-cell record files in ``cells`` (of ``run_ids`` only, when given), oldest first."""
    if not cells.is_dir():
        return []
    found = [p for p in cells.iterdir() if p.name.endswith(RECORD_SUFFIX) and not p.name.endswith(PROGRESS_SUFFIX)
             and not p.name.startswith(".")]
    if run_ids is not None:
        found = [p for p in found if p.name.split(".", 1)[0] in run_ids]
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name))


def ingest(store, cells: Path, run_ids: Collection[str] | None = None, configs: dict[str, RunConfig] | None = None,
           replace_done: Collection[str] = ()) -> list[Outcome]:
    """Move finished-cell files into ``store`` (the one writer), then delete them; the outcomes stored.

    A file whose cell is already ``done`` in the store is dropped unless its run_id is in
    ``replace_done`` (``--force``): a cell is never stored as done twice. A driver killed between the
    save and the delete leaves a file whose row is already there; the next ingest drops it.
    """
    from distillbench.store.artifacts import fsync_dir, read_npz

    outcomes = []
    for path in record_files(cells, run_ids):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # not one of ours (the rename makes ours whole)
        run_id = data["run_id"]
        artifact = cells / data["artifact"] if data.get("artifact") else None
        if not store.is_done(run_id) or run_id in replace_done:
            arrays = read_npz(artifact) if artifact is not None else {}
            store.save(run_id=run_id, status=data["status"], message=data["message"], config=data["config"],
                       metrics=data["metrics"], timings=data["timings"], environment=data["environment"],
                       arrays=arrays, data_fingerprint=data["data_fingerprint"], traceback=data["traceback"])
            config = (configs or {}).get(run_id) or RunConfig.from_dict(data["config"])
            outcome = Outcome(config, data["status"], data["message"], Metrics.from_dict(data["metrics"]),
                              Timings.from_dict(data["timings"]), data_fingerprint=data["data_fingerprint"],
                              traceback=data["traceback"], plain=data.get("plain"))
            outcomes.append(outcome)
        path.unlink(missing_ok=True)
        if artifact is not None:
            artifact.unlink(missing_ok=True)
        fsync_dir(cells)
    return outcomes


def read_progress(cells: Path) -> list[dict[str, Any]]:
    """The progress files of the cells running now (host, device, pid, step, steps, label)."""
    out = []
    if not cells.is_dir():
        return out
    for path in cells.glob(f"*{PROGRESS_SUFFIX}"):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return out


class _ProgressFile(Reporter):
    """A worker's reporter: the running cell's host, device, pid and step in one small file."""

    def __init__(self, path: Path):
        self.path = path
        self._info: dict[str, Any] = {"run_id": path.name.split(".", 1)[0], "host": socket.gethostname(),
                                      "pid": os.getpid(), "step": 0, "steps": 0, "label": ""}
        self._last = 0.0
        self._write()

    def run_started(self, index: int, total: int, label: str, num_steps: int) -> None:
        try:
            import jax

            device = jax.devices()[0]
            self._info["device"] = f"{device.platform}:{device.id} {device.device_kind}"
        except Exception:
            self._info["device"] = None
        self._info.update(label=label, steps=num_steps, step=0)
        self._write()

    def run_progress(self, step: int, num_steps: int, loss: float, steps_per_s: float) -> None:
        self._info.update(step=step, steps=num_steps)
        if time.monotonic() - self._last >= PROGRESS_EVERY_S:
            self._write()

    def _write(self) -> None:
        self._last = time.monotonic()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self._info))
            os.replace(tmp, self.path)
        except OSError:
            pass  # the display only

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
