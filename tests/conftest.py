"""Shared test setup: float64 enabled exactly as the runner enables it, and the CLI's XLA flags."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from distillbench.compat import xla_flags  # noqa: E402

xla_flags.apply()  # the suite runs with the CLI's XLA flags (set before JAX starts)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
