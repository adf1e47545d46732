"""Run-time isolation: a third-party component that fails marks its run `error` with a message
naming the component and its package, and the other cells of the sweep go on."""

import sqlite3
import types

import jax.numpy as jnp
import pytest

from distillbench import Component, hookimpl
from distillbench.components.evaluators import Evaluator
from distillbench.components.kernels import Kernel
from distillbench.registry import Registry, load_registry
from distillbench.runner.execute import execute
from distillbench.runner.plan import plan
from distillbench.runner.sweep import run_sweep
from distillbench.store.database import ResultStore

from helpers import make_plugin_dist, run_cli, tiny


def _build_raises():
    raise ValueError("cannot build this kernel")


def _kernel_fn_raises(x1, x2, key):
    raise RuntimeError("kernel exploded while tracing")


def _build_step_raises():
    return Kernel(kernel_fn=_kernel_fn_raises)


def _build_wrong_shape():
    return Kernel(kernel_fn=lambda x1, x2, key: jnp.ones((len(x1), len(x2) + 1), x1.dtype))


def _evaluate_raises(support, ctx):
    raise KeyError("acc")


PLUGIN = types.ModuleType("third_party_plugin")


@hookimpl
def _components():
    return [
        Component(kind="kernel", name="bad-build", summary="s", build=_build_raises),
        Component(kind="kernel", name="bad-step", summary="s", build=_build_step_raises),
        Component(kind="kernel", name="bad-shape", summary="s", build=_build_wrong_shape),
        Component(kind="evaluator", name="bad-eval", summary="s", build=lambda: Evaluator(_evaluate_raises)),
    ]


PLUGIN.distillbench_components = _components


@pytest.fixture(scope="module")
def registry():
    return load_registry(entry_points=False, extra=(PLUGIN,))


def _run(registry, *args):
    (config,) = plan(tiny(*args), registry).configs
    return execute(config, registry)


def test_builder_failure_names_the_component_and_package(registry):
    outcome = _run(registry, "kernel=bad-build")
    assert outcome.status == "error"
    assert outcome.message == "kernel 'bad-build' (third_party_plugin): ValueError: cannot build this kernel"


def test_failure_inside_the_jitted_step_is_traced_to_the_kernel(registry):
    outcome = _run(registry, "kernel=bad-step")
    assert outcome.status == "error"
    assert outcome.message == "kernel 'bad-step' (third_party_plugin): RuntimeError: kernel exploded while tracing"


def test_a_kernel_of_the_wrong_shape_fails_before_step_1_naming_it(registry):
    outcome = _run(registry, "kernel=bad-shape")
    assert outcome.status == "error" and "first_step_s" not in outcome.timings
    assert outcome.message == ("kernel 'bad-shape' (third_party_plugin): kernel_fn(x1 (3, 4, 4, 1), x2 (3, 4, 4, 1), "
                               "key) returned shape (3, 4); the kernel contract requires shape (3, 3)")


def test_failure_in_builtin_code_caused_by_a_plugin_names_the_plugin_involved(registry):
    import numpy as np

    from distillbench.sampling import balanced_subset

    with pytest.raises(ValueError) as info:  # raised in built-in code, while the plugin's kernel was in use
        balanced_subset(np.zeros(3, np.int32), 5, 1, 0)
    from distillbench.registry import Entry

    ext = Entry(Component(kind="kernel", name="ext", summary="s", build="ext_pkg:build"), "ext-pkg 1.0",
                frozenset({"ext_pkg"}))
    reg = Registry([ext, registry.entry("objective", "kip")])
    message = reg.describe_failure(info.value, [("objective", "kip"), ("kernel", "ext")])
    assert message.startswith("involving kernel 'ext' (ext-pkg 1.0): ValueError: class 0 has 3"), message


def test_evaluator_failure_names_the_evaluator(registry):
    outcome = _run(registry, "evaluator=bad-eval", "objective.steps=1")
    assert outcome.status == "error"
    assert outcome.message == "evaluator 'bad-eval' (third_party_plugin): KeyError: 'acc'"


def test_builtin_failures_keep_their_plain_message(registry):
    import dataclasses

    (config,) = plan(tiny(), registry).configs  # the planner refuses ipc=25 (20 per class); bypass it
    outcome = execute(dataclasses.replace(config, ipc=25), registry)
    assert outcome.status == "error" and outcome.message.startswith("ValueError: class ")


def test_describe_failure_without_involved_components_is_the_plain_message():
    reg = Registry()
    assert reg.describe_failure(ValueError("x"), []) == "ValueError: x"
    assert reg.describe_failure(ValueError("x"), [("kernel", "unknown")]) == "ValueError: x"


def test_sweep_goes_on_after_a_plugin_cell_fails(registry, tmp_path):
    p = plan(tiny("kernel=bad-build,bad-step,ntk"), registry)
    with ResultStore(tmp_path / "r.sqlite") as store:
        outcomes = run_sweep(p, registry, store)
        assert [o.status for o in outcomes] == ["error", "error", "done"]
        assert store.count() == 3


@pytest.mark.slow
def test_cli_sweep_with_a_broken_installed_plugin(tmp_path):
    source = """
        from distillbench import Component, hookimpl

        @hookimpl
        def distillbench_components():
            return [Component(kind="kernel", name="flaky", summary="s", build="flaky_plugin_impl:build")]
    """
    site = make_plugin_dist(tmp_path / "site", "flaky-plugin", "flaky_plugin", source)
    (site / "flaky_plugin_impl.py").write_text(
        "from distillbench.components.kernels import Kernel\n\n"
        "def kernel_fn(x1, x2, key):\n    raise ValueError('singular length scale')\n\n"
        "def build():\n    return Kernel(kernel_fn=kernel_fn)\n")
    store = tmp_path / "r.sqlite"
    result = run_cli("run", "--store", str(store), *tiny("kernel=flaky,ntk"), cwd=tmp_path,
                     env_extra={"PYTHONPATH": str(site)})
    assert result.returncode == 1, result.stdout + result.stderr  # one cell failed, the sweep finished
    assert "Traceback" not in result.stdout + result.stderr
    with sqlite3.connect(store) as conn:
        rows = dict(conn.execute("SELECT kernel, status || ': ' || COALESCE(message, '') FROM runs"))
    assert rows["ntk"] == "done: "
    assert rows["flaky"] == "error: kernel 'flaky' (flaky-plugin 0.1): ValueError: singular length scale"


def _check_raises(choices):
    raise RuntimeError("check is buggy")


def _validate_raises(params):
    raise OSError("validate is buggy")


def test_a_raising_check_refuses_only_its_cells_and_a_raising_validate_is_one_line():
    from distillbench.errors import ConfigError

    plugin = types.ModuleType("checky_plugin")

    @hookimpl
    def distillbench_components():
        return [Component(kind="kernel", name="checky", summary="s", build=_build_raises, check=_check_raises),
                Component(kind="kernel", name="validy", summary="s", build=_build_raises, validate=_validate_raises)]

    plugin.distillbench_components = distillbench_components
    registry = load_registry(entry_points=False, extra=(plugin,))
    p = plan(tiny("kernel=checky,ntk"), registry)
    assert [c.kernel.name for c in p.configs] == ["ntk"]
    ((label, reason),) = p.refused
    assert reason == "check of kernel 'checky' (checky_plugin) raised RuntimeError: check is buggy"
    with pytest.raises(ConfigError, match=r"validate of kernel 'validy' \(checky_plugin\) raised OSError: validate is"):
        plan(tiny("kernel=validy"), registry)
