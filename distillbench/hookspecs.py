"""The plugin hooks of distillbench: markers and every hookspec, one docstring each.

Third-party packages expose a module in the ``distillbench`` entry-point group and write::

    from distillbench import hookimpl, Component

    @hookimpl
    def distillbench_components():
        return [Component(kind="kernel", name="rbf", summary="...", build="my_pkg.rbf:build")]

The built-in components are registered through exactly this hook, and the built-in data commands
through ``distillbench_data_commands``. A plugin module may also declare the plugin API version(s)
it is written for, ``DISTILLBENCH_API = 2`` (see ``distillbench.API_VERSION`` and docs/plugins.md,
"Versioning"); hook implementations whose name matches no hookspec here are reported as load
failures rather than silently ignored.
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "distillbench"
#: The entry-point group third-party plugins register under.
ENTRY_POINT_GROUP = "distillbench"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def distillbench_components():
    """Return an iterable of ``distillbench.Component`` declarations this plugin provides.

    Called once when the registry is built (``list``, ``run``). Keep it cheap and free of
    heavy imports: put the implementation behind ``Component.build = "module:function"``.
    """


@hookspec
def distillbench_data_commands():
    """Return an iterable of ``click.Command`` objects, shown as ``distillbench data <name>``.

    For a plugin's dataset tools (listing, downloading, converting files). Called only when
    ``distillbench data`` runs, never for ``distillbench --help``; keep the module that returns them
    free of heavy imports. A command reports bad input by raising ``distillbench.ConfigError`` (one
    line on stderr, exit code 2) and other failures by raising ``click.ClickException`` (exit 1).
    """
