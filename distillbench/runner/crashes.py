"""Cells that kill their process: noticed on the next run, recorded, skipped, retried on request.

A cell run in the driver's process (``launcher=local``) can take the process with it: a segfault
in a library's compiled code, an abort, the kernel's out-of-memory killer. Nothing in the dying
process can write a row then, so the sweep leaves a marker while each cell runs,
``<store>.running/<run_id>.<pid>.json`` (host and pid), with Python's ``faulthandler`` writing
into ``<run_id>.<pid>.fault`` beside it (it names the fatal signal: "Segmentation fault",
"Aborted", ...). Both are removed once the cell's outcome is stored, whatever it is.

The next run finds the markers of processes that are gone (same host, pid no longer alive):
- a fatal signal on record, or two deaths without one (a SIGKILL twice: the OOM killer, not a
  user's kill -9 of a driver): the cell is stored as ``error`` ("the process died with SIGSEGV in
  this cell"), unless a ``done`` row stays, and later runs skip it with that line until
  ``run --retry-crashed`` clears its markers;
- one death without a trace (a driver killed by a user, a machine that stopped): the cell is
  retried, as any interrupted cell is.

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
#: deaths without a signal on record that make a cell one that kills its process
DEATHS_WITHOUT_TRACE = 2


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


def _signal_of(marker: Path) -> str | None:
    fault = marker.with_suffix(".fault")
    try:
        text = fault.read_text(errors="replace")[:4096]
    except OSError:
        return None
    return next((name for words, name in SIGNAL_WORDS.items() if words in text), None)


def crash_report(store_path: str | os.PathLike, run_id: str) -> str | None:
    """Why ``run_id`` is a cell that kills its process (one line), or None: run it."""
    dead = _dead_markers(markers_folder(store_path), run_id)
    signals = [s for s in map(_signal_of, dead) if s is not None]
    if not signals and len(dead) < DEATHS_WITHOUT_TRACE:
        return None
    how = f"with {signals[-1]}" if signals else f"without a trace {len(dead)} times (SIGKILL: out of memory?)"
    return (f"the process died {how} in this cell; later runs skip it "
            f"(add --retry-crashed to run it again)")


def clear(store_path: str | os.PathLike, run_id: str) -> None:
    """Forget the dead processes' markers of ``run_id`` (``--retry-crashed``, or its outcome stored)."""
    for marker in _dead_markers(markers_folder(store_path), run_id):
        marker.with_suffix(".fault").unlink(missing_ok=True)
        marker.unlink(missing_ok=True)


@contextmanager
def watching(store_path: str | os.PathLike, run_id: str) -> Iterator[None]:
    """While the body runs this cell: its marker, and faulthandler writing into its fault file."""
    folder = markers_folder(store_path)
    folder.mkdir(exist_ok=True)
    marker = folder / f"{run_id}.{os.getpid()}.json"
    marker.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}))
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
