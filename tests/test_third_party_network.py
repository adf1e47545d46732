"""A third-party architecture from docs/plugins.md is FRePo's network (issue 29): the docs' package
``distillbench_convnet2`` (its code read from the docs, installed as a distribution, as
tests/test_architectures.py installs it) trains in the ``frepo-pool`` kernel and in the ``nn``
evaluator through its ``network``, and passes the conformance kit."""

import json
import sqlite3

import numpy as np
import pytest

from distillbench.registry import load_registry

from helpers import docs_architecture_site, run_cli


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The docs' package installed as a distribution (source + *.dist-info) on a PYTHONPATH dir."""
    return docs_architecture_site(tmp_path_factory.mktemp("site"))


@pytest.fixture
def plugin(site, monkeypatch):
    monkeypatch.syspath_prepend(str(site))
    import distillbench_convnet2

    return distillbench_convnet2


@pytest.mark.slow
def test_the_docs_network_passes_the_conformance_kit(plugin):
    from distillbench.testing import check_architecture
    from distillbench_convnet2 import network

    (component,) = plugin.distillbench_components()
    arch = check_architecture(component)
    assert arch.network is network.network  # its own network was checked, not the default one


def _evaluator(registry, **params):
    """The ``nn`` evaluator as a run builds it: its declared defaults, ``params`` validated on top."""
    comp = registry.get("evaluator", "nn")
    values = {**comp.default_params(), **params}
    return registry.instantiate("evaluator", "nn", {k: comp.param(k).validate(v) for k, v in values.items()})


@pytest.mark.slow
def test_the_nn_evaluator_trains_the_docs_network_with_batch_norm(plugin):
    from distillbench.components.evaluators import EvalContext
    from distillbench.components.objectives import Support
    from distillbench.krr import centered_one_hot
    from distillbench.sampling import balanced_subset
    from distillbench_builtin.datasets.synthetic import build_synthetic

    registry = load_registry(entry_points=False, extra=(plugin,))
    data = build_synthetic(60, 40, 3, 8, 8, 1, 1.0, 0)
    idx = balanced_subset(data.y_train, 2, 3, 0)
    support = Support(data.x_train[idx], np.asarray(centered_one_hot(data.y_train[idx], 3)), {})
    metrics = _evaluator(registry, arch="convnet2", normalization="batch", width=8, steps=3, seeds=1).evaluate(
        support, EvalContext(data, None, None, {}, None, 0))
    assert metrics["eval_arch"] == "convnet2" and 0.0 <= metrics["acc"] <= 1.0 and np.isfinite(metrics["mse"])
    with pytest.raises(ValueError, match=r"^convnet2's network has no normalization 'instance' \(choose from: "
                                         r"none, batch\)$"):
        _evaluator(registry, arch="convnet2", normalization="instance")


def _rows(store):
    with sqlite3.connect(store) as db:
        return db.execute("SELECT status, config, metrics FROM runs").fetchall()


@pytest.mark.slow
def test_a_tiny_frepo_runs_with_the_docs_architecture_as_its_network(tmp_path, site):
    store = tmp_path / "r.sqlite"
    result = run_cli("run", "--store", str(store), "dataset=digits", "ipc=1", "objective=frepo",
                     "kernel.arch=convnet2", "kernel.width=8", "objective.steps=3", "evaluator=nn",
                     "evaluator.arch=convnet2", "evaluator.normalization=batch", "evaluator.width=8",
                     "evaluator.steps=3", "evaluator.seeds=1", cwd=tmp_path, env_extra={"PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr
    ((status, config, metrics),) = _rows(store)
    config, metrics = json.loads(config), json.loads(metrics)
    assert status == "done"
    assert config["kernel"]["name"] == "frepo-pool" and config["kernel"]["params"]["arch"] == "convnet2"
    assert config["kernel"]["params"]["normalization"] == "batch"  # the pool trains its batch-norm network
    assert metrics["eval_arch"] == "convnet2" and np.isfinite(metrics["acc"])
