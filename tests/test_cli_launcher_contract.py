"""`distillbench run` builds its launcher through ``Registry.instantiate``, like every other kind:
an installed launcher whose ``build`` breaks the contract is one line naming it, exit 2, before the
store is touched; a good one is built with the parameters given on the command line."""

from __future__ import annotations

import pytest

from distillbench import Component
from distillbench.errors import ContractError
from distillbench.launchers.local import LocalLauncher
from distillbench.registry import Registry, load_registry
from helpers import make_plugin_dist, run_cli, tiny

_PLUGIN = """
    import sys

    from distillbench import Component, Param, hookimpl
    from distillbench.launchers.local import LocalLauncher


    class Inline(LocalLauncher):
        name = "inline"

        def __init__(self, note=""):
            self.note = note

        def prepare(self):
            print(f"inline launcher prepared: note={self.note}", file=sys.stderr)


    @hookimpl
    def distillbench_components():
        return [
            # build returns the class itself, not an instance of it
            Component(kind="launcher", name="classy", summary="s", build=lambda: Inline),
            Component(kind="launcher", name="inline", summary="s", build=Inline,
                      params=(Param("note", str, "", "a word for describe()"),)),
        ]
"""


@pytest.fixture
def site(tmp_path):
    return make_plugin_dist(tmp_path / "site", "inline-launchers", "inline_launchers", _PLUGIN)


def test_a_launcher_build_returning_a_class_is_one_line_exit_2_nothing_written(tmp_path, site):
    store = tmp_path / "r.sqlite"
    result = run_cli("run", "--store", str(store), "launcher=classy", *tiny(), cwd=tmp_path,
                     env_extra={"PYTHONPATH": str(site)})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0] == ("Error: launcher 'classy' (inline-launchers 0.1): build must return "
                        "distillbench.launchers.Launcher, got type"), lines
    assert not store.exists()


@pytest.mark.slow
def test_a_launcher_is_built_with_its_command_line_parameters(tmp_path, site):
    store = tmp_path / "r.sqlite"
    result = run_cli("run", "-q", "--store", str(store), "launcher=inline", "launcher.note=here", *tiny(),
                     cwd=tmp_path, env_extra={"PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr
    assert "inline launcher prepared: note=here" in result.stderr.splitlines()
    assert store.exists() and "results:" in result.stdout


def test_the_registry_checks_a_built_launcher():
    registry = Registry()
    registry.add(Component(kind="launcher", name="bad", summary="s", build=lambda: object()), "bad-pkg 1.0")
    with pytest.raises(ContractError, match=r"launcher 'bad' \(bad-pkg 1.0\): build must return "
                                            r"distillbench.launchers.Launcher, got object"):
        registry.instantiate("launcher", "bad", {})
    assert isinstance(load_registry(entry_points=False).instantiate("launcher", "local", {}), LocalLauncher)
