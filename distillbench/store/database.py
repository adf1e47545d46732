"""The results store: one SQLite row per run, the only module that talks SQL.

Durability: WAL journal with ``synchronous=FULL`` and one transaction per finished run, so a
process killed at any moment (SIGKILL included) leaves every committed row intact and readable;
the run in flight simply has no row and is redone next time. Rows are keyed by the config's
``run_id``; re-running a sweep skips rows whose status is ``done``.

Default location: ``./distillbench_results/results.sqlite`` (artifacts in
``./distillbench_results/artifacts/``); override with ``--store PATH`` or ``DISTILLBENCH_STORE``.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from distillbench.store.artifacts import read_npz, write_npz

STORE_ENV = "DISTILLBENCH_STORE"
DEFAULT_STORE = Path("distillbench_results") / "results.sqlite"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id       TEXT PRIMARY KEY,
    finished_at  TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('done', 'error', 'diverged', 'timeout')),
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
    artifact     TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_setting ON runs (dataset, ipc, objective, kernel, loss);
"""


def default_store_path() -> Path:
    return Path(os.environ.get(STORE_ENV) or DEFAULT_STORE)


@dataclass(frozen=True)
class RunRecord:
    """One stored run, decoded."""

    run_id: str
    finished_at: str
    status: str
    message: str | None
    config: dict[str, Any]
    metrics: dict[str, Any]
    timings: dict[str, Any]
    environment: dict[str, Any]
    artifact: str | None


class ResultStore:
    """Open (creating if needed) the SQLite store at ``path``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.artifact_dir = self.path.parent / "artifacts"
        self._conn = sqlite3.connect(self.path, timeout=30.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        with self._conn:
            self._conn.executescript(_SCHEMA)
            self._conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writes ------------------------------------------------------------------------------
    def save(
        self,
        *,
        run_id: str,
        status: str,
        message: str | None,
        config: Mapping[str, Any],
        metrics: Mapping[str, Any],
        timings: Mapping[str, Any],
        environment: Mapping[str, Any],
        arrays: Mapping[str, np.ndarray] | None = None,
    ) -> RunRecord:
        """Write the artifact (atomically), then upsert the row in one transaction."""
        artifact = None
        if arrays:
            artifact = f"artifacts/{run_id}.npz"
            write_npz(self.path.parent / artifact, dict(arrays))
        finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        row = (
            run_id, finished_at, status, message,
            config["dataset"]["name"], config["objective"]["name"], config["kernel"]["name"],
            config["loss"]["name"], config["evaluator"]["name"], int(config["ipc"]), int(config["seed"]),
            metrics.get("acc"), metrics.get("random_acc"),
            _dumps(config), _dumps(metrics), _dumps(timings), _dumps(environment), artifact,
        )
        with self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO runs (run_id, finished_at, status, message, dataset, objective, kernel,"
                " loss, evaluator, ipc, seed, acc, random_acc, config, metrics, timings, environment, artifact)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        return self.get(run_id)  # type: ignore[return-value]

    # -- reads -------------------------------------------------------------------------------
    def get(self, run_id: str) -> RunRecord | None:
        cur = self._conn.execute(f"SELECT {_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
        row = cur.fetchone()
        return _record(row) if row else None

    def is_done(self, run_id: str) -> bool:
        cur = self._conn.execute("SELECT 1 FROM runs WHERE run_id = ? AND status = 'done'", (run_id,))
        return cur.fetchone() is not None

    def records(self) -> Iterator[RunRecord]:
        for row in self._conn.execute(f"SELECT {_COLUMNS} FROM runs ORDER BY finished_at, run_id"):
            yield _record(row)

    def count(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]

    def load_artifact(self, record: RunRecord) -> dict[str, np.ndarray]:
        if record.artifact is None:
            raise FileNotFoundError(f"run {record.run_id} has no artifact")
        return read_npz(self.path.parent / record.artifact)


_COLUMNS = "run_id, finished_at, status, message, config, metrics, timings, environment, artifact"


def _record(row) -> RunRecord:
    run_id, finished_at, status, message, config, metrics, timings, environment, artifact = row
    return RunRecord(run_id, finished_at, status, message, json.loads(config), json.loads(metrics),
                     json.loads(timings), json.loads(environment), artifact)


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
    store.artifact_dir = path.parent / "artifacts"
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
    return store
