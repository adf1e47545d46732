"""XLA:CPU flags for the processes distillbench starts itself: the CLI, launcher workers, benchmarks.

jaxlib 0.8.1 and later hand convolutions and dots, with the element-wise loops and reductions
around them, to YNNPACK fusions on the CPU. On the reference 2-core CPU (AMD EPYC, Zen 3, AVX2)
with jaxlib 0.10.2 those fusions made the RFAD step ~1.9x and a convnet's training step 1.6-2.1x
slower than XLA's own (Eigen) convolutions, and did not speed up the exact kernels
(``benchmarks/ab_xla_flags.py``, benchmarks/README.md). So distillbench turns the YNNPACK fusions off
(``--xla_cpu_experimental_ynn_fusion_type=``, an empty list) in the processes it owns.

* A user's setting wins. When ``XLA_FLAGS`` already names the flag, nothing is added, and
  ``DISTILLBENCH_XLA_DEFAULTS=0`` leaves ``XLA_FLAGS`` exactly as it is (JAX's own defaults).
* Only jaxlib releases known to accept the flag get it (``YNN_FLAG_RELEASES``: the flag is in
  the 0.8.1-0.10.2 binaries, and not in 0.8.0 and earlier). XLA aborts the process on a flag it
  does not know, so a newer jaxlib gets the flag only once someone has checked it
  (``XLA_FLAGS=--help python -c "import jax; jax.numpy.zeros(1)"`` lists the flags).
* A process whose jaxlib does not accept the flag drops the setting distillbench adds from the
  ``XLA_FLAGS`` it inherited (a SLURM job started by a driver with a newer jaxlib).
* XLA reads ``XLA_FLAGS`` once, when JAX starts its first backend. :func:`apply` therefore
  changes nothing once JAX is imported.

Library users who want the same setting put the flag in ``XLA_FLAGS`` themselves, or call
:func:`apply` before they import JAX.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
from collections.abc import Mapping

#: Turns the YNNPACK fusions off, with an empty list of fusion types.
YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"

#: The jaxlib releases that accept the flag, [first, stop).
YNN_FLAG_RELEASES = ((0, 8, 1), (0, 11))

#: Set to 0 to leave ``XLA_FLAGS`` alone.
OPT_OUT = "DISTILLBENCH_XLA_DEFAULTS"


def release(version: str) -> tuple[int, ...]:
    """The leading numbers of a version string: ``"0.10.2"`` -> (0, 10, 2), ``"0.11.0.dev1"`` -> (0, 11, 0)."""
    numbers = []
    for part in version.split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        numbers.append(int(digits.group()))
        if digits.group() != part:
            break
    return tuple(numbers)


def accepts_ynn_flag(jaxlib_version: str | None) -> bool:
    """Whether this jaxlib release is known to accept :data:`YNN_FUSION_FLAG`."""
    if not jaxlib_version:
        return False
    first, stop = YNN_FLAG_RELEASES
    return first <= release(jaxlib_version) < stop


def cpu_flags(environ: Mapping[str, str], jaxlib_version: str | None) -> str:
    """The ``XLA_FLAGS`` of ``environ`` with distillbench's CPU defaults added where this jaxlib
    accepts them, the flags do not set them already and ``environ`` does not opt out.

    Where this jaxlib does not accept the flag, the setting distillbench adds is taken out of
    flags inherited from another process (e.g. a SLURM job started from a driver with a newer
    jaxlib): XLA would abort on it.
    """
    flags = environ.get("XLA_FLAGS", "")
    ours = f"{YNN_FUSION_FLAG}="
    if environ.get(OPT_OUT, "1").strip() == "0":
        return flags
    if not accepts_ynn_flag(jaxlib_version):
        return " ".join(flag for flag in flags.split() if flag != ours)
    if YNN_FUSION_FLAG.lstrip("-") in flags:
        return flags
    return f"{flags} {ours}".strip()


def jaxlib_version() -> str | None:
    """The installed jaxlib's version (None: not installed), read without importing it."""
    try:
        return importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return None


def apply() -> bool:
    """Add the defaults to this process's ``XLA_FLAGS`` (:func:`cpu_flags`) before JAX starts.

    Returns whether ``XLA_FLAGS`` changed. Nothing changes once JAX is imported in this process:
    it would be too late to take effect.
    """
    if "jax" in sys.modules:
        return False
    wanted = cpu_flags(os.environ, jaxlib_version())
    if wanted == os.environ.get("XLA_FLAGS", ""):
        return False
    os.environ["XLA_FLAGS"] = wanted
    return True
