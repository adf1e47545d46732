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
later file of the same cell (unless the driver was told to ``--force``), and never by a failure.

A cell file is data, not a command: :func:`ingest` checks each one (its name, its fields' types,
its run_id, that its artifact is the regular file a worker writes beside it) before storing it,
and renames a bad one ``*.rejected`` with one warning line, so a stray file never stops a campaign
and never makes the driver read or delete anything outside the folder.

While a cell runs, its worker keeps ``<run_id>.progress.json`` up to date (host, device, pid,
step), which the driver's live view reads.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import sqlite3
import sys
import time
import zipfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from distillbench.records import Artifact, RunConfig, RunResult, decode_result, encode_result, to_json
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
        result = RunResult(task.config, "error", problem, plain=problem)
    else:
        result = execute(task.config, registry, reporter=progress, timeout=task.timeout,
                         position=(task.index, task.total))
    record = write_cell(cells, replace(result, environment=collect_environment()))
    progress.remove()
    return {"run_id": task.run_id, "status": result.status, "record": str(record)}


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


def write_cell(cells: Path, result: RunResult) -> Path:
    """Artifact, then record (the codec's fields and the artifact's file name), each atomically
    renamed into ``cells``: the record file is the commit."""
    from distillbench.store.artifacts import fsync_dir, write_npz

    token = secrets.token_hex(6)
    artifact = None
    arrays = result.artifact.to_arrays() if result.artifact is not None else {}
    if arrays:
        artifact = f"{result.run_id}.{token}.npz"
        write_npz(cells / artifact, arrays)
    path = cells / f"{result.run_id}.{token}{RECORD_SUFFIX}"
    tmp = cells / f".{path.name}.tmp"
    with open(tmp, "w") as f:
        f.write(to_json({**encode_result(result), "artifact": artifact}))
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
    return sorted(found, key=lambda p: (_mtime(p), p.name))


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime  # a link's own time: a dangling link is rejected later, not here
    except OSError:
        return 0.0


#: what a quarantined cell file is renamed to (in the same folder): never read again, never deleted
REJECTED_SUFFIX = ".rejected"
_CELL_RECORD = re.compile(r"(?P<run_id>[A-Za-z0-9_-]{1,128})\.(?P<token>[0-9a-f]{12})\.json")


class BadCellFile(ValueError):
    """A file in the cells folder that is not a complete record a worker wrote: skipped, never trusted."""


def ingest(store, cells: Path, run_ids: Collection[str] | None = None, configs: dict[str, RunConfig] | None = None,
           replace_done: Collection[str] = (), notice=None) -> list[RunResult]:
    """Move finished-cell files into ``store`` (the one writer), then delete them; the outcomes stored.

    A file whose cell is already ``done`` in the store is dropped unless its run_id is in
    ``replace_done`` (``--force``): a cell is never stored as done twice, and the store keeps a done
    row over any later failure. A driver killed between the save and the delete leaves a file whose
    row is already there; the next ingest drops it. A file that is not a valid record (a stray
    ``notes.json``, a missing artifact, a path out of the folder) is renamed ``*.rejected`` with one
    ``notice`` line naming it (stderr when no ``notice`` is given): a campaign always resumes.
    """
    notice = notice or _stderr_line
    results = []
    for path in record_files(cells, run_ids):
        try:
            result, artifact = read_record(cells, path, configs or {})
        except BadCellFile as exc:
            _quarantine(path, str(exc), notice)
            continue
        try:
            stored = _store_record(store, result, artifact, replace_done)
        except (ValueError, TypeError, KeyError) as exc:  # a value the store cannot hold
            _quarantine(path, f"the store refused it ({exc})", notice)
            continue
        except (OSError, sqlite3.Error) as exc:  # a full disk, a lock: the file stays for the next run
            notice(f"warning: cell file {path}: not stored now ({exc}); the next run stores it")
            continue
        if stored is not None:
            results.append(stored)
        _drop(cells, path, artifact)
    return results


def read_record(cells: Path, path: Path, configs: Mapping[str, RunConfig]) -> tuple[RunResult, Path | None]:
    """A cell record file's result (under its planned config from ``configs``, when there) and its
    artifact's path, both checked: never trusted as they are."""
    from distillbench.store.paths import UnsafePathError, inside, regular_file

    match = _CELL_RECORD.fullmatch(path.name)
    if match is None or not regular_file(path):
        raise BadCellFile("not a cell record (a worker writes <run_id>.<token>.json, a regular file)")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadCellFile(f"unreadable ({type(exc).__name__}: {str(exc)[:80]})") from None
    run_id = match["run_id"]
    if not isinstance(data, dict):
        raise BadCellFile(f"holds a JSON {type(data).__name__}, not a cell record")
    if data.get("run_id") != run_id:
        raise BadCellFile(f"its run_id {str(data.get('run_id'))[:40]!r} is not the {run_id!r} of its file name")
    try:
        result = decode_result(data, configs.get(run_id))
    except ValueError as exc:
        raise BadCellFile(str(exc)) from None
    name = data.get("artifact", ...)
    if name is ...:
        raise BadCellFile("no 'artifact' field")
    if name is None:
        return result, None
    if name != f"{run_id}.{match['token']}.npz":
        raise BadCellFile(f"its artifact {str(name)[:80]!r} is not the one a worker writes beside it")
    try:
        artifact = inside(cells, cells / name, "its artifact")
    except UnsafePathError as exc:
        raise BadCellFile(str(exc)) from None
    if not regular_file(artifact):
        raise BadCellFile(f"its artifact {name!r} is missing")
    return result, artifact


def _store_record(store, result: RunResult, artifact: Path | None, replace_done) -> RunResult | None:
    """Save one checked record unless its cell is done (and not to be replaced); the result stored."""
    from distillbench.store.artifacts import read_npz

    if store.is_done(result.run_id) and result.run_id not in replace_done:
        return None
    try:
        arrays = read_npz(artifact) if artifact is not None else {}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"its artifact is unreadable: {exc}") from None
    store.save(replace(result, artifact=Artifact.from_arrays(arrays) if arrays else None))
    return result


def _drop(cells: Path, path: Path, artifact: Path | None) -> None:
    """Delete a stored record file and its artifact (both checked regular files inside ``cells``)."""
    from distillbench.store.artifacts import fsync_dir

    path.unlink(missing_ok=True)
    if artifact is not None:
        artifact.unlink(missing_ok=True)
    fsync_dir(cells)


def _quarantine(path: Path, why: str, notice) -> None:
    """Rename a bad cell file ``*.rejected`` beside it (a link is renamed, never followed), one line."""
    target = path.with_name(path.name + REJECTED_SUFFIX)
    try:
        os.replace(path, target)
        where = f"; renamed to {target.name}"
    except OSError:
        where = ""
    line = f"warning: skipped cell file {path}: {why}{where}"
    notice("".join(c if c.isprintable() else repr(c)[1:-1] for c in line))  # one line, whatever the name


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr)


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
