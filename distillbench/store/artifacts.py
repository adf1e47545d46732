"""Distilled support sets as ``.npz`` files, written atomically.

The file is written under a temporary name in the same folder, fsynced, renamed into place and
the folder fsynced, so a reader never sees a partial artifact and a renamed file survives a
crash; the database row that references it is committed only afterwards.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np

#: Suffix of artifacts being written; a file with it is never referenced by a row.
TMP_SUFFIX = ".tmp"


def write_npz(path: Path, arrays: dict[str, np.ndarray], mode: int | None = None) -> None:
    """Write ``arrays`` to ``path`` atomically; ``mode``: permission bits of the finished file."""
    # Zip in memory, then one plain write: with a full disk, numpy < 2 leaves a ZipFile on the
    # failed file whose __del__ prints an "Exception ignored" traceback to stderr.
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {name: data[name] for name in data.files}
