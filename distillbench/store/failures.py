"""Why a store could not be opened, in words: SQLite's own messages say too little.

"unable to open database file" is what SQLite says for a read-only folder (a WAL store needs its
``-wal`` and ``-shm`` files beside it), a missing permission and a missing folder alike; "disk
I/O error" is often a full disk. This module looks at the file and its folder to name the cause
and what to do about it.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from pathlib import Path


class StoreUnavailableError(OSError):
    """A store that exists (or may be created) but cannot be opened now: the message says why."""


def _readonly_folder(folder: Path) -> bool:
    return folder.is_dir() and not os.access(folder, os.W_OK)


def _free_mb(folder: Path) -> float | None:
    try:
        return shutil.disk_usage(folder).free / 2**20
    except OSError:
        return None


def describe(exc: BaseException, path: Path, writing: bool) -> str:
    """One clause naming what failed when opening the store at ``path`` (``writing``: for ``run``)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    folder = path.parent if str(path.parent) else Path(".")
    low = text.lower()
    if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "disk is full" in low or "no space" in low:
        return f"the disk is full ({text}); free space in {str(folder)!r} and run again"
    if "locked" in low or "busy" in low:
        return (f"it is locked by another process for more than 30 s ({text}); wait for the other run to finish, "
                f"or check that no other program holds {str(path)!r} open")
    if path.exists() and not os.access(path, os.R_OK):
        return f"permission denied: {str(path)!r} cannot be read by this user"
    if _readonly_folder(folder) and (writing or "unable to open" in low or "readonly" in low):
        if not writing:  # read-only folders are read as they are, unless rows wait in a -wal file
            return (f"its folder {str(folder)!r} is read-only and its -wal file holds rows not yet in the store "
                    f"file; copy the store, its -wal file and its artifacts folder to a writable folder")
        return (f"its folder {str(folder)!r} is read-only (SQLite writes the store's -wal and -shm journal files "
                f"beside it); copy it to a writable folder with `distillbench store copy`")
    if writing and path.exists() and not os.access(path, os.W_OK):
        return f"the file {str(path)!r} is read-only; make it writable or copy it with `distillbench store copy`"
    if "disk i/o" in low or (isinstance(exc, OSError) and exc.errno in (errno.EIO, errno.EFBIG)):
        free = _free_mb(folder)
        room = f"; {free:.0f} MB free in {str(folder)!r}" if free is not None else ""
        return f"a disk I/O error ({text}: the disk may be full or failing{room})"
    return text


def unavailable(exc: BaseException, path: Path, writing: bool) -> StoreUnavailableError:
    """The error to raise for ``exc``: it says what failed, and keeps ``exc`` as its cause."""
    error = StoreUnavailableError(f"cannot open results store {str(path)!r}: {describe(exc, path, writing)}")
    error.__cause__ = exc
    return error


def not_a_database(exc: BaseException) -> bool:
    """SQLite read the file and it is not a database (as opposed to: could not read it)."""
    return isinstance(exc, sqlite3.DatabaseError) and any(
        words in str(exc).lower() for words in ("file is not a database", "file is encrypted", "malformed"))
