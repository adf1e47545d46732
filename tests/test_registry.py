import types

import pytest

from distillbench import Component, Param, hookimpl
from distillbench.errors import ConfigError
from distillbench.registry import load_registry
from distillbench.runner.plan import plan

from helpers import make_plugin_dist, run_cli


def _plugin(*components, name="extra_plugin"):
    module = types.ModuleType(name)

    @hookimpl
    def distillbench_components():
        return list(components)

    module.distillbench_components = distillbench_components
    return module


def test_builtins_register_through_the_hook():
    registry = load_registry(entry_points=False)
    assert registry.names("kernel") == ["finite-ntk", "frepo-pool", "nngp", "ntk", "rcig-pool", "rf-nngp"]
    assert registry.names("loss") == ["mse", "platt"]
    assert registry.names("objective") == ["frepo", "kip", "ls", "rcig", "rfad"]
    assert registry.names("evaluator") == ["krr", "nn", "privacy"]
    assert {"digits", "synthetic"} <= set(registry.names("dataset"))
    assert registry.source("kernel", "ntk") == "distillbench (built-in)"


def test_every_builtin_declares_documented_params():
    registry = load_registry(entry_points=False)
    for entry in registry.entries():
        assert entry.component.summary and "\n" not in entry.component.summary
        for p in entry.component.params:
            assert p.doc


def test_a_duplicate_name_blocks_only_that_name_naming_both_sources():
    dup = _plugin(Component(kind="kernel", name="ntk", summary="a clash", build=lambda: None),
                  Component(kind="loss", name="extra-loss", summary="no clash", build=lambda: None))
    registry = load_registry(entry_points=False, extra=(dup,))
    message = r"kernel 'ntk' is registered twice: by distillbench \(built-in\) and by extra_plugin"
    with pytest.raises(ConfigError, match=message):
        registry.get("kernel", "ntk")
    assert registry.conflicts and "ntk" not in registry.names("kernel")
    assert "nngp" in registry.names("kernel") and "extra-loss" in registry.names("loss")
    with pytest.raises(ConfigError, match=message):
        plan(["kernel=rf-nngp", "evaluator.kernel=ntk"], registry)
    with pytest.raises(ConfigError, match=message):
        plan([], registry)  # the default kernel is the ambiguous one
    assert len(plan(["kernel=nngp", "loss=extra-loss,mse"], registry).configs) == 2
    lenient = load_registry(entry_points=False, extra=(dup,), strict=False)
    assert lenient.source("kernel", "ntk") == "distillbench (built-in)" and lenient.conflicts


def test_three_providers_of_one_name_are_all_named():
    one = _plugin(Component(kind="loss", name="same", summary="one", build=lambda: None))
    two = types.ModuleType("second_plugin")
    two.distillbench_components = hookimpl(lambda: [Component(kind="loss", name="same", summary="two",
                                                                build=lambda: None)])
    three = types.ModuleType("third_plugin")
    three.distillbench_components = hookimpl(lambda: [Component(kind="loss", name="same", summary="three",
                                                                  build=lambda: None)])
    registry = load_registry(entry_points=False, extra=(one, two, three))
    with pytest.raises(ConfigError, match="registered 3 times: by extra_plugin, by second_plugin and by third_plugin"):
        registry.get("loss", "same")


def test_plugin_raising_at_registration_is_skipped_with_a_failure():
    module = types.ModuleType("raising_plugin")

    @hookimpl
    def distillbench_components():
        raise RuntimeError("boom")

    module.distillbench_components = distillbench_components
    registry = load_registry(entry_points=False, extra=(module,))
    assert registry.names("objective") == ["frepo", "kip", "ls", "rcig", "rfad"]
    (failure,) = registry.failures
    assert failure.stage == "registration" and "RuntimeError: boom" in failure.line()


def test_lazy_builder_is_not_imported_until_instantiated():
    comp = Component(kind="kernel", name="lazy", summary="lazy", build="no_such_module_xyz:build",
                     params=(Param("a", int, 1, "a"),))
    registry = load_registry(entry_points=False, extra=(_plugin(comp),))
    assert "lazy" in registry.names("kernel")
    with pytest.raises(ModuleNotFoundError):
        registry.instantiate("kernel", "lazy", {"a": 1})


def test_entry_point_plugin_and_broken_plugin_via_cli(tmp_path):
    good = """
        from distillbench import Component, Param, hookimpl

        @hookimpl
        def distillbench_components():
            return [Component(kind="loss", name="good-loss", summary="a third-party loss",
                              build="good_plugin:build", params=(Param("scale", float, 1.0, "a scale"),))]
    """
    make_plugin_dist(tmp_path / "site", "good-plugin", "good_plugin", good)
    make_plugin_dist(tmp_path / "site", "broken-plugin", "broken_plugin", "raise ImportError('missing dependency foo')\n")
    env = {"PYTHONPATH": str(tmp_path / "site")}
    result = run_cli("list", "loss", cwd=tmp_path, env_extra=env)
    assert result.returncode == 0, result.stderr
    assert "good-loss" in result.stdout and "good-plugin 0.1" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if "broken-plugin" in line]
    assert len(warnings) == 1 and "ImportError: missing dependency foo" in warnings[0]
    assert "Traceback" not in result.stderr
    disabled = run_cli("list", "loss", cwd=tmp_path,
                       env_extra={**env, "DISTILLBENCH_DISABLE_PLUGINS": "broken-plugin,good-plugin"})
    assert "broken-plugin" not in disabled.stderr and "good-loss" not in disabled.stdout


def test_duplicate_entry_point_plugins_block_only_their_name(tmp_path):
    source = """
        from distillbench import Component, hookimpl

        @hookimpl
        def distillbench_components():
            return [Component(kind="kernel", name="clash-kernel", summary="clash-kernel", build="x:y")]
    """
    make_plugin_dist(tmp_path / "site", "rbf-one", "rbf_one", source)
    make_plugin_dist(tmp_path / "site", "rbf-two", "rbf_two", source)
    env = {"PYTHONPATH": str(tmp_path / "site")}
    listing = run_cli("list", "kernel", cwd=tmp_path, env_extra=env)
    assert listing.returncode == 0 and "ntk" in listing.stdout and "clash-kernel" not in listing.stdout
    (warning,) = listing.stderr.strip().splitlines()
    assert warning.startswith("warning: kernel 'clash-kernel' is registered twice: by rbf-")
    assert "rbf-one 0.1" in warning and "rbf-two 0.1" in warning
    dry = run_cli("run", "--dry-run", "kernel=ntk", cwd=tmp_path, env_extra=env)
    assert dry.returncode == 0 and "kip/ntk(fc1)" in dry.stdout
    assert dry.stderr.strip().splitlines() == [warning]
    used = run_cli("run", "kernel=clash-kernel", cwd=tmp_path, env_extra=env)
    assert used.returncode == 2
    error = used.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: kernel 'clash-kernel' is registered twice: by rbf-")
    assert "rbf-one 0.1" in error and "rbf-two 0.1" in error and error.endswith("DISTILLBENCH_DISABLE_PLUGINS")
    assert "Traceback" not in used.stderr and not (tmp_path / "distillbench_results").exists()
