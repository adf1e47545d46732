"""Shared test setup: float64 enabled exactly as the runner enables it, the CLI's XLA flags, and
the suite's fast compilation."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from distillbench.compat import xla_flags  # noqa: E402  (reads no JAX)

# The suite compiles a few thousand small programs that run in microseconds; compiling them was
# most of its time. Two XLA:CPU settings make compiles ~3x cheaper: LLVM optimisation level 0, and
# XLA's classic loop emitters instead of its MLIR fusion emitters (the FRePo protocol tests, one
# core, jaxlib 0.10.2: 126 s -> 52 s -> 25 s; the fast ConvNet kernel's value-and-gradient program
# 7.2 s -> 2.4 s). XLA's HLO passes still run, so the programs compute the same things; their machine
# code can round differently in the last bits (a float32 feature, 6e-7 relative), so a test that
# compares two processes gives both the suite's flags (test_multidevice.py). The processes the tests
# start (the CLI, launcher workers) inherit them. Only jaxlib releases checked to accept a flag get it
# (XLA aborts on a flag it does not know). DISTILLBENCH_TEST_FAST_COMPILE=0 runs XLA's defaults.
FAST_COMPILE_FLAGS = (("--xla_backend_optimization_level=0", (0, 4), None),
                      ("--xla_cpu_use_fusion_emitters=false", (0, 5, 3), (0, 11)))
if os.environ.get("DISTILLBENCH_TEST_FAST_COMPILE", "1") != "0":
    _release = xla_flags.release(xla_flags.jaxlib_version() or "0")
    _flags = os.environ.get("XLA_FLAGS", "")
    for _flag, _first, _stop in FAST_COMPILE_FLAGS:
        if _flag.split("=")[0] not in _flags and _first <= _release and (_stop is None or _release < _stop):
            _flags = f"{_flags} {_flag}".strip()
    os.environ["XLA_FLAGS"] = _flags

xla_flags.apply()  # the suite runs with the CLI's XLA flags (set before JAX starts)

from distillbench.runner.pipeline import enable_float64  # noqa: E402

enable_float64()  # float64 on, float64 convolutions routed: as every run starts
