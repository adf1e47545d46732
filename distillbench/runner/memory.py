"""Peak memory of one run, not of the process that ran it.

A process's high-water mark (``ru_maxrss``) only grows: where one process runs several cells (the
``local`` launcher, ``distillbench evaluate``, a reused Ray worker), every cell after the largest
would be stored with that cell's peak. So each run starts by handing the memory earlier runs freed back to the system
(glibc keeps freed blocks for reuse, ``pipeline.keep_freed_memory``; ``malloc_trim`` returns them)
and resetting the mark (Linux: ``5`` written to ``/proc/self/clear_refs`` sets ``VmHWM`` to the
current RSS), and ends by reading it: the run's ``peak_rss_mb`` is the most memory the process held
while the run ran, what it held before (the sweep's loaded data, compiled programs) included.
Where the mark cannot be reset (another system, a kernel that refuses), the process's mark is
stored and the run says so: ``peak_rss_scope = "process"`` among its timings.

The device's ``peak_bytes_in_use`` has no reset either: it is stored (``device_peak_mb``) for the
first run a process measures, and for later ones only with ``device_peak_scope = "process"``.
"""

from __future__ import annotations

import ctypes
import gc
import resource
import sys
from typing import Any

_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"

#: Runs measured in this process so far (the device's mark is the first run's own).
_measured = 0


class Window:
    """One run's measurement: made at its start (:func:`start`), read at its end (:meth:`peak`)."""

    def __init__(self, reset: bool, first: bool):
        self.reset = reset
        self.first = first

    def peak(self) -> dict[str, Any]:
        """``peak_rss_mb`` (MiB) since the start, ``device_peak_mb`` where the backend tracks it, and
        the scope of any figure that is the process's rather than the run's."""
        out: dict[str, Any] = {}
        hwm = _vm_hwm_mb() if self.reset else None
        if hwm is not None:
            out["peak_rss_mb"] = hwm
        else:
            out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
            out["peak_rss_scope"] = "process"
        device = _device_peak_mb()
        if device is not None:
            out["device_peak_mb"] = device
            if not self.first:
                out["device_peak_scope"] = "process"
        return out


def start() -> Window:
    """Release what earlier runs freed and reset the process's high-water mark where the system
    allows; the run's :class:`Window`."""
    global _measured
    first = _measured == 0
    _measured += 1
    release_freed_memory()
    return Window(reset_high_water_mark(), first)


def release_freed_memory() -> None:
    """Collect unreachable objects and return the C heap's free memory to the system (glibc)."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # another C library
            pass


#: How far above the current RSS the mark may read just after a reset (pages touched meanwhile).
_RESET_SLACK_MB = 1.0


def reset_high_water_mark() -> bool:
    """Set the process's peak RSS to its current RSS; False where the system offers no way to (or
    accepts the request and leaves the mark where it was)."""
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
    except OSError:
        return False
    status = _status_mb()
    return "VmHWM" in status and "VmRSS" in status and status["VmHWM"] - status["VmRSS"] <= _RESET_SLACK_MB


def _vm_hwm_mb() -> float | None:
    return _status_mb().get("VmHWM")


def _status_mb() -> dict[str, float]:
    """``VmHWM`` and ``VmRSS`` of ``/proc/self/status``, in MiB (it reports kB); empty elsewhere."""
    out = {}
    try:
        with open(_STATUS) as f:
            for line in f:
                name, _, value = line.partition(":")
                if name in ("VmHWM", "VmRSS"):
                    out[name] = int(value.split()[0]) / 1024
    except (OSError, ValueError, IndexError):
        return {}
    return out


def _device_peak_mb() -> float | None:
    try:
        import jax

        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # no backend, or one without allocator statistics
        return None
    return stats["peak_bytes_in_use"] / 2**20 if "peak_bytes_in_use" in stats else None
