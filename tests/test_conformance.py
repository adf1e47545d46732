"""The conformance suite (``distillbench.testing``): every built-in passes, broken components fail
with a message naming the contract they break, and the plugin guide's examples pass."""

import re
import types
from pathlib import Path

import jax.numpy as jnp
import pytest

from distillbench import Component, Param, hookimpl
from distillbench.components.kernels import Kernel
from distillbench.components.losses import Loss
from distillbench.components.objectives import Distiller, Support
from distillbench.registry import load_registry
from distillbench.testing import (
    ConformanceError,
    check_component,
    check_kernel,
    check_loss,
    check_objective,
    check_params,
    check_plugin,
)

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
BUILTINS = load_registry(entry_points=False)

#: Small settings that keep the built-ins' checks fast; only parameters still declared are used.
SMALL = {
    "kernel:rf-nngp": {"num_networks": 2, "width": 16},
    "kernel:frepo-pool": {"num_networks": 2, "width": 8},
    "evaluator:nn": {"arch": "fc1", "width": 16, "steps": 3, "seeds": 1},
    # RCIG's lr tuning climbs a ladder of probes (up to 100 rungs); few inner/Hessian steps keep it short
    "objective:rcig": {"inner_steps": 3, "hinv_steps": 3, "target_batch": 16},
}

#: Check options where the default 8x8 images do not fit: VGG-11 and ResNet-18 pool too often.
OPTIONS = {
    "architecture:vgg11": {"image_shape": (28, 28, 1)},
    "architecture:resnet18": {"image_shape": (28, 28, 1)},
    "objective:rcig": {"kernel_params": {"num_networks": 2, "width": 8}},
}


def _small(component):
    wanted = SMALL.get(f"{component.kind}:{component.name}", {})
    return {k: v for k, v in wanted.items() if component.param(k) is not None}


@pytest.mark.parametrize("entry", BUILTINS.entries(), ids=lambda e: f"{e.component.kind}:{e.component.name}")
@pytest.mark.slow
def test_every_builtin_component_conforms(entry):
    component = entry.component
    params = _small(component)
    problem = component.validate({**component.default_params(), **params}) if component.validate else None
    if problem:
        pytest.skip(f"{component.kind} {component.name} is not available here: {problem}")
    check_component(component, params, **OPTIONS.get(f"{component.kind}:{component.name}", {}))


@pytest.mark.slow
def test_kernel_check_on_another_image_shape_and_architecture():
    check_kernel("kernel:nngp", {"arch": "fc3"}, image_shape=(4, 3, 2))


# -- deliberately broken components ---------------------------------------------------------------

def _flat(x):
    return x.reshape(len(x), -1)


def _good_kernel_fn(x1, x2, key):
    return jnp.exp(-0.01 * jnp.sum((_flat(x1)[:, None] - _flat(x2)[None]) ** 2, -1))


def _kernel(kernel_fn, **kw):
    return Component(kind="kernel", name="broken", summary="a broken kernel", build=lambda: Kernel(kernel_fn, **kw))


BROKEN_KERNELS = {
    "wrong shape": (
        _kernel(lambda x1, x2, key: jnp.zeros((len(x1), len(x2) + 1), x1.dtype) + _good_kernel_fn(x1, x2[:1], key)),
        (r"^kernel contract: kernel_fn\(x1 \(5, 8, 8, 1\), x2 \(3, 8, 8, 1\), key\) must return shape \(5, 3\), "
         r"got \(5, 4\) \[kernel 'broken'\]$"),
    ),
    "float32 output for float64 images": (
        _kernel(lambda x1, x2, key: _good_kernel_fn(x1, x2, key).astype(jnp.float32)),
        r"^kernel contract: .* on float64 images must return float64 .*got float32",
    ),
    "not symmetric": (
        _kernel(lambda x1, x2, key: _good_kernel_fn(x1, x2, key) + 0.1 * (_flat(x1)[:, :1] - _flat(x2)[:, :1].T)),
        r"^kernel contract: kernel_fn\(x, x, key\) must be symmetric",
    ),
    "depends on the batch": (
        _kernel(lambda x1, x2, key: _good_kernel_fn(x1, x2, key) / len(x1) / len(x2)),
        r"^kernel contract: kernel_fn must be pairwise",
    ),
    "random kernel ignoring its key": (
        _kernel(_good_kernel_fn, random=True),
        r"^kernel contract: a random=True kernel must draw its kernel from key",
    ),
    "exact kernel using its key": (
        _kernel(lambda x1, x2, key: _good_kernel_fn(x1, x2, key) * (1 + key[1].astype(x1.dtype))),
        r"^kernel contract: a random=False kernel must not depend on key",
    ),
    "not differentiable": (
        _kernel(lambda x1, x2, key: _good_kernel_fn(jnp.round(x1), jnp.round(x2), key)),
        r"^kernel contract: the gradient of kernel_fn w.r.t. x1 is identically zero",
    ),
    "feature map disagreeing with its kernel": (
        _kernel(_good_kernel_fn, feature_fn=lambda x, key: _flat(x)),
        r"^kernel contract: feature_fn\(x1, key\) @ feature_fn\(x2, key\)\.T must equal kernel_fn",
    ),
    "builder returning something else": (
        Component(kind="kernel", name="broken", summary="s", build=lambda: _good_kernel_fn),
        r"^kernel contract: build\(\*\*params\) must return distillbench\.components\.kernels\.Kernel, got function",
    ),
    "kernel_fn raising": (
        _kernel(lambda x1, x2, key: _flat(x1) @ _flat(x2)),
        r"^kernel contract: kernel_fn\(x1 \(5, 8, 8, 1\), x2 \(3, 8, 8, 1\), key\) raised TypeError",
    ),
}


@pytest.mark.parametrize("name", list(BROKEN_KERNELS))
def test_broken_kernel_fails_naming_the_contract(name):
    component, message = BROKEN_KERNELS[name]
    with pytest.raises(ConformanceError, match=message):
        check_kernel(component)


def test_the_good_kernel_used_above_passes():
    """The broken kernels differ from a kernel that passes only in what they break."""
    check_kernel(_kernel(_good_kernel_fn))


def _mse_apply(params, pred, y):
    return 0.5 * jnp.mean((pred - y) ** 2)


def _loss(**overrides):
    fields = {"init": dict, "apply": _mse_apply, "logits": lambda params, pred: pred, **overrides}
    return Component(kind="loss", name="broken-loss", summary="a broken loss", build=lambda: Loss(**fields))


@pytest.mark.parametrize("component, message", [
    (_loss(apply=lambda p, pred, y: (pred - y) ** 2),
     r"^loss contract: apply\(params, pred \(6, 3\) float64, y \(6, 3\) float32\) must return shape \(\), got \(6, 3\)"),
    (_loss(apply=lambda p, pred, y: -_mse_apply(p, pred, y)), r"^loss contract: apply must be lower for predictions"),
    (_loss(init=lambda: {"scale": jnp.asarray(1, jnp.int32)}), r"^loss contract: init\(\)\['scale'\] must be a floating"),
    (_loss(logits=lambda params, pred: pred[:, :1]), r"^loss contract: logits\(params, pred \(6, 3\)\) must return shape"),
], ids=["non-scalar", "rewards errors", "integer parameter", "logits shape"])
def test_broken_loss_fails_naming_the_contract(component, message):
    check_loss(_loss())  # the unbroken version passes
    with pytest.raises(ConformanceError, match=message):
        check_loss(component)


def _objective(step=None, support=None, num_steps=2):
    def make(problem):
        data = problem.data
        m = problem.ipc * data.num_classes

        def init(key):
            return {"x": jnp.zeros((m, *data.image_shape), jnp.float32), "y": jnp.zeros((m, data.num_classes))}

        def default_step(state, train, key):
            return {"x": state["x"] + 0.1, "y": state["y"]}, jnp.sum(state["x"] ** 2)

        def default_support(state):
            return Support(state["x"], state["y"], problem.loss.init())

        return Distiller(init, step or default_step, support or default_support, num_steps)

    return Component(kind="objective", name="broken-objective", summary="s", build=lambda: make)


@pytest.mark.parametrize("component, message", [
    (_objective(step=lambda s, t, k: ({"x": s["x"].astype(jnp.float64), "y": s["y"]}, jnp.sum(s["x"]))),
     (r"^objective contract: step must return a state with the structure, shapes and dtypes it was given .*"
      r"state\['x'\] was float32 \(6, 8, 8, 1\), became float64 \(6, 8, 8, 1\)")),
    (_objective(support=lambda s: Support(s["x"][:1], s["y"][:1], {})),
     r"^objective contract: support\(state\)\.x must return shape \(6, 8, 8, 1\), got \(1, 8, 8, 1\)"),
    (_objective(num_steps=-1), r"^objective contract: Distiller\.num_steps must be an int >= 0, got -1"),
], ids=["state dtype changes", "support shape", "negative steps"])
def test_broken_objective_fails_naming_the_contract(component, message):
    check_objective(_objective())  # the unbroken version passes
    with pytest.raises(ConformanceError, match=message):
        check_objective(component)


def test_nondeterministic_objective_fails():
    counter = iter(range(1000))

    def step(state, train, key):  # a hidden Python-side counter: each run differs
        return {"x": state["x"] + float(next(counter)), "y": state["y"]}, jnp.zeros(())

    with pytest.raises(ConformanceError, match=r"^objective contract: two runs with the same seed must give the same"):
        check_objective(_objective(step=step), seed=0)


def test_builder_not_accepting_a_declared_parameter_fails():
    comp = Component(kind="loss", name="p", summary="s", build=lambda: Loss(dict, _mse_apply, lambda p, x: x),
                     params=(Param("scale", float, 1.0, "a scale"),))
    with pytest.raises(ConformanceError, match=r"^parameter contract: the builder must accept exactly the declared "
                                               r"parameters \(scale\)"):
        check_params(comp)
    with pytest.raises(ConformanceError, match=r"^parameter contract: 'nope' is not a declared parameter"):
        check_loss(Component(kind="loss", name="q", summary="s", build=lambda: Loss(dict, _mse_apply, lambda p, x: x)),
                   {"nope": 1})


def test_objective_defaults_must_name_registered_components():
    comp = Component(kind="objective", name="o", summary="s", build=lambda: None, defaults={"kernel": "no-such"})
    with pytest.raises(ConformanceError, match=r"^parameter contract: defaults name kernel 'no-such', which is not"):
        check_params(comp)


def test_check_plugin_runs_every_component_and_names_the_broken_one():
    good = Component(kind="loss", name="fine", summary="s", build=lambda: Loss(dict, _mse_apply, lambda p, x: x))
    module = types.ModuleType("a_plugin")
    module.DISTILLBENCH_API = 2

    @hookimpl
    def distillbench_components():
        return [good, BROKEN_KERNELS["wrong shape"][0]]

    module.distillbench_components = distillbench_components
    with pytest.raises(ConformanceError, match=r"^kernel contract: .*got \(5, 4\) \[kernel 'broken'\]"):
        check_plugin(module)
    assert check_plugin(module, skip=["kernel:broken"]) == [good, BROKEN_KERNELS["wrong shape"][0]]
    module.DISTILLBENCH_API = 99
    with pytest.raises(ConformanceError, match=r"^plugin contract: a_plugin: it requires distillbench plugin API 99"):
        check_plugin(module)


# -- the plugin guide's examples ------------------------------------------------------------------

def _blocks(fence):
    return re.findall(rf"```{fence}\n(.*?)```", GUIDE.read_text(), flags=re.DOTALL)


def _guide_module(tmp_path, monkeypatch):
    init_src, kernel_src = _blocks("python")
    pkg = tmp_path / "guide_site" / "distillbench_rbf"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(init_src)
    (pkg / "kernel.py").write_text(kernel_src)
    monkeypatch.syspath_prepend(str(tmp_path / "guide_site"))
    for name in ("distillbench_rbf", "distillbench_rbf.kernel"):
        monkeypatch.delitem(__import__("sys").modules, name, raising=False)
    import distillbench_rbf

    return distillbench_rbf


@pytest.mark.slow
def test_guide_kernel_example_conforms_in_both_forms(tmp_path, monkeypatch):
    module = _guide_module(tmp_path, monkeypatch)
    (component,) = check_plugin(module)
    assert not check_kernel(component).random
    assert check_kernel(component, {"features": 64}).feature_fn is not None


@pytest.mark.slow
def test_guide_py_snippets_work(tmp_path, monkeypatch):
    import jax
    import numpy as np

    from distillbench.components.objectives import Problem
    from distillbench.testing import tiny_datasplit, train_data

    sampler_src, objective_src, test_src = _blocks("py")
    sampler = {}
    exec(compile(sampler_src, "plugins.md target sampler", "exec"), sampler)
    problem = Problem(tiny_datasplit(), 1, None, None, 0)  # 3 classes of 6
    init, targets = sampler["targets_each_step"](problem, batch=6)
    batch = jax.jit(targets)(init(jnp.zeros(3)), train_data(problem.data), jax.random.PRNGKey(0))
    assert np.bincount(np.asarray(batch.labels)).tolist() == [2, 2, 2]
    namespace = {}
    exec(compile(objective_src, "plugins.md objective", "exec"), namespace)
    support = check_objective(namespace["build_random_subset"]())
    assert support.x.shape == (6, 8, 8, 1)
    _guide_module(tmp_path, monkeypatch)
    tests = {}
    exec(compile(test_src.replace('assert check_installed("distillbench-rbf") == ["kernel:rbf"]', "pass"),
                 "plugins.md tests", "exec"), tests)
    tests["test_conformance"]()
    tests["test_feature_map_form"]()


# -- launchers ------------------------------------------------------------------------------------

def _launcher_component(cls, name="broken"):
    from distillbench import Component

    return Component(kind="launcher", name=name, summary="a test launcher", build=lambda: cls())


def test_launcher_check_refuses_a_launcher_without_run_or_with_a_multiline_description():
    from distillbench.launchers import Launcher
    from distillbench.testing import check_launcher

    class NoRun(Launcher):
        name = "norun"

    class Chatty(Launcher):
        name, in_process = "chatty", True

        def describe(self):
            return "line one\nline two"

    with pytest.raises(ConformanceError, match="must implement run"):
        check_launcher(_launcher_component(NoRun))
    with pytest.raises(ConformanceError, match="one line of text"):
        check_launcher(_launcher_component(Chatty))


@pytest.mark.slow
def test_launcher_check_runs_cells_and_catches_a_launcher_that_drops_them():
    """``cells=True`` compares with the driver's own run: ``local`` passes, a launcher that reports
    cells finished without running them fails."""
    from distillbench.launchers import Launcher
    from distillbench.testing import check_launcher

    class Dropper(Launcher):
        name = "dropper"

        def run(self, tasks, finished, tick, folder):
            for task in tasks:
                finished(task, None)

    check_launcher("launcher:local", cells=True)
    with pytest.raises(ConformanceError, match="launcher contract: cell .*: error .*, in process done"):
        check_launcher(_launcher_component(Dropper), cells=True)


def test_architecture_check_refuses_a_network_that_does_not_trace():
    """A network that branches in Python on a value runs eagerly but not under ``vmap``/``jit``, as
    FRePo's pool and the ``nn`` evaluator run it: the check names the contract."""
    import flax.linen as nn

    from distillbench.components.architectures import Architecture
    from distillbench.testing import check_architecture

    trunk = BUILTINS.architecture("fc1").trunk

    class Branching(nn.Module):
        num_classes: int
        width: int
        dtype: object = jnp.float32

        @nn.compact
        def __call__(self, x, train=False):
            features = trunk(self.width, 2**0.5, 0.1, self.dtype)(x)
            if float(features.mean()) > 1e9:  # a Python branch on a value
                features = -features
            return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.dtype)(features), features

    def network(num_classes, width, normalization="none", dtype=jnp.float32):
        if normalization != "none":
            raise ValueError(f"no normalization {normalization!r} (choose from: none)")
        return Branching(num_classes, width, dtype)

    with pytest.raises(ConformanceError, match=r"jax\.vmap\(network\(3, 4, 'none', float64\)\.init\)\(2 keys, x, "
                                               r"train=False\) raised"):
        check_architecture(Architecture(trunk=trunk, network=network), image_shape=(4, 4, 1))
