"""A watchdog that makes a local Ray instance die with the driver that started it (Linux).

Ray's head processes share the driver's fate only in part: when the driver is SIGKILLed, its
``DashboardAgent`` and ``RuntimeEnvAgent`` (children of the raylet) go on running for a minute or
more, and a worker may outlive them. The driver starts this script (standard library only, run by
its path) with a pipe on its stdin that only the driver holds. While the pipe is open, the script
records, once a second, the driver's children whose command line names the instance's temp folder
(Ray's head processes) and all their descendants. When the pipe closes (the driver ended, however
it ended), it sends SIGTERM to every recorded process still alive, SIGKILL to those left after
:data:`GRACE_S`, removes the paths it was given (the short link to the temp folder), and exits.

Usage: ``python watchdog.py DRIVER_PID TEMP_DIR [PATH_TO_REMOVE ...]``.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

#: How often the process tree is read while the driver lives.
POLL_S = 1.0
#: How long processes get between SIGTERM and SIGKILL.
GRACE_S = 2.0


def _stat(pid: int) -> tuple[int, str] | None:
    """``(parent pid, start time)`` of a live process, or ``None``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), fields[19]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def ray_processes(driver: int, temp_dir: str, known: dict[int, str]) -> dict[int, str]:
    """``known`` plus the driver's children that name ``temp_dir`` and every descendant of them."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            parents[int(entry)] = stat
    tracked = {pid: start for pid, start in known.items() if parents.get(pid, (0, None))[1] == start}
    for pid, (ppid, start) in parents.items():
        if ppid == driver and pid != os.getpid() and temp_dir in _cmdline(pid):
            tracked[pid] = start
    grew = True
    while grew:
        grew = False
        for pid, (ppid, start) in parents.items():
            if ppid in tracked and pid not in tracked and pid != os.getpid():
                tracked[pid] = start
                grew = True
    return tracked


def reap(tracked: dict[int, str]) -> None:
    """SIGTERM, then after :data:`GRACE_S` SIGKILL, to every tracked process that is still the same one."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [pid for pid, start in tracked.items() if (_stat(pid) or (0, None))[1] == start]
        for pid in alive:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + (GRACE_S if sig == signal.SIGTERM else 0)
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [pid for pid in alive if (_stat(pid) or (0, None))[1] == tracked[pid]]


def main(argv: list[str]) -> None:
    driver, temp_dir, leftovers = int(argv[1]), argv[2], argv[3:]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the driver's group; the driver decides
    tracked: dict[int, str] = {}
    while True:
        tracked = ray_processes(driver, temp_dir, tracked)
        ready, _, _ = select.select([sys.stdin], [], [], POLL_S)
        if ready and not os.read(sys.stdin.fileno(), 4096):
            break  # end of file: the driver closed the pipe, or died
    reap(tracked)
    for path in leftovers:
        try:
            if os.path.islink(path):
                os.unlink(path)
        except OSError:
            pass


if __name__ == "__main__":
    main(sys.argv)
