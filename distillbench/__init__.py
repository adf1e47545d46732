"""distillbench: benchmark kernel-based dataset distillation (KIP, LS, RFAD) on JAX.

This module is the public API for plugin authors and stays free of heavy imports (no JAX), so
that ``distillbench --help`` and ``distillbench list`` start fast. Plugin authors may also import
the contracts (``distillbench.components.*``), the helpers ``distillbench.krr`` and
``distillbench.sampling``, and the conformance suite ``distillbench.testing`` (docs/plugins.md).
"""

from distillbench.components.spec import KINDS, Component, Metric
from distillbench.errors import ConfigError
from distillbench.hookspecs import hookimpl
from distillbench.params import Param

__version__ = "0.1.0"
#: Version of the plugin API (hooks and component contracts). Bumped on breaking changes; a plugin
#: that declares another one is skipped with one line (``distillbench.plugins.check_api``).
API_VERSION = 2

__all__ = ["API_VERSION", "KINDS", "Component", "ConfigError", "Metric", "Param", "__version__", "hookimpl"]
