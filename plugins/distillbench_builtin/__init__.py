"""The built-in components of distillbench, registered through the public plugin hook.

This package uses only the API a third-party plugin has (``distillbench.hookimpl`` and
``distillbench.Component``); the plugin manager registers it by name before loading the
``distillbench`` entry points. Each kind lives in its own subpackage whose ``__init__`` declares
the components (no heavy imports) and whose modules implement them (JAX imported there).
"""

from distillbench import hookimpl


@hookimpl
def distillbench_components():
    from distillbench_builtin import architectures, datasets, evaluators, kernels, launchers, losses, objectives

    return [
        *architectures.COMPONENTS,
        *datasets.COMPONENTS,
        *kernels.COMPONENTS,
        *losses.COMPONENTS,
        *objectives.COMPONENTS,
        *evaluators.COMPONENTS,
        *launchers.COMPONENTS,
    ]


@hookimpl
def distillbench_data_commands():
    from distillbench_builtin.datasets.commands import COMMANDS

    return COMMANDS
