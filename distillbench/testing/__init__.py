"""Conformance suite for plugin authors: check that components honour their contracts.

Call it from your plugin's own tests (pytest or any runner)::

    import my_plugin
    from distillbench.testing import check_plugin, check_kernel

    def test_conformance():
        check_plugin(my_plugin)                        # every component, default parameters

    def test_feature_form():
        check_kernel(my_plugin.COMPONENTS[0], {"features": 256})

Every check raises ``ConformanceError`` (an ``AssertionError``) whose message starts with the
contract that broke, e.g. ``kernel contract: kernel_fn(x1 (5, 8, 8, 1), x2 (3, 8, 8, 1), key)
must return shape (5, 3), got (5, 4) [kernel 'rbf']``. Checks run with float64 enabled, as runs do.
Importing this module does not import JAX; the checks do.

Per kind: ``check_architecture``, ``check_dataset``, ``check_kernel``, ``check_launcher``, ``check_loss``,
``check_objective``, ``check_evaluator``; the declaration alone: ``check_params``; any kind: ``check_component``;
a whole plugin module: ``check_plugin``; an installed package: ``check_installed``.
Data helpers: ``tiny_datasplit``, ``train_data``.
"""

from distillbench.testing._base import ConformanceError
from distillbench.testing.architectures import check_architecture
from distillbench.testing.data import tiny_datasplit
from distillbench.testing.datasets import check_dataset
from distillbench.testing.kernels import check_kernel
from distillbench.testing.launchers import check_launcher
from distillbench.testing.losses import check_loss
from distillbench.testing.objectives import check_evaluator, check_objective, train_data
from distillbench.testing.params import check_params
from distillbench.testing.plugin import (
    check_component,
    check_installed,
    check_plugin,
    plugin_components,
)

__all__ = [
    "ConformanceError",
    "check_architecture",
    "check_component",
    "check_dataset",
    "check_evaluator",
    "check_installed",
    "check_kernel",
    "check_launcher",
    "check_loss",
    "check_objective",
    "check_params",
    "check_plugin",
    "plugin_components",
    "tiny_datasplit",
    "train_data",
]
