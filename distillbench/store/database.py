"""The results store: one SQLite row per run, the only module that talks SQL or opens an artifact.

It stores a :class:`~distillbench.records.RunResult` and reads rows back as typed
:class:`~distillbench.records.RunRecord` objects; the config, metrics and timings columns hold the JSON
of ``RunConfig.to_dict()``, ``Metrics.to_dict()`` and ``Timings.to_dict()``, unchanged since
schema 1. ``meta.schema_version`` is ``records.SCHEMA_VERSION``; older stores are migrated when
opened for writing, newer ones refused.

Durability: WAL journal with ``synchronous=FULL`` and one transaction per finished run, so a
process killed at any moment (SIGKILL included) leaves every committed row intact and readable;
the run in flight simply has no row and is redone next time. Rows are keyed by the config's
``run_id``; re-running a sweep skips rows whose status is ``done``.

Artifacts belong to one store: they live in ``<store file>.artifacts/`` next to it (for the
default store ``./distillbench_results/results.sqlite.artifacts/``), named ``<run_id>-<token>.npz``
with a fresh token per save, so no run of this or any other store ever overwrites a file a row
points to. A save holds the store's write lock (``BEGIN IMMEDIATE``) from writing the artifact to
committing its row; opening a store for writing takes the same lock and deletes what a killed
process left behind (temporary files, artifacts no row points to). Every row's artifact exists
and, after an open, every artifact has its row.

Default location: ``./distillbench_results/results.sqlite``; override with ``--store PATH`` or
``DISTILLBENCH_STORE``.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import stat
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from distillbench.records import SCHEMA_VERSION, STATUSES, Metrics, RunConfig, RunRecord, RunResult, Timings
from distillbench.store.artifacts import TMP_SUFFIX, fsync_dir, read_npz, write_npz

STORE_ENV = "DISTILLBENCH_STORE"
DEFAULT_STORE = Path("distillbench_results") / "results.sqlite"
_INT64 = (-(2**63), 2**63 - 1)

_RUNS_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    run_id       TEXT PRIMARY KEY,
    finished_at  TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('done', 'error', 'diverged', 'timeout', 'interrupted')),
    message      TEXT,
    dataset      TEXT NOT NULL,
    objective    TEXT NOT NULL,
    kernel       TEXT NOT NULL,
    loss         TEXT NOT NULL,
    evaluator    TEXT NOT NULL,
    ipc          INTEGER NOT NULL,
    seed         INTEGER NOT NULL,
    acc          REAL,
    random_acc   REAL,
    config       TEXT NOT NULL,
    metrics      TEXT NOT NULL,
    timings      TEXT NOT NULL,
    environment  TEXT NOT NULL,
    artifact     TEXT,
    data_fingerprint TEXT,
    traceback    TEXT,
    parent_run_id TEXT
)
"""
_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    _RUNS_TABLE.format(name="runs"),
    "CREATE INDEX IF NOT EXISTS runs_by_setting ON runs (dataset, ipc, objective, kernel, loss)",
]
#: Columns every store has (schema 1 on); ``_NEW_COLUMNS`` came later: the fingerprint and traceback
#: with schema 2, ``parent_run_id`` (an evaluation's link to the distillation it scored) with schema 3.
_COLUMNS = "run_id, finished_at, status, message, config, metrics, timings, environment, artifact"
_NEW_COLUMNS = ("data_fingerprint", "traceback", "parent_run_id")


def default_store_path() -> Path:
    return Path(os.environ.get(STORE_ENV) or DEFAULT_STORE)


def artifact_folder_name(store_path: str | os.PathLike) -> str:
    """``results.sqlite`` -> ``results.sqlite.artifacts``: the folder only this store writes to."""
    return Path(store_path).name + ".artifacts"


class ResultStore:
    """Open (creating or upgrading if needed) the SQLite store at ``path``, for writing."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._artifact_dir = self.path.parent / artifact_folder_name(self.path)
        self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._select = f"{_COLUMNS}, {', '.join(_NEW_COLUMNS)}"
            with self._write_lock():
                for statement in _SCHEMA:
                    self._conn.execute(statement)
                self._migrate()
                self._conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                                   (str(SCHEMA_VERSION),))
                self._remove_leftovers()
        except BaseException:
            self._conn.close()
            raise
        self.file_mode = stat.S_IMODE(self.path.stat().st_mode) & 0o666

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the write lock, upgrades and leftovers -----------------------------------------------
    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        """A transaction holding SQLite's write lock (``BEGIN IMMEDIATE``); rolled back on any exception."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException:  # a failed COMMIT (a full disk) too: never keep the lock and the transaction
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:  # e.g. the disk I/O error that failed the transaction already ended it
                pass
            raise

    def _migrate(self) -> None:
        """Schema 1 -> 2 -> 3: the ``interrupted`` status, the fingerprint/traceback columns, then
        ``parent_run_id`` (rows kept). A store from a newer release is refused, never downgraded."""
        _refuse_newer(self._conn, self.path)
        (sql,) = self._conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'runs'").fetchone()
        columns = [row[1] for row in self._conn.execute("PRAGMA table_info(runs)")]
        if "'interrupted'" in sql and all(c in columns for c in _NEW_COLUMNS):
            return
        self._conn.execute("DROP TABLE IF EXISTS runs_upgrade")
        self._conn.execute(_RUNS_TABLE.format(name="runs_upgrade"))
        kept = ", ".join(c for c in columns if c != "rowid")
        self._conn.execute(f"INSERT INTO runs_upgrade ({kept}) SELECT {kept} FROM runs")
        self._conn.execute("DROP TABLE runs")
        self._conn.execute("ALTER TABLE runs_upgrade RENAME TO runs")
        self._conn.execute(_SCHEMA[2])
        self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                           (str(SCHEMA_VERSION),))

    def _own_artifacts(self) -> set[str]:
        prefix = artifact_folder_name(self.path) + "/"
        return {a[len(prefix):] for (a,) in self._conn.execute("SELECT artifact FROM runs WHERE artifact IS NOT NULL")
                if a.startswith(prefix)}

    def _remove_leftovers(self) -> None:
        """Delete temporary files and unreferenced artifacts a killed process left (write lock held)."""
        if not self._artifact_dir.is_dir():
            return
        referenced = self._own_artifacts()
        removed = False
        for entry in self._artifact_dir.iterdir():
            name = entry.name
            if name.endswith(TMP_SUFFIX) or (name.endswith(".npz") and name not in referenced):
                entry.unlink(missing_ok=True)
                removed = True
        if removed:
            fsync_dir(self._artifact_dir)

    def _make_artifact_dir(self) -> None:
        if not self._artifact_dir.is_dir():
            self._artifact_dir.mkdir(exist_ok=True)
            readable = self.file_mode & 0o444
            os.chmod(self._artifact_dir, self.file_mode | (readable >> 2) | stat.S_IWUSR | stat.S_IXUSR)

    # -- writes ------------------------------------------------------------------------------
    def save(self, result: RunResult | None = None, environment: Mapping[str, Any] | None = None, *,
             run_id: str | None = None, parent_run_id: str | None = None, **legacy: Any) -> RunRecord:
        """Store ``result``: write its artifact (atomically, under a new name), then upsert its row; one
        write lock. ``run_id`` defaults to ``result.config.run_id`` (give it for a config decoded from
        JSON, which has lost its ``identity=False`` marks).

        The keyword form of earlier releases (``run_id=, status=, message=, config=<dict>, metrics=,
        timings=, environment=, arrays=, data_fingerprint=, traceback=``) is decoded into a
        :class:`RunResult` first. The artifact the row pointed to before is deleted only once the new
        row is committed. Raises ``ValueError`` (nothing written) when a value does not fit the store.
        """
        if result is None:
            result, environment = _legacy_result(legacy), legacy.get("environment", environment)
        elif legacy:
            raise TypeError(f"save() got unexpected keyword arguments {sorted(legacy)}")
        run_id = run_id or result.config.run_id
        config = result.config
        ipc, seed = _int64(config.ipc, "ipc"), _int64(config.seed, "seed")
        row = (run_id, datetime.now(timezone.utc).isoformat(timespec="seconds"), result.status, result.message,
               config.dataset.name, config.objective.name, config.kernel.name, config.loss.name,
               config.evaluator.name, ipc, seed, _real(result.metrics.acc), _real(result.metrics.random_acc),
               _dumps(config.to_dict()), _dumps(result.metrics.to_dict()), _dumps(result.timings.to_dict()),
               _dumps(dict(environment or {})))
        previous, artifact = self._write_row(row, result.arrays, result.data_fingerprint, result.traceback,
                                             parent_run_id)
        folder = artifact_folder_name(self.path)
        if previous and previous != artifact and previous.startswith(folder + "/"):
            (self.path.parent / previous).unlink(missing_ok=True)  # ours alone; a kill here leaves a leftover
        return self.get(run_id)  # type: ignore[return-value]

    def _write_row(self, row: tuple, arrays: Mapping[str, Any], fingerprint: str | None, tb: str | None,
                   parent_run_id: str | None) -> tuple[str | None, str | None]:
        """Artifact then row under the write lock; returns the artifact the row pointed to before, and the new one."""
        run_id = row[0]
        artifact = new_file = None
        with self._write_lock():
            if arrays:
                self._make_artifact_dir()
                name = f"{run_id}-{secrets.token_hex(6)}.npz"  # a fresh name: nothing is ever overwritten
                new_file = self._artifact_dir / name
                write_npz(new_file, dict(arrays), mode=self.file_mode)
                artifact = f"{artifact_folder_name(self.path)}/{name}"
            try:
                old = self._conn.execute("SELECT artifact FROM runs WHERE run_id = ?", (run_id,)).fetchone()
                self._conn.execute(
                    "INSERT OR REPLACE INTO runs (run_id, finished_at, status, message, dataset, objective, kernel,"
                    " loss, evaluator, ipc, seed, acc, random_acc, config, metrics, timings, environment, artifact,"
                    " data_fingerprint, traceback, parent_run_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*row, artifact, fingerprint, tb, parent_run_id),
                )
            except BaseException:  # the row was not written: its new artifact goes with it
                if new_file is not None:
                    new_file.unlink(missing_ok=True)
                raise
            # A failed COMMIT keeps the new artifact: whether the row reached the disk is decided by
            # SQLite's recovery, and the next open removes the artifact under the lock if it did not.
        return (old[0] if old else None), artifact

    # -- reads -------------------------------------------------------------------------------
    def get(self, run_id: str) -> RunRecord | None:
        cur = self._conn.execute(f"SELECT {self._select} FROM runs WHERE run_id = ?", (run_id,))
        row = cur.fetchone()
        return _record(row) if row else None

    def is_done(self, run_id: str) -> bool:
        cur = self._conn.execute("SELECT 1 FROM runs WHERE run_id = ? AND status = 'done'", (run_id,))
        return cur.fetchone() is not None

    def records(self) -> Iterator[RunRecord]:
        for row in self._conn.execute(f"SELECT {self._select} FROM runs ORDER BY finished_at, run_id"):
            yield _record(row)

    def count(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]

    def artifact_path(self, record: RunRecord) -> Path:
        if record.artifact is None:
            raise FileNotFoundError(f"run {record.run_id} has no artifact")
        return self.path.parent / record.artifact

    def load_artifact(self, record: RunRecord) -> dict[str, np.ndarray]:
        return read_npz(self.artifact_path(record))


def _record(row) -> RunRecord:
    """Decode one row; a column that is not the JSON a store writes raises ``ValueError``."""
    run_id, finished_at, status, message, config, metrics, timings, environment, artifact, fingerprint, tb, parent = row
    try:
        return RunRecord(run_id, finished_at, status, message, RunConfig.from_dict(json.loads(config)),
                         Metrics.from_dict(json.loads(metrics)), Timings.from_dict(json.loads(timings)),
                         json.loads(environment), artifact, fingerprint, tb, parent)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"run {run_id}: its stored config is malformed ({type(exc).__name__}: {exc})") from None


def read_artifact(store_path: str | os.PathLike, record: RunRecord) -> dict[str, np.ndarray]:
    """The arrays of ``record``'s artifact, found next to the store it was read from (``store_path``)."""
    if record.artifact is None:
        raise FileNotFoundError(f"run {record.run_id} has no artifact")
    return read_npz(Path(store_path).parent / record.artifact)


def artifact_array(store_path: str | os.PathLike, record: RunRecord, name: str) -> np.ndarray | None:
    """One array of ``record``'s artifact (the others are not read); ``None`` when the artifact is
    missing (not copied with the store), unreadable or without it."""
    if record.artifact is None:
        return None
    try:
        with np.load(Path(store_path).parent / record.artifact) as arrays:  # an NpzFile reads on access
            return arrays[name]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def _legacy_result(fields: Mapping[str, Any]) -> RunResult:
    """The keyword form of ``save`` as a :class:`RunResult` (``config`` a stored-config dict)."""
    config = fields["config"]
    if not isinstance(config, RunConfig):
        config = RunConfig.from_dict(config)
    return RunResult(config, fields["status"], fields.get("message"), Metrics.from_dict(fields.get("metrics")),
                     Timings.from_dict(fields.get("timings")), fields.get("arrays") or {},
                     fields.get("data_fingerprint"), fields.get("traceback"))


def _int64(value: Any, name: str) -> int:
    value = int(value)
    if not _INT64[0] <= value <= _INT64[1]:
        raise ValueError(f"{name}={value} does not fit in the results store (a 64-bit signed integer)")
    return value


def _real(value: Any) -> float | None:
    return None if value is None else float(value)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=_jsonable)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serializable: {type(value).__name__}")


class NotAStoreError(ValueError):
    """The file exists but is not a distillbench results store."""


def open_existing(path: str | os.PathLike) -> ResultStore:
    """Open an existing store read-only; never creates, migrates or writes anything.

    Raises ``FileNotFoundError`` when ``path`` is not an existing file and ``NotAStoreError`` when
    the file is not an SQLite database holding distillbench's ``runs`` table. The returned store
    reads (``records``, ``get``, ``count``, ``load_artifact``); ``save`` fails (read-only).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no results store at {str(path)!r}")
    store = ResultStore.__new__(ResultStore)
    store.path = path
    store._artifact_dir = path.parent / artifact_folder_name(path)
    store._conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
    try:
        tables = {row[0] for row in store._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        columns = {row[1] for row in store._conn.execute("PRAGMA table_info(runs)")} if "runs" in tables else set()
    except sqlite3.DatabaseError as exc:
        store.close()
        raise NotAStoreError(f"{str(path)!r} is not a distillbench results store ({exc})") from None
    missing = set(_COLUMNS.split(", ")) - columns
    if "meta" not in tables or missing:
        store.close()
        raise NotAStoreError(f"{str(path)!r} is not a distillbench results store (no runs table with the"
                             f" expected columns)")
    try:
        _refuse_newer(store._conn, path)
    except NotAStoreError:
        store.close()
        raise
    store._select = ", ".join([_COLUMNS, *(c if c in columns else "NULL" for c in _NEW_COLUMNS)])
    return store


def _refuse_newer(conn: sqlite3.Connection, path: Path) -> None:
    """A store a newer release wrote may hold what this one would misread: refuse it, touch nothing."""
    found = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if found and str(found[0]).isdigit() and int(found[0]) > SCHEMA_VERSION:
        raise NotAStoreError(f"{str(path)!r} was written by a newer distillbench (store schema {found[0]}; this"
                             f" version reads up to {SCHEMA_VERSION}): upgrade distillbench to use it")
