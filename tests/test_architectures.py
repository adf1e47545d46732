"""Architectures as components: the built-ins are registered, and a third-party architecture written
from docs/plugins.md alone (a 2-layer ConvNet) gets the three kernels and the nn evaluator through
the CLI with no other code."""

import json
import re
import sqlite3
from pathlib import Path

import pytest

from distillbench.registry import load_registry

from helpers import docs_architecture_site, run_cli

@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The docs' package installed as a distribution (source + *.dist-info) on a PYTHONPATH dir."""
    return docs_architecture_site(tmp_path_factory.mktemp("site"))


def test_builtin_architectures_are_registered_components():
    registry = load_registry(entry_points=False)
    assert registry.names("architecture") == ["alexnet", "convnet", "convnet-dc", "convnet3", "fc1", "fc3", "frepo-conv",
                                              "resnet18", "vgg11"]
    assert all(e.builtin for e in registry.entries("architecture"))


def test_list_architecture_shows_builtins_and_the_third_party_one(tmp_path, site):
    result = run_cli("list", "architecture", cwd=tmp_path, env_extra={"PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr
    for name in ("fc1", "fc3", "convnet3", "convnet", "convnet2"):
        assert re.search(rf"(^|\W){name}(:|\s)", result.stdout, re.M), result.stdout
    assert "distillbench-convnet2 0.1" in result.stdout


def _rows(store: Path) -> list[tuple]:
    with sqlite3.connect(store) as db:
        return db.execute("SELECT status, config, metrics FROM runs").fetchall()


# A small synthetic set of 8x8 images: the exact kernels of an architecture without a fast path
# (the generic one) cost O((H·W)²) per pair, which on digits' 1,437 x 360 images made this test one of
# the suite's slowest for no more coverage.
DATA = ["dataset=synthetic", "dataset.n_train=60", "dataset.n_test=30", "dataset.num_classes=3",
        "dataset.height=8", "dataset.width=8"]
RUN = [*DATA, "ipc=1", "objective.steps=2", "evaluator.dtype=float32"]


@pytest.mark.slow
def test_third_party_architecture_runs_all_three_kernels_and_nn(tmp_path, site):
    env = {"PYTHONPATH": str(site)}
    store = tmp_path / "r.sqlite"
    kernels = run_cli("run", "--store", str(store), *RUN, "kernel=ntk,nngp,rf-nngp", "kernel.arch=convnet2",
                      "kernel.width=16", cwd=tmp_path, env_extra=env)
    assert kernels.returncode == 0, kernels.stderr
    rows = _rows(store)
    assert len(rows) == 3 and all(status == "done" for status, _, _ in rows), rows
    for _, config, metrics in rows:
        assert json.loads(config)["kernel"]["params"]["arch"] == "convnet2"
        assert json.loads(metrics)["eval_arch"] == "convnet2"  # krr's auto: the run kernel's architecture
    nn = run_cli("run", "--store", str(store), *DATA, "ipc=1", "objective.steps=2", "evaluator=nn",
                 "evaluator.arch=convnet2", "evaluator.width=16", "evaluator.steps=3", "evaluator.seeds=1",
                 cwd=tmp_path, env_extra=env)
    assert nn.returncode == 0, nn.stderr
    rows = _rows(store)
    assert len(rows) == 4 and all(status == "done" for status, _, _ in rows), rows
    assert sum(json.loads(m).get("eval_arch") == "convnet2" and "nn_seeds" in json.loads(m) for _, _, m in rows) == 1


@pytest.mark.parametrize("args,message", [
    (["kernel.arch=convnet22"], "kernel.arch=convnet22: unknown architecture 'convnet22' (did you mean 'convnet2'?)"),
    (["evaluator=nn", "evaluator.arch=vgg"], "evaluator.arch=vgg: unknown architecture 'vgg' (did you mean 'vgg11'?)"),
])
def test_unknown_architecture_is_one_line_exit_2_nothing_written(tmp_path, site, args, message):
    store = tmp_path / "r.sqlite"
    result = run_cli("run", "--store", str(store), "dataset=digits", *args, cwd=tmp_path,
                     env_extra={"PYTHONPATH": str(site)})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].endswith(message), result.stderr
    assert not store.exists()


@pytest.mark.slow
def test_the_docs_example_passes_the_architecture_check(site, monkeypatch):
    from distillbench.testing import check_architecture

    monkeypatch.syspath_prepend(str(site))
    import distillbench_convnet2

    (component,) = distillbench_convnet2.distillbench_components()
    arch = check_architecture(component)
    assert arch.fast_exact is None and arch.trunk_features is None  # the generic defaults were used


def _fc1_with_trunk_weight_variance(scale: float):
    """fc1's stax network with a Dense trunk whose weight variance is ``scale`` times the NTK one's."""
    import functools

    import flax.linen as nn
    import jax.numpy as jnp
    from jax.nn import initializers

    from distillbench.components.architectures import Architecture
    from distillbench_builtin.architectures.networks import stax_network

    class Trunk(nn.Module):
        width: int
        w_std: float
        b_std: float
        dtype: object = jnp.float32

        @nn.compact
        def __call__(self, x):
            dense = nn.Dense(self.width, kernel_init=initializers.variance_scaling(scale * self.w_std**2, "fan_in",
                                                                                   "normal"),
                             bias_init=initializers.normal(self.b_std), dtype=self.dtype, param_dtype=self.dtype)
            return nn.relu(dense(x.reshape(x.shape[0], -1).astype(self.dtype)))

    return Architecture(stax=functools.partial(stax_network, "fc1"), trunk=Trunk)


@pytest.mark.slow
def test_the_check_accepts_a_matching_trunk_and_refuses_another_parameterization():
    from distillbench.testing import ConformanceError, check_architecture

    check_architecture(_fc1_with_trunk_weight_variance(1.0))
    with pytest.raises(ConformanceError, match="must converge to the stax NNGP as the width grows"):
        check_architecture(_fc1_with_trunk_weight_variance(2.0))


def test_the_run_registry_serves_its_architectures_to_the_kernels():
    """A registry built with extra plugins builds the architectures they declare (once) and hands them
    to the kernels it builds; another registry does not know them (no process-wide lookup)."""
    import types

    import jax.numpy as jnp
    import numpy as np

    from distillbench import Component, hookimpl
    from distillbench.errors import ConfigError
    from distillbench_builtin.architectures.networks import builtin
    from distillbench_builtin.kernels.exact import resolve_implementation

    plugin = types.ModuleType("fc1_again_plugin")

    @hookimpl
    def distillbench_components():
        return [Component(kind="architecture", name="fc1-again", summary="fc1 under another name",
                          build=lambda: builtin("fc1")),
                Component(kind="architecture", name="fc1-stax", summary="fc1 without its fast implementation",
                          build=lambda: builtin("fc1")._replace(fast_exact=None))]

    plugin.distillbench_components = distillbench_components
    x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 4, 4, 1)))
    with pytest.raises(ConfigError, match="unknown architecture 'fc1-again'"):
        load_registry(entry_points=False).instantiate("kernel", "nngp", {"arch": "fc1-again"})
    registry = load_registry(entry_points=False, extra=(plugin,))
    assert registry.architecture("fc1-again") is registry.architecture("fc1-again")  # built once
    again = registry.instantiate("kernel", "nngp", {"arch": "fc1-again"})
    assert again.arch == "fc1-again"
    reference = registry.instantiate("kernel", "nngp", {"arch": "fc1"}).kernel_fn(x, x, None)
    np.testing.assert_array_equal(again.kernel_fn(x, x, None), reference)
    # without a fast implementation, auto is neural-tangents' stax kernel (and fast is refused)
    assert resolve_implementation(registry.architecture("fc1-stax")) == "neural-tangents"
    with pytest.raises(ValueError, match="'fc1-stax' has no fast exact implementation"):
        resolve_implementation(registry.architecture("fc1-stax"), "fast")
    stax = registry.instantiate("kernel", "nngp", {"arch": "fc1-stax"})
    np.testing.assert_allclose(stax.kernel_fn(x, x, None), reference, rtol=1e-10)
