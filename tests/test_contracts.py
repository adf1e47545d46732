"""A plugin's wrong return value fails when it is built, naming it and its package, before step 1."""

import types
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import pytest

from distillbench import Component, hookimpl
from distillbench.components.kernels import Kernel
from distillbench.components.losses import Loss
from distillbench.errors import ContractError
from distillbench.registry import load_registry
from distillbench.runner.execute import execute
from distillbench.runner.plan import plan

from helpers import make_plugin_dist, run_cli, tiny


def _init():
    return {}


def _apply(params, pred, y):
    return jnp.mean((pred - y) ** 2)


def _logits(params, pred):
    return pred


class OldLoss(NamedTuple):  # what a plugin written against a guessed contract might return
    init: object
    apply: object


def _kernel_fn(x1, x2, key):
    return x1.reshape(len(x1), -1) @ x2.reshape(len(x2), -1).T


def _features(x, key):
    return x.reshape(len(x), -1)


def _kip_with(**changes):
    def build():
        from distillbench_builtin.objectives.kip import build_kip

        make = build_kip()

        def broken(problem):
            return make(problem)._replace(**changes)

        return broken

    return build


CASES = {
    "loss:no-logits-type": (lambda: OldLoss(_init, _apply),
                            "build must return distillbench.components.losses.Loss, got OldLoss"),
    "loss:none-logits": (lambda: Loss(_init, _apply, None), "Loss.logits must be a function, got NoneType"),
    "loss:bad-logits": (lambda: Loss(_init, _apply, lambda p, pred: pred[:, 0]),
                        "logits(params, pred (2, 3)) returned shape (2,); the loss contract requires shape (2, 3)"),
    "loss:bad-apply": (lambda: Loss(_init, lambda p, pred, y: (pred - y) ** 2, _logits),
                       "apply(params, pred (2, 3), y (2, 3)) returned shape (2, 3); the loss contract requires a scalar"),
    "loss:raising-init": (lambda: Loss(lambda: 1 / 0, _apply, _logits), "init() raised ZeroDivisionError"),
    "kernel:dict": (lambda: {"kernel_fn": _kernel_fn}, "build must return distillbench.components.kernels.Kernel, got dict"),
    "kernel:random-text": (lambda: Kernel(_kernel_fn, random="yes"), "Kernel.random must be a bool, got str"),
    "kernel:arch-int": (lambda: Kernel(_kernel_fn, arch=3), "Kernel.arch must be None or a str, got int"),
    "kernel:features-none-callable": (lambda: Kernel(_kernel_fn, feature_fn=3),
                                      "Kernel.feature_fn must be None or a function, got int"),
    "evaluator:function": (lambda: (lambda support, ctx: {"acc": 1.0}),
                           "build must return distillbench.components.evaluators.Evaluator, got function"),
    "objective:no-support": (_kip_with(support=None), "Distiller.support must be a function, got NoneType"),
    "objective:float-steps": (_kip_with(num_steps=3.0), "Distiller.num_steps must be an int >= 0, got 3.0"),
    "objective:tuple": (lambda: (lambda problem: (1, 2)),
                        "make(problem) must return distillbench.components.objectives.Distiller, got tuple"),
}

PLUGIN = types.ModuleType("contract_plugin")


@hookimpl
def _components():
    out = [Component(kind=key.partition(":")[0], name=key.partition(":")[2], summary="s", build=build)
           for key, (build, _) in CASES.items()]
    out.append(Component(kind="kernel", name="good", summary="s", build=lambda: Kernel(_kernel_fn, _features)))
    return out


PLUGIN.distillbench_components = _components


@pytest.fixture(scope="module")
def registry():
    return load_registry(entry_points=False, extra=(PLUGIN,))


@pytest.mark.parametrize("key", list(CASES))
def test_a_broken_contract_fails_before_step_1_naming_the_component_and_package(registry, key):
    kind, _, name = key.partition(":")
    args = [a for a in tiny(f"{kind}={name}") if kind != "objective" or not a.startswith("objective.")]
    (config,) = plan(args, registry).configs
    outcome = execute(config, registry)
    assert outcome.status == "error" and "first_step_s" not in outcome.timings and "compile_s" not in outcome.timings
    assert outcome.message == f"{kind} {name!r} (contract_plugin): {CASES[key][1]}" or (
        outcome.message.startswith(f"{kind} {name!r} (contract_plugin): {CASES[key][1]}")), outcome.message


def test_a_kernel_with_a_wrong_feature_shape_names_it(registry):
    bad = load_registry(entry_points=False, extra=(_one("kernel", "flat-features",
                                                        lambda: Kernel(_kernel_fn, lambda x, key: x.reshape(-1))),))
    kernel = bad.instantiate("kernel", "flat-features", {})
    with pytest.raises(ContractError, match=r"kernel 'flat-features' \(one_plugin\): feature_fn\(x \(2, 3\), key\) "
                                            r"returned shape \(6,\); the kernel contract requires shape \(2, F\)"):
        kernel.feature_fn(jnp.ones((2, 3)), None)


def _one(kind, name, build):
    module = types.ModuleType("one_plugin")
    module.distillbench_components = hookimpl(lambda: [Component(kind=kind, name=name, summary="s", build=build)])
    return module


def test_the_checks_change_no_number(registry):
    kernel = registry.instantiate("kernel", "good", {})
    x1, x2 = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3, 3, 1))), jnp.ones((2, 3, 3, 1))
    np.testing.assert_array_equal(kernel.kernel_fn(x1, x2, None), _kernel_fn(x1, x2, None))
    np.testing.assert_array_equal(kernel.feature_fn(x1, None), _features(x1, None))
    ntk = registry.instantiate("kernel", "ntk", {"arch": "fc1"})
    assert ntk.kernel_fn.__module__.startswith("distillbench_builtin")  # built-ins are not wrapped
    assert registry.instantiate("loss", "mse", {}).logits.__module__.startswith("distillbench_builtin")


@pytest.mark.slow
def test_an_installed_loss_without_logits_fails_before_step_1_via_the_cli(tmp_path):
    source = """
        from distillbench import Component, hookimpl

        @hookimpl
        def distillbench_components():
            return [Component(kind="loss", name="nologits", summary="s", build="nologits_impl:build")]
    """
    site = make_plugin_dist(tmp_path / "site", "nologits-loss", "nologits_plugin", source)
    (site / "nologits_impl.py").write_text(
        "from typing import NamedTuple\nimport jax.numpy as jnp\n\n"
        "class MyLoss(NamedTuple):\n    init: object\n    apply: object\n\n"
        "def build():\n    return MyLoss(lambda: {}, lambda p, pred, y: jnp.mean((pred - y) ** 2))\n")
    store = tmp_path / "r.sqlite"
    result = run_cli("run", "--store", str(store), *tiny("loss=nologits", "objective.steps=1000000"), cwd=tmp_path,
                     env_extra={"PYTHONPATH": str(site)})
    out = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in out, out
    assert ("loss 'nologits' (nologits-loss 0.1): build must return distillbench.components.losses.Loss, "
            "got MyLoss") in out
    import sqlite3

    with sqlite3.connect(store) as conn:
        ((status, message, timings),) = conn.execute("SELECT status, message, timings FROM runs").fetchall()
    assert status == "error" and message.startswith("loss 'nologits' (nologits-loss 0.1): build must return")
    assert "first_step_s" not in timings


def test_a_split_that_differs_from_what_describe_promised_fails_naming_the_dataset():
    from distillbench.components.datasets import DatasetInfo

    def lying(params):
        return DatasetInfo(3, (50, 50, 50), (4, 4, 1), 30)  # the planner would allow ipc=50

    def build():
        from distillbench_builtin.datasets.synthetic import build_synthetic

        return build_synthetic(60, 30, 3, 4, 4, 1, 1.0, 0)  # 20 per class

    registry = load_registry(entry_points=False, extra=(_plugin_with(
        Component(kind="dataset", name="liar", summary="s", build=build, describe=lying)),))
    with pytest.raises(ContractError, match=r"dataset 'liar' \(one_plugin\): build returned a split with "
                                            r"train_class_counts=\(20, 20, 20\), but describe\(\) promised \(50, 50, 50\)"):
        registry.instantiate("dataset", "liar", {})


def _plugin_with(component):
    module = types.ModuleType("one_plugin")
    module.distillbench_components = hookimpl(lambda: [component])
    return module


@pytest.mark.parametrize("args", [["dataset=digits", "dataset.split_seed=3"], ["dataset=synthetic", "dataset.n_train=47"],
                                  ["dataset=digits", "dataset.test_fraction=0.5"]])
def test_the_builtin_datasets_hold_what_they_describe(registry, args):
    (config,) = plan(args, registry).configs
    registry.instantiate("dataset", config.dataset.name, config.dataset.as_dict())  # raises on any difference
