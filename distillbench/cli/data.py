"""``distillbench data``: dataset tools that plugins provide (the ``distillbench_data_commands`` hook).

The core knows no dataset: the built-in ``list`` and ``download`` come from the built-in plugin
through the same hook a third-party package uses. The plugins are loaded only when ``data`` runs
(``distillbench --help`` loads none). A plugin whose hook raises, or two plugins that provide the
same command name, get one warning line; such a name is not offered.
"""

from __future__ import annotations

import click

from distillbench.cli.common import fail


class PluginCommands(click.Group):
    """A group whose subcommands are collected from the plugins' hook the first time they are needed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._collected: dict[str, click.Command] | None = None

    def _plugin_commands(self) -> dict[str, click.Command]:
        if self._collected is None:
            self._collected = collect_data_commands(warn=lambda line: click.echo(f"warning: {line}", err=True))
        return self._collected

    def list_commands(self, ctx) -> list[str]:
        return sorted(self._plugin_commands())

    def get_command(self, ctx, name: str) -> click.Command | None:
        return self._plugin_commands().get(name)

    def invoke(self, ctx):
        from distillbench.errors import ConfigError

        try:
            return super().invoke(ctx)
        except ConfigError as exc:  # a plugin command's bad input: one line, exit 2
            fail(str(exc))


def collect_data_commands(warn, extra: tuple = ()) -> dict[str, click.Command]:
    """``{name: command}`` from every plugin's ``distillbench_data_commands``, each plugin isolated."""
    from distillbench.plugins import load_plugins, one_line

    loaded = load_plugins(extra=extra)
    for failure in loaded.failures:
        warn(failure.line())
    found: dict[str, list[tuple[str, click.Command]]] = {}
    for impl in loaded.manager.hook.distillbench_data_commands.get_hookimpls():
        source = loaded.info_of(impl.plugin).source
        try:
            commands = list(impl.function() or ())
            bad = [c for c in commands if not isinstance(c, click.Command)]
            if bad:
                raise TypeError(f"returned {type(bad[0]).__name__}, expected click.Command")
        except (Exception, SystemExit) as exc:
            warn(f"{source}: distillbench_data_commands() failed: {one_line(exc)}")
            continue
        for command in commands:
            found.setdefault(command.name, []).append((source, command))
    for name, providers in found.items():
        if len(providers) > 1:
            warn(f"data command {name!r} is provided by {' and '.join(s for s, _ in providers)}; it is not offered")
    return {name: providers[0][1] for name, providers in found.items() if len(providers) == 1}


@click.group(name="data", cls=PluginCommands)
def data() -> None:
    """Dataset tools the installed plugins provide, e.g. listing and downloading real datasets."""
