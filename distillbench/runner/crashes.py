"""Cells that kill their process: noticed on the next run, recorded, skipped, retried on request.

A cell run in the driver's process (``launcher=local``) can take the process with it: a segfault
in a library's compiled code, an abort, the kernel's out-of-memory killer. Nothing in the dying
process can write a row then, so the sweep leaves a marker while each cell runs,
``<store>.running/<run_id>.<pid>.json`` (host and pid), with Python's ``faulthandler`` writing
into ``<run_id>.<pid>.fault`` beside it (it names the fatal signal: "Segmentation fault",
"Aborted", ...). Both are removed once the cell's outcome is stored, whatever it is.

The next run finds the markers of processes that are gone (same host, pid no longer alive):
- a fatal signal on record, or no signal but the kernel's out-of-memory killer struck while the
  cell ran (its ``oom_kill`` counter, of the cgroup or of the machine, grew since the marker was
  written): the cell is stored as ``error`` ("the process died with SIGSEGV in this cell"),
  unless a ``done`` row stays, and later runs skip it with that line until ``run --retry-crashed``
  clears its markers;
- a death with neither (a driver killed by a user, a machine that stopped): the cell is retried,
  as any interrupted cell is; a kill must never cost a cell its result.

Markers of other hosts are never judged (their pids mean nothing here).
"""

from __future__ import annotations

import faulthandler
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: faulthandler's words for the fatal signals it reports -> the signal's name
SIGNAL_WORDS = {"Segmentation fault": "SIGSEGV", "Bus error": "SIGBUS", "Floating point exception": "SIGFPE",
                "Aborted": "SIGABRT", "Illegal instruction": "SIGILL"}
#: where the kernel counts its out-of-memory kills: this cgroup's (v2), else the whole machine's
OOM_COUNTERS = (("/sys/fs/cgroup/memory.events", "oom_kill "), ("/proc/vmstat", "oom_kill "))


def markers_folder(store_path: str | os.PathLike) -> Path:
    """``results.sqlite`` -> ``results.sqlite.running``: one of the store's own folders."""
    path = Path(store_path)
    return path.parent / (path.name + ".running")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def oom_kills() -> int | None:
    """The kernel's count of out-of-memory kills (None where no counter can be read)."""
    for path, prefix in OOM_COUNTERS:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith(prefix):
                return int(line[len(prefix):].strip())
    return None


def _dead_markers(folder: Path, run_id: str) -> list[Path]:
    """This host's markers of ``run_id`` whose process is gone (ours, ``os.getpid()``, is alive)."""
    if not folder.is_dir():
        return []
    host, dead = socket.gethostname(), []
    for marker in sorted(folder.glob(f"{run_id}.*.json")):
        try:
            data = json.loads(marker.read_text())
            pid, marker_host = int(data["pid"]), str(data["host"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not one of ours whole: never judged, never deleted
        if marker_host == host and marker.name == f"{run_id}.{pid}.json" and not _alive(pid):
            dead.append(marker)
    return dead


def _cause(marker: Path) -> str | None:
    """How the marker's process died: a fatal signal, the OOM killer, or None (no trace)."""
    try:
        text = marker.with_suffix(".fault").read_text(errors="replace")[:4096]
    except OSError:
        text = ""
    signal = next((name for words, name in SIGNAL_WORDS.items() if words in text), None)
    if signal is not None:
        return f"died with {signal}"
    try:
        before = json.loads(marker.read_text()).get("oom_kills")
    except (OSError, ValueError, AttributeError):
        return None
    now = oom_kills()
    if isinstance(before, int) and now is not None and now > before:
        return "was killed by the kernel's out-of-memory killer (SIGKILL)"
    return None


def crash_report(store_path: str | os.PathLike, run_id: str) -> str | None:
    """Why ``run_id`` is a cell that kills its process (one line), or None: run it."""
    causes = []
    for marker in _dead_markers(markers_folder(store_path), run_id):
        cause = _cause(marker)
        if cause is None:  # judged: retried; a later OOM kill elsewhere must not be blamed on it
            _forget(marker)
        else:
            causes.append(cause)
    if not causes:
        return None
    return f"the process {causes[-1]} in this cell; later runs skip it (add --retry-crashed to run it again)"


def clear(store_path: str | os.PathLike, run_id: str) -> None:
    """Forget the dead processes' markers of ``run_id`` (``--retry-crashed``, or its outcome stored)."""
    for marker in _dead_markers(markers_folder(store_path), run_id):
        _forget(marker)


def _forget(marker: Path) -> None:
    marker.with_suffix(".fault").unlink(missing_ok=True)
    marker.unlink(missing_ok=True)


@contextmanager
def watching(store_path: str | os.PathLike, run_id: str) -> Iterator[None]:
    """While the body runs this cell: its marker, and faulthandler writing into its fault file."""
    folder = markers_folder(store_path)
    folder.mkdir(exist_ok=True)
    marker = folder / f"{run_id}.{os.getpid()}.json"
    marker.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                                  "oom_kills": oom_kills()}))
    fault = open(marker.with_suffix(".fault"), "w")  # noqa: SIM115 (faulthandler keeps the descriptor)
    was_enabled = faulthandler.is_enabled()
    faulthandler.enable(file=fault, all_threads=True)
    try:
        yield
    finally:
        _restore_faulthandler(was_enabled)
        fault.close()
        marker.with_suffix(".fault").unlink(missing_ok=True)
        marker.unlink(missing_ok=True)


def _restore_faulthandler(was_enabled: bool) -> None:
    faulthandler.disable()
    if was_enabled:
        try:
            faulthandler.enable(file=sys.__stderr__, all_threads=True)
        except (AttributeError, ValueError, OSError):  # no real stderr (a daemon, a test runner's capture)
            pass
