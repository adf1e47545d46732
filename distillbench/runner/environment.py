"""The environment a run was measured in, recorded with every row (numbers are honest)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

_PACKAGES = ("distillbench", "jax", "jaxlib", "neural-tangents", "flax", "optax", "numpy")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The commit of the distillbench checkout, when it runs from one."""
    source = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True)
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def collect_environment() -> dict[str, Any]:
    import jax

    devices = jax.devices()
    return {
        "versions": {name: _version(name) for name in _PACKAGES},
        "python": platform.python_version(),
        "backend": jax.default_backend(),
        "device": devices[0].device_kind if devices else None,
        "device_count": len(devices),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),  # e.g. compat/xla_flags.py's CPU defaults
        "hostname": socket.gethostname(),
        "git_commit": git_commit(),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
