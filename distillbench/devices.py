"""Defaults that derive from the device the computation runs on, not from one reference CPU.

Every choice is a pure function of a :class:`DeviceInfo`, so the tests inject GPU descriptions
and check the GPU choices on a CPU-only machine. :func:`describe` builds the description of the
local devices (JAX is imported only there).

* Memory budget of an exact-kernel block (``memory_budget_mb=auto``): on CPU the blocks are
  sized for the caches and a shared machine (256 MiB, or an eighth of the available RAM if
  that is less: larger blocks were not faster on the reference CPU); on an accelerator a
  quarter of the device's memory (fewer, larger blocks keep it busy; the rest holds the inputs,
  the outputs and XLA's own buffers).
* Residuals the fast exact kernels keep for reverse mode across blocks (instead of recomputing
  each block's forward in the backward pass): on CPU 2 GiB, or an eighth of the available RAM if
  that is less (a fixed figure, so that the same run takes the same path, and gives the same
  bits, whatever memory happens to be free); a quarter of an accelerator's memory.
* RFAD target chunk (``batch_size=auto``): on CPU 256 images (chunks whose activations stay in
  cache ran 1.1-1.5x faster than one 1280-image batch); on an accelerator as many as the same
  quarter of its memory holds.
* RCIG's rows with gradient (``objective.support_rows`` unset): every row where a pass over them all
  fits (CPU: 8 GiB, fixed; an accelerator: a quarter of its memory), else as many as fit (the
  reference's subsampling).
* float32 matmul precision: ``highest`` by default, so float32 results agree with float64
  references on every device (GPUs otherwise use TF32, ~1e-3 relative error, for float32
  matmuls and convolutions); TF32 only where a parameter asks for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

#: Exact-kernel block budget on CPU (MiB): the value tuned on the reference CPU.
CPU_BUDGET_MB = 256.0
#: Residuals the exact kernels may keep across blocks on CPU (MiB).
CPU_RESIDUAL_MB = 2048.0
#: Fraction of an accelerator's memory one kernel block or one RFAD chunk may use.
ACCELERATOR_FRACTION = 0.25
#: Memory RCIG's passes over the support's rows may take on a CPU (MiB): one fixed figure.
CPU_ROWS_MB = 8192.0
#: RFAD target chunk on CPU (images): cache-sized chunks ran fastest on the reference CPU.
CPU_CHUNK = 256
#: matmul precision names accepted by the ``precision`` parameters, and what JAX calls them.
PRECISIONS = {"highest": "highest", "tf32": "tensorfloat32"}


@dataclass(frozen=True)
class DeviceInfo:
    """What the defaults depend on.

    platform: ``cpu``, ``gpu`` or ``tpu``; kind: e.g. ``NVIDIA H100 80GB HBM3``; count: local
    devices; memory_bytes: memory of one device (CPU: the available RAM), None if unknown.
    """

    platform: str
    kind: str
    count: int = 1
    memory_bytes: int | None = None

    @property
    def accelerator(self) -> bool:
        return self.platform != "cpu"


def _available_ram() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def describe(devices=None) -> DeviceInfo:
    """The :class:`DeviceInfo` of ``devices`` (default: JAX's local devices)."""
    import jax

    devices = list(devices if devices is not None else jax.local_devices())
    first = devices[0]
    memory = None
    if first.platform == "cpu":
        memory = _available_ram()
    else:
        try:
            stats = first.memory_stats() or {}
        except Exception:  # not every backend implements memory_stats
            stats = {}
        memory = stats.get("bytes_limit") or stats.get("bytes_reservable_limit")
    return DeviceInfo(platform=first.platform, kind=str(first.device_kind), count=len(devices),
                      memory_bytes=int(memory) if memory else None)


_CACHE: dict = {}


def current() -> DeviceInfo:
    """:func:`describe` of the local devices, computed once per process."""
    if "info" not in _CACHE:
        _CACHE["info"] = describe()
    return _CACHE["info"]


def memory_budget_mb(info: DeviceInfo, requested: float | None = None) -> float:
    """Working memory (MiB) one exact-kernel block may use: ``requested``, or from ``info``."""
    if requested is not None:
        return float(requested)
    if not info.accelerator:
        if info.memory_bytes is None:
            return CPU_BUDGET_MB
        return max(16.0, min(CPU_BUDGET_MB, info.memory_bytes / 8 / 2**20))
    if info.memory_bytes is None:
        return CPU_BUDGET_MB
    return ACCELERATOR_FRACTION * info.memory_bytes / 2**20


def residual_memory_mb(info: DeviceInfo) -> float:
    """Memory (MiB) the exact kernels may fill with residuals kept for reverse mode across blocks."""
    if info.memory_bytes is None:
        return CPU_BUDGET_MB
    if not info.accelerator:
        return min(CPU_RESIDUAL_MB, info.memory_bytes / 8 / 2**20)
    return ACCELERATOR_FRACTION * info.memory_bytes / 2**20


def rf_chunk_size(info: DeviceInfo, bytes_per_example: int, requested: int | None = None) -> int:
    """Examples per RFAD forward chunk: ``requested``, else cache-sized (CPU) or as many as a
    quarter of the accelerator's memory holds, given the largest activation of one example of
    one network, ``bytes_per_example``."""
    if requested is not None:
        return int(requested)
    if not info.accelerator or info.memory_bytes is None:
        return CPU_CHUNK
    return max(CPU_CHUNK, int(ACCELERATOR_FRACTION * info.memory_bytes // max(1, bytes_per_example)))


def gradient_rows(info: DeviceInfo, bytes_per_row: int, rows: int, requested: int | None = None) -> int:
    """Support rows RCIG's passes differentiate through: ``requested``; else 0 (every row) where a
    pass over all ``rows`` (``bytes_per_row`` each) fits the budget (a CPU: ``CPU_ROWS_MB``, fixed,
    since the choice changes the gradient and the same run must take the same path; an
    accelerator: a quarter of its memory), as many as fit otherwise; 0 where a row's cost or the
    accelerator's memory is unknown."""
    if requested is not None:
        return int(requested)
    if bytes_per_row <= 0 or (info.accelerator and info.memory_bytes is None):
        return 0
    budget = ACCELERATOR_FRACTION * info.memory_bytes if info.accelerator else CPU_ROWS_MB * 2**20
    fit = int(budget // bytes_per_row)
    return 0 if rows <= fit else max(1, fit)


def matmul_precision(precision: str = "highest") -> str:
    """JAX's name for a ``precision`` parameter value (``highest`` or ``tf32``)."""
    try:
        return PRECISIONS[precision]
    except KeyError:
        raise ValueError(f"unknown precision {precision!r} (choose from: {', '.join(PRECISIONS)})") from None
