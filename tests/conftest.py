"""Shared test setup: float64 enabled exactly as the runner enables it, and the CLI's XLA flags."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from distillbench.compat import xla_flags  # noqa: E402

xla_flags.apply()  # the suite runs with the CLI's XLA flags (set before JAX starts)

from distillbench.runner.pipeline import enable_float64  # noqa: E402

enable_float64()  # float64 on, float64 convolutions routed: as every run starts
