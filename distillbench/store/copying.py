"""Copy or move a store: its SQLite file and the artifacts its rows name, as one consistent unit.

A plain ``cp`` of a store in use can miss rows still in its ``-wal`` file, and copies the
artifacts folder under the old store's name. ``copy_store`` holds the source's write lock (no
save lands half-way), copies the database with SQLite's backup API (the WAL's rows included),
copies each artifact a row names into ``<new name>.artifacts/`` and rewrites the rows' paths to
it. Everything is written under temporary names beside the target and renamed into place last,
so a copy killed half-way leaves no store at the target. ``move_store`` copies, checks the copy,
then deletes the source's file, its journal files and the artifacts its rows name (never another
file: a folder still holding one is kept and reported).
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from distillbench.errors import ConfigError
from distillbench.store.artifacts import fsync_dir
from distillbench.store.database import open_existing
from distillbench.store.paths import (LEGACY_FOLDER, UnsafePathError, artifact_folder_name, locate_artifact,
                                      regular_file, split_artifact)

JOURNALS = ("-wal", "-shm", "-journal")


@dataclass
class Copied:
    """What a copy or move did: rows and artifacts copied, artifacts a row names that were not there."""

    rows: int = 0
    artifacts: int = 0
    missing: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # move: source files left in place (not the store's)


def check_target(src: Path, dst: Path) -> None:
    """``ConfigError`` (one line) when ``dst`` would overwrite anything or is the source itself."""
    if src.resolve() == dst.resolve():
        raise ConfigError(f"{str(dst)!r} is the source store itself: give a new file name")
    taken = [p for p in (dst, dst.parent / artifact_folder_name(dst), *(dst.with_name(dst.name + j) for j in JOURNALS))
             if p.exists() or p.is_symlink()]
    if taken:
        raise ConfigError(f"{str(taken[0])!r} already exists: a copy never overwrites; give a new file name or "
                          f"remove it first")


def copy_store(src: str | os.PathLike, dst: str | os.PathLike) -> Copied:
    """Copy the store at ``src`` to the new file ``dst`` with the artifacts its rows name."""
    src, dst = Path(src), Path(dst)
    source = open_existing(src)  # a store, readable, a schema this release reads: else one line
    try:
        check_target(src, dst)
        dst.parent.mkdir(parents=True, exist_ok=True)
        lock = _write_lock(src)
        try:
            return _copy_locked(source._conn, src, dst)
        finally:
            if lock is not None:
                lock.close()
    finally:
        source.close()


def _write_lock(src: Path) -> sqlite3.Connection | None:
    """The source's write lock for the copy (no save lands half-way), or None where it cannot be taken
    (a read-only folder, where nothing can write either)."""
    try:
        conn = sqlite3.connect(src, timeout=30.0, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise ConfigError(f"{str(src)!r} is locked by a run writing to it for more than 30 s; copy it once "
                              f"that run has finished") from None
        return None
    return conn


def _copy_locked(conn: sqlite3.Connection, src: Path, dst: Path) -> Copied:
    """Artifacts, then the database, each under a temporary name; renamed into place last."""
    token = secrets.token_hex(4)
    tmp_db = dst.with_name(f".{dst.name}.copy-{token}")
    tmp_dir = dst.with_name(f".{artifact_folder_name(dst)}.copy-{token}")
    try:
        report, paths = _copy_artifacts(conn, src, tmp_dir, artifact_folder_name(dst))
        _copy_database(conn, tmp_db, paths)
        if report.artifacts:
            os.rename(tmp_dir, dst.parent / artifact_folder_name(dst))
        os.replace(tmp_db, dst)
        fsync_dir(dst.parent)
    finally:
        tmp_db.unlink(missing_ok=True)
        for journal in JOURNALS:
            tmp_db.with_name(tmp_db.name + journal).unlink(missing_ok=True)
        if tmp_dir.is_dir():
            shutil.rmtree(tmp_dir)  # ours alone: a fresh name made above
    return report


def _copy_artifacts(conn: sqlite3.Connection, src: Path, tmp_dir: Path, folder: str):
    """Copy every artifact a row names into ``tmp_dir``; the report and ``{run_id: new path}``."""
    report, paths = Copied(), {}
    rows = conn.execute("SELECT run_id, artifact FROM runs").fetchall()
    report.rows = len(rows)
    for run_id, stored in rows:
        if stored is None:
            continue
        try:
            _, name = split_artifact(stored)
            source = locate_artifact(src, stored)
        except UnsafePathError:
            report.missing.append(str(stored))  # a path outside the store: neither read nor copied
            continue
        paths[run_id] = f"{folder}/{name}"
        if not regular_file(source.resolve()):
            report.missing.append(str(stored))
            continue
        tmp_dir.mkdir(exist_ok=True)
        shutil.copyfile(source, tmp_dir / name)
        with open(tmp_dir / name, "rb") as f:
            os.fsync(f.fileno())
        report.artifacts += 1
    fsync_dir(tmp_dir)
    return report, paths


def _copy_database(conn: sqlite3.Connection, tmp_db: Path, paths: dict[str, str]) -> None:
    """SQLite's backup of ``conn`` into ``tmp_db`` (the WAL's rows included), the artifact paths
    rewritten to the new folder, checkpointed into one file and fsynced."""
    target = sqlite3.connect(tmp_db, isolation_level=None)
    try:
        conn.backup(target)
        target.execute("BEGIN")
        target.executemany("UPDATE runs SET artifact = ? WHERE run_id = ?", [(p, r) for r, p in paths.items()])
        if target.execute("SELECT 1 FROM sqlite_master WHERE name = 'pending_artifacts'").fetchone():
            target.execute("DELETE FROM pending_artifacts")  # the source's leftovers were not copied
        target.execute("COMMIT")
        target.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        target.close()
    with open(tmp_db, "rb") as f:
        os.fsync(f.fileno())


def move_store(src: str | os.PathLike, dst: str | os.PathLike) -> Copied:
    """Copy, check that the copy reads back every row, then delete the source's own files."""
    src, dst = Path(src), Path(dst)
    report = copy_store(src, dst)
    copy = open_existing(dst)
    try:
        if copy.count() != report.rows:
            raise OSError(f"the copy {str(dst)!r} holds {copy.count()} rows, not {report.rows}: the source is kept")
    finally:
        copy.close()
    names = _artifact_names(src)
    for suffix in ("", *JOURNALS):
        src.with_name(src.name + suffix).unlink(missing_ok=True)
    folder = src.parent / artifact_folder_name(src)
    for name in names:
        path = folder / name
        if regular_file(path):
            path.unlink()
    if folder.is_dir() and not folder.is_symlink():
        left = sorted(p.name for p in folder.iterdir())
        if left:
            report.kept = [str(folder / n) for n in left]
        else:
            folder.rmdir()
    return report


def _artifact_names(src: Path) -> list[str]:
    """The names of the artifacts in the source's own folder that its rows name (a move deletes those)."""
    source = open_existing(src)
    try:
        stored = [a for (a,) in source._conn.execute("SELECT artifact FROM runs WHERE artifact IS NOT NULL")]
    finally:
        source.close()
    names = []
    for value in stored:
        try:
            folder, name = split_artifact(value)
        except UnsafePathError:
            continue
        if folder != LEGACY_FOLDER:
            names.append(name)
    return names
