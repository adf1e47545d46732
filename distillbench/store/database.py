"""The results store: one SQLite row per run, the only module that talks SQL or opens an artifact.

It stores a :class:`~distillbench.records.RunResult` (:meth:`ResultStore.save`, its only write) and
reads rows back as typed :class:`~distillbench.records.RunRecord` objects, through the records codec:
the config, metrics, timings and environment columns hold the JSON fields of
``records.encode_result`` (unchanged since schema 1), an artifact the members of
``Artifact.to_arrays``. ``meta.schema_version`` is ``records.SCHEMA_VERSION``; older stores are migrated when
opened for writing, newer ones refused.

Durability: WAL journal with ``synchronous=FULL`` and one transaction per finished run, so a
process killed at any moment (SIGKILL included) leaves every committed row intact and readable;
the run in flight simply has no row and is redone next time. Rows are keyed by the config's
``run_id``; re-running a sweep skips rows whose status is ``done``.

Artifacts belong to one store: they live in ``<store file>.artifacts/`` next to it (for the
default store ``./distillbench_results/results.sqlite.artifacts/``), named ``<run_id>-<token>.npz``
with a fresh token per save, so no run of this or any other store ever overwrites a file a row
points to. A row's path is data, never followed as it is: :mod:`distillbench.store.paths` maps it
to this store's own folder (a copied or renamed store finds its sets) and refuses anything else.
The store deletes only files it can prove it made: before an artifact is written its name is
committed to the ``pending_artifacts`` table, and removed from it in the transaction that commits
the row. A name still pending (a process killed in between, or an artifact a re-run replaced) is
deleted with its temporary files under the write lock, at the next open or save. Any other file
in the folder is left alone (``distillbench store check`` lists the ones no row names).

A later failure never replaces an earlier success: a result that is not ``done`` leaves a ``done``
row and its artifact as they are. After every save the WAL is checkpointed into the main file, so
that file alone holds every committed row (a copy of it without its ``-wal`` loses nothing).

Default location: ``./distillbench_results/results.sqlite``; override with ``--store PATH`` or
``DISTILLBENCH_STORE``.
"""

from __future__ import annotations

import json
import os
import re
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

from distillbench.records import (SCHEMA_VERSION, Artifact, RunRecord, RunResult, decode_result, encode_result,
                                  to_json)
from distillbench.store import failures
from distillbench.store.artifacts import TMP_SUFFIX, fsync_dir, read_npz, write_npz
from distillbench.store.paths import (ARTIFACT_NAME, LEGACY_FOLDER, UnsafePathError, artifact_folder_name,
                                      check_run_id, inside, locate_artifact, owned_name, regular_file,
                                      split_artifact)

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
    # artifact names committed before their file is written, or after their row moved on: the
    # files this store may delete (older releases ignore the table)
    "CREATE TABLE IF NOT EXISTS pending_artifacts (name TEXT PRIMARY KEY)",
]
#: Columns every store has (schema 1 on); ``_NEW_COLUMNS`` came later: the fingerprint and traceback
#: with schema 2, ``parent_run_id`` (an evaluation's link to the distillation it scored) with schema 3.
_COLUMNS = "run_id, finished_at, status, message, config, metrics, timings, environment, artifact"
_NEW_COLUMNS = ("data_fingerprint", "traceback", "parent_run_id")
_VERSION_TEXT = re.compile(r"[0-9]{1,9}")


def default_store_path() -> Path:
    return Path(os.environ.get(STORE_ENV) or DEFAULT_STORE)


class NotAStoreError(ValueError):
    """The file exists but is not a distillbench results store (or one this release cannot use)."""


class ResultStore:
    """Open (creating or upgrading if needed) the SQLite store at ``path``, for writing.

    Raises :class:`NotAStoreError` for a file that is not a store this release can write, and
    :class:`~distillbench.store.failures.StoreUnavailableError` naming what failed otherwise (a
    read-only folder, a permission, a full disk, a lock held too long).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._artifact_dir = self.path.parent / artifact_folder_name(self.path)
        self._select = f"{_COLUMNS}, {', '.join(_NEW_COLUMNS)}"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise failures.unavailable(exc, self.path, writing=True) from None
        try:
            self._open_for_writing()
        except BaseException as exc:
            self._conn.close()
            if isinstance(exc, sqlite3.Error) and failures.not_a_database(exc):
                raise NotAStoreError(f"{str(self.path)!r} is not a distillbench results store ({exc})") from None
            if isinstance(exc, (OSError, sqlite3.Error)) and not isinstance(exc, failures.StoreUnavailableError):
                raise failures.unavailable(exc, self.path, writing=True) from None
            raise

    def _open_for_writing(self) -> None:
        """WAL, the schema (created, checked, migrated), what a killed save left, a checkpoint."""
        tables = {row[0] for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" in tables:  # before anything is written, even the journal mode
            check_schema_version(self._conn, self.path)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        with self._write_lock():
            for statement in _SCHEMA:
                self._conn.execute(statement)
            self._migrate()
            self._conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                               (str(SCHEMA_VERSION),))
        self.file_mode = stat.S_IMODE(self.path.stat().st_mode) & 0o666
        self._settle()
        self.checkpoint()

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

    def checkpoint(self) -> None:
        """Copy the WAL's committed rows into the main file (``wal_checkpoint(PASSIVE)``): a copy of
        the main file alone is then complete. PASSIVE never waits for a reader (a ``report`` holding
        an old snapshot leaves those rows in the WAL, just as durable, until the next save), unlike
        TRUNCATE; it adds about 0.5 ms to a save (a median on ext4: 2.4-2.9 ms a save, 1.8-2.2 without)."""
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:
            pass

    def _migrate(self) -> None:
        """Schema 1 -> 2 -> 3: the ``interrupted`` status, the fingerprint/traceback columns, then
        ``parent_run_id`` (rows kept). A store from a newer release is refused, never downgraded."""
        check_schema_version(self._conn, self.path)
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

    def referenced_names(self) -> set[str]:
        """The file names of every row's artifact (whatever folder name the row was written under)."""
        return {str(a).rsplit("/", 1)[-1] for (a,) in
                self._conn.execute("SELECT artifact FROM runs WHERE artifact IS NOT NULL")}

    def _settle(self, names: Iterator[str] | None = None) -> None:
        """Delete the pending artifacts (all, or ``names``) no row names, with their temporary files:
        files this store committed to making before it made them, so provably its own."""
        if names is None:
            pending = [n for (n,) in self._conn.execute("SELECT name FROM pending_artifacts")]
        else:
            pending = [n for n in names if self._conn.execute(
                "SELECT 1 FROM pending_artifacts WHERE name = ?", (n,)).fetchone()]
        if not pending:
            return
        with self._write_lock():
            referenced = self.referenced_names()
            for name in pending:
                if name not in referenced:
                    _remove_own(self._artifact_dir, name)
                self._conn.execute("DELETE FROM pending_artifacts WHERE name = ?", (name,))
        fsync_dir(self._artifact_dir)

    def _make_artifact_dir(self) -> None:
        if not self._artifact_dir.is_dir():
            self._artifact_dir.mkdir(exist_ok=True)
            readable = self.file_mode & 0o444
            os.chmod(self._artifact_dir, self.file_mode | (readable >> 2) | stat.S_IWUSR | stat.S_IXUSR)

    # -- writes ------------------------------------------------------------------------------
    def save(self, result: RunResult) -> RunRecord:
        """Store ``result`` under ``result.run_id``: write its artifact (atomically, under a new name),
        then upsert its row; one write lock.

        A result that is not ``done`` never replaces a ``done`` row: the row and its artifact stay,
        nothing is written, and the done record is returned. The artifact the row pointed to before
        is deleted only once the new row is committed. Raises ``ValueError`` (nothing written) when a
        value does not fit the store.
        """
        run_id = check_run_id(result.run_id)
        config, fields = result.config, encode_result(result)
        ipc, seed = _int64(config.ipc, "ipc"), _int64(config.seed, "seed")
        row = (run_id, datetime.now(timezone.utc).isoformat(timespec="seconds"), result.status, result.message,
               config.dataset.name, config.objective.name, config.kernel.name, config.loss.name,
               config.evaluator.name, ipc, seed, _real(result.metrics.acc), _real(result.metrics.random_acc),
               *(to_json(fields[column]) for column in ("config", "metrics", "timings", "environment")))
        arrays = result.artifact.to_arrays() if result.artifact is not None else {}
        name = f"{run_id}-{secrets.token_hex(6)}.npz" if arrays else None  # fresh: never overwrites
        if name is not None:
            with self._write_lock():  # committed before the file exists: the file is provably ours
                self._conn.execute("INSERT INTO pending_artifacts (name) VALUES (?)", (name,))
        previous = None
        try:
            previous = self._write_row(row, arrays, name, result.data_fingerprint, result.traceback,
                                       result.parent_run_id)
        finally:
            try:
                self._settle(n for n in (name, previous) if n)  # the replaced artifact, or a failed save's
            except (sqlite3.Error, OSError):
                pass  # the next open settles them
        self.checkpoint()
        return self.get(run_id)  # type: ignore[return-value]

    def _write_row(self, row: tuple, arrays: Mapping[str, Any], name: str | None, fingerprint: str | None,
                   tb: str | None, parent_run_id: str | None) -> str | None:
        """Artifact then row under the write lock; returns the name of the artifact the row pointed to
        before when the store may now delete it (marked pending in the same transaction)."""
        run_id, status = row[0], row[2]
        artifact = new_file = None
        with self._write_lock():
            old = self._conn.execute("SELECT status, artifact FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if old is not None and old[0] == "done" and status != "done":
                return None  # a later failure never replaces an earlier success
            if name is not None:
                self._make_artifact_dir()
                new_file = self._artifact_dir / name
                write_npz(new_file, dict(arrays), mode=self.file_mode)
                artifact = f"{artifact_folder_name(self.path)}/{name}"
            try:
                self._conn.execute(
                    "INSERT OR REPLACE INTO runs (run_id, finished_at, status, message, dataset, objective, kernel,"
                    " loss, evaluator, ipc, seed, acc, random_acc, config, metrics, timings, environment, artifact,"
                    " data_fingerprint, traceback, parent_run_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*row, artifact, fingerprint, tb, parent_run_id),
                )
                self._conn.execute("DELETE FROM pending_artifacts WHERE name = ?", (name,))
                previous = _replaced(run_id, old[1] if old else None, name)
                if previous is not None:
                    self._conn.execute("INSERT OR IGNORE INTO pending_artifacts (name) VALUES (?)", (previous,))
            except BaseException:  # the row was not written: its new artifact goes with it
                if new_file is not None:
                    new_file.unlink(missing_ok=True)
                raise
            # A failed COMMIT keeps the new artifact: whether the row reached the disk is decided by
            # SQLite's recovery, and the pending name lets the next open remove it if it did not.
        return previous

    # -- reads -------------------------------------------------------------------------------
    def get(self, run_id: str) -> RunRecord | None:
        """The row of ``run_id``; ``None`` when there is none, or when it is damaged (its stored JSON is
        not what a store writes): a sweep then runs that cell again and its new row replaces it."""
        cur = self._conn.execute(f"SELECT {self._select} FROM runs WHERE run_id = ?", (run_id,))
        row = cur.fetchone()
        try:
            return _record(row) if row else None
        except ValueError:
            return None

    def is_done(self, run_id: str) -> bool:
        """A done row that decodes (a damaged one is run again, as :meth:`get` says)."""
        record = self.get(run_id)
        return record is not None and record.status == "done"

    def records(self) -> Iterator[RunRecord]:
        """Every row, decoded; a damaged one raises ``ValueError`` naming it."""
        for row in self._conn.execute(f"SELECT {self._select} FROM runs ORDER BY finished_at, run_id"):
            yield _record(row)

    def count(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]

    def artifact_path(self, record: RunRecord) -> Path:
        """Where ``record``'s artifact is, inside this store's folder; ``UnsafePathError`` (a
        ``ValueError``) when the row names a path anywhere else."""
        if record.artifact is None:
            raise FileNotFoundError(f"run {record.run_id} has no artifact")
        return locate_artifact(self.path, record.artifact)

    def load_artifact(self, record: RunRecord) -> Artifact:
        return Artifact.from_arrays(read_npz(self.artifact_path(record)))


def _replaced(run_id: str, old: str | None, new: str | None) -> str | None:
    """The name of the artifact a new row of ``run_id`` replaces, when it is one this store made."""
    try:
        folder, name = split_artifact(old) if old is not None else ("", "")
    except UnsafePathError:
        return None  # a path the store never writes: never deleted
    if folder == LEGACY_FOLDER or name == new or not owned_name(run_id, name):
        return None
    return name


def _remove_own(folder: Path, name: str) -> None:
    """Delete ``folder/name`` and its temporary files (``<name>*.tmp``), regular files inside ``folder`` only."""
    if not ARTIFACT_NAME.fullmatch(name) or not folder.is_dir():
        return
    candidates = [folder / name] + [p for p in folder.iterdir() if p.name.startswith(name)
                                    and p.name.endswith(TMP_SUFFIX)]
    for path in candidates:
        try:
            if regular_file(path) and inside(folder, path, "artifact"):
                path.unlink(missing_ok=True)
        except (UnsafePathError, OSError):
            continue


def _record(row) -> RunRecord:
    """Decode one row; a column that is not the JSON a store writes raises ``ValueError``."""
    run_id, finished_at, status, message, config, metrics, timings, environment, artifact, fingerprint, tb, parent = row
    try:
        columns = {"config": json.loads(config), "metrics": json.loads(metrics), "timings": json.loads(timings),
                   "environment": json.loads(environment)}
        result = decode_result({"run_id": run_id, "status": status, "message": message, **columns,
                                "data_fingerprint": fingerprint, "traceback": tb, "parent_run_id": parent})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"run {run_id}: its stored row is malformed ({type(exc).__name__}: {exc})") from None
    return RunRecord(run_id, finished_at, status, message, result.config, result.metrics, result.timings,
                     result.environment, artifact, fingerprint, tb, parent)


def read_artifact(store_path: str | os.PathLike, record: RunRecord) -> Artifact:
    """``record``'s artifact, found in the folder of the store it was read from
    (``store_path``); ``UnsafePathError`` when the row names a path outside it."""
    if record.artifact is None:
        raise FileNotFoundError(f"run {record.run_id} has no artifact")
    return Artifact.from_arrays(read_npz(locate_artifact(store_path, record.artifact)))


def support_size(store_path: str | os.PathLike, record: RunRecord) -> int | None:
    """The number of images in ``record``'s distilled set (only its labels are read); ``None`` when
    the artifact is missing (not copied with the store), unreadable, outside the store's folder or
    without a set."""
    if record.artifact is None:
        return None
    try:
        with np.load(locate_artifact(store_path, record.artifact)) as arrays:  # an NpzFile reads on access
            return Artifact.support_size(arrays)
    except (OSError, KeyError, ValueError, IndexError, zipfile.BadZipFile):
        return None


def _int64(value: Any, name: str) -> int:
    value = int(value)
    if not _INT64[0] <= value <= _INT64[1]:
        raise ValueError(f"{name}={value} does not fit in the results store (a 64-bit signed integer)")
    return value


def _real(value: Any) -> float | None:
    return None if value is None else float(value)


def open_existing(path: str | os.PathLike) -> ResultStore:
    """Open an existing store read-only; never creates, migrates or writes anything.

    Raises ``FileNotFoundError`` when ``path`` is not an existing file, ``NotAStoreError`` when the
    file is not an SQLite database holding distillbench's ``runs`` table (or its schema version is
    not one this release reads), and ``StoreUnavailableError`` naming what failed when it cannot be
    read (a permission, a lock, a read-only folder whose WAL holds rows). The returned store reads
    (``records``, ``get``, ``count``, ``load_artifact``); ``save`` fails (read-only).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no results store at {str(path)!r}")
    store = ResultStore.__new__(ResultStore)
    store.path = path
    store._artifact_dir = path.parent / artifact_folder_name(path)
    try:
        store._conn, tables, columns = _connect_read_only(path)
    except sqlite3.Error as exc:
        if failures.not_a_database(exc):
            raise NotAStoreError(f"{str(path)!r} is not a distillbench results store ({exc})") from None
        raise failures.unavailable(exc, path, writing=False) from None
    try:
        if "meta" not in tables or set(_COLUMNS.split(", ")) - columns:
            raise NotAStoreError(f"{str(path)!r} is not a distillbench results store (no runs table with the"
                                 f" expected columns)")
        check_schema_version(store._conn, path)
    except BaseException:
        store.close()
        raise
    store._select = ", ".join([_COLUMNS, *(c if c in columns else "NULL" for c in _NEW_COLUMNS)])
    return store


def _connect_read_only(path: Path) -> tuple[sqlite3.Connection, set[str], set[str]]:
    """A read-only connection, its tables and the runs table's columns. In a read-only folder with
    no ``-wal`` holding rows (nothing can write there), the file is opened ``immutable``: SQLite
    would otherwise need to create the ``-shm`` file it cannot create."""
    uri = path.resolve().as_uri()
    try:
        return _tables(sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30.0))
    except sqlite3.OperationalError as exc:
        wal = path.with_name(path.name + "-wal")
        frozen = not os.access(path.parent, os.W_OK) and (not wal.exists() or wal.stat().st_size == 0)
        if not frozen or failures.not_a_database(exc):
            raise
    return _tables(sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, timeout=30.0))


def _tables(conn: sqlite3.Connection) -> tuple[sqlite3.Connection, set[str], set[str]]:
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")} if "runs" in tables else set()
    except BaseException:
        conn.close()
        raise
    return conn, tables, columns


def check_schema_version(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse, touching nothing, a store whose ``schema_version`` is not an integer this release knows:
    a newer release's store may hold what this one would misread, a malformed one is not ours."""
    found = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if found is None:
        return
    value = found[0]
    if not isinstance(value, str) or not _VERSION_TEXT.fullmatch(value) or int(value) < 1:
        raise NotAStoreError(f"{str(path)!r} has a malformed store schema version ({str(value)[:40]!r}; a store"
                             f" holds an integer from 1 to {SCHEMA_VERSION}): it is damaged or not a distillbench"
                             f" store, and was left untouched")
    if int(value) > SCHEMA_VERSION:
        raise NotAStoreError(f"{str(path)!r} was written by a newer distillbench (store schema {value}; this"
                             f" version reads up to {SCHEMA_VERSION}): upgrade distillbench to use it")
