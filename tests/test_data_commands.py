"""``distillbench data`` commands come from plugins (the ``distillbench_data_commands`` hook)."""

import types

import click
import pytest
from click.testing import CliRunner

from distillbench import ConfigError, hookimpl
from distillbench.cli import main
from distillbench.cli.data import PluginCommands, collect_data_commands


@click.command(name="convert")
@click.argument("path")
def _convert(path):
    """Convert PATH."""
    if path == "bad":
        raise ConfigError("bad is not a file: give the path of an .npz file")
    click.echo(f"converted {path}")


def _plugin(name, hook):
    module = types.ModuleType(name)
    module.distillbench_data_commands = hookimpl(hook)
    return module


def test_the_built_in_commands_come_through_the_hook():
    warnings = []
    commands = collect_data_commands(warnings.append)
    assert {"list", "download"} <= set(commands) and not warnings
    assert commands["download"].callback.__module__ == "distillbench_builtin.datasets.commands"


def test_the_core_imports_no_built_in_plugin_module():
    """The core registers the built-in plugin by name (``plugins.BUILTIN_PLUGINS``) and imports none of it."""
    from pathlib import Path

    import distillbench

    root = Path(distillbench.__file__).parent
    importing = [str(path.relative_to(root)) for path in root.rglob("*.py")
                 if any(f"{word} distillbench_builtin" in path.read_text() for word in ("import", "from"))]
    assert importing == []


def test_a_third_party_command_runs_and_its_bad_input_is_one_line():
    commands = collect_data_commands(pytest.fail, extra=(_plugin("convert_plugin", lambda: [_convert]),))
    group = click.group(name="data", cls=PluginCommands)(lambda: None)
    group._collected = commands
    ok = CliRunner().invoke(group, ["convert", "x.npz"])
    assert ok.exit_code == 0 and ok.output == "converted x.npz\n"
    bad = CliRunner().invoke(group, ["convert", "bad"])
    assert bad.exit_code == 2
    assert bad.output == "Error: bad is not a file: give the path of an .npz file\n"


def test_a_failing_hook_and_a_clashing_name_are_one_warning_each():
    warnings = []
    broken = _plugin("broken_plugin", lambda: 1 / 0)
    clash = _plugin("clash_plugin", lambda: [click.Command("list")])
    commands = collect_data_commands(warnings.append, extra=(broken, clash))
    assert "list" not in commands and "download" in commands
    assert len(warnings) == 2
    assert "broken_plugin" in warnings[0] and "ZeroDivisionError" in warnings[0]
    assert warnings[1].startswith("data command 'list' is provided by ") and "clash_plugin" in warnings[1]


def test_unknown_data_command_is_one_line_exit_2():
    result = CliRunner().invoke(main, ["data", "dowload"])
    assert result.exit_code == 2 and "dowload" in result.output
