"""Report files are replaced whole or not at all.

A report written in place and cut short (a full disk, a file-size limit, Ctrl-C) would leave a
truncated page where the previous report was. Each file is written to a temporary file in the
same folder, flushed to disk, then renamed over the target (``os.replace``, atomic on POSIX); on
any failure the temporary file is removed and the previous file, if any, is left as it was.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; raise ``OSError`` with nothing changed.

    Missing parent folders are created, and removed again when the write fails.
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    mode = _existing_mode(path)
    if mode is not None and stat.S_ISDIR(mode):
        raise IsADirectoryError(21, "Is a directory", str(path))
    if mode is not None and not stat.S_ISREG(mode):
        _write_special(path, payload)  # /dev/stdout, /dev/null, a FIFO: nothing to replace
        return
    if path.is_symlink():  # replace the file the link names, as writing through it would, not the link
        path = Path(os.path.realpath(path))
    created = _make_parents(path.parent)
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError:
        _remove_dirs(created)
        raise
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, _mode(path))
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        _remove_dirs(created)
        raise


def _existing_mode(path: Path) -> int | None:
    try:
        return path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None


def _write_special(path: Path, payload: bytes) -> None:
    """Write to a device or a FIFO in place; a FIFO with no reader is an error, not a wait forever."""
    fd = os.open(path, os.O_WRONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        os.set_blocking(fd, True)
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _mode(path: Path) -> int:
    """The existing file's permissions, else those a plain ``open`` would give (0o666 less the umask)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return the ones created, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    done: list[Path] = []
    try:
        for each in reversed(missing):
            each.mkdir()
            done.insert(0, each)
    except OSError:
        _remove_dirs(done)
        raise
    return done


def _remove_dirs(created: list[Path]) -> None:
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            return
