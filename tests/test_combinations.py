"""Each kernel x loss x objective combination runs, or is refused before any compute: the 18 of the
exact and random-feature kernels, and those of the kernel whose networks learn (issue 29)."""

import math
import sqlite3

import pytest
from click.testing import CliRunner

from distillbench.cli import main
from distillbench.errors import ConfigError
from distillbench.registry import load_registry
from distillbench.runner.execute import execute
from distillbench.runner.plan import plan

from helpers import tiny

KERNELS = ["ntk", "nngp", "rf-nngp"]
LOSSES = ["mse", "platt"]
OBJECTIVES = ["kip", "ls", "rfad"]


@pytest.fixture(scope="module")
def registry():
    return load_registry(entry_points=False)


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.slow
def test_combination(registry, kernel, loss, objective):
    args = tiny(f"kernel={kernel}", f"loss={loss}", f"objective={objective}")
    if objective == "ls":  # closed form: no steps parameter
        args.remove("objective.steps=3")
    if kernel == "rf-nngp":
        args += ["kernel.width=32", "kernel.num_networks=2"]
    if objective == "ls" and loss != "mse":
        with pytest.raises(ConfigError, match="refused .*squared"):
            plan(args, registry)
        return
    (config,) = plan(args, registry).configs
    outcome = execute(config, registry)
    assert outcome.status == "done", outcome.message
    assert math.isfinite(outcome.metrics["acc"]) and math.isfinite(outcome.metrics["random_acc"])
    assert math.isfinite(outcome.metrics["loss_final"])


@pytest.mark.slow
def test_headline_command_rf_nngp_platt(tmp_path):
    store = tmp_path / "r.sqlite"
    result = CliRunner().invoke(main, ["run", "--store", str(store), *tiny("kernel=rf-nngp", "loss=platt",
                                       "kernel.width=32", "kernel.num_networks=2")])
    assert result.exit_code == 0, result.output
    assert "kip/rf-nngp(fc1)/platt" in result.output and "done" in result.output
    with sqlite3.connect(store) as conn:
        (config, status) = conn.execute("SELECT config, status FROM runs").fetchone()
    assert status == "done" and '"rf-nngp"' in config


@pytest.mark.slow
def test_default_run_on_digits_beats_random(tmp_path):
    store = tmp_path / "r.sqlite"
    result = CliRunner().invoke(main, ["run", "--store", str(store)])
    assert result.exit_code == 0, result.output
    with sqlite3.connect(store) as conn:
        acc, random_acc = conn.execute("SELECT acc, random_acc FROM runs").fetchone()
    assert acc >= random_acc + 0.15


# -- issue 29: the kernel whose networks learn, and the frepo objective ------------------------------

POOL = ["kernel=frepo-pool", "kernel.width=8", "kernel.num_networks=2", "kernel.max_updates=2"]


@pytest.mark.parametrize("objective", ["kip", "ls", "rfad", "frepo"])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.slow
def test_combination_with_the_learning_kernel(registry, loss, objective):
    """Every objective x loss cell with frepo-pool runs (its networks trained each step), except ls,
    refused before any compute with the reason (it solves once: no step trains the networks)."""
    args = tiny(*POOL, f"loss={loss}", f"objective={objective}", "dataset.height=8", "dataset.width=8")
    if objective == "ls":
        args.remove("objective.steps=3")
        reason = "squared" if loss == "platt" else "frepo-pool's networks learn during distillation.*does not train"
        with pytest.raises(ConfigError, match=reason):
            plan(args, registry)
        return
    (config,) = plan(args, registry).configs
    outcome = execute(config, registry)
    assert outcome.status == "done", outcome.message
    assert math.isfinite(outcome.metrics["acc"]) and math.isfinite(outcome.metrics["loss_final"])


# -- issue 31: RCIG's pool, and objective=rcig with every kernel ------------------------------------

RCIG_POOL = ["kernel=rcig-pool", "kernel.width=8", "kernel.num_networks=2", "kernel.max_updates=3"]


@pytest.mark.parametrize("objective", ["kip", "ls", "rfad", "frepo", "rcig"])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.slow
def test_combination_with_rcig_pool(registry, loss, objective):
    """rcig-pool's networks learn like frepo-pool's: every objective that trains them runs with
    either loss; ls is refused before any compute, with the reason."""
    args = tiny(*RCIG_POOL, f"loss={loss}", f"objective={objective}", "dataset.height=8", "dataset.width=8")
    if objective == "ls":
        args.remove("objective.steps=3")
        reason = "squared" if loss == "platt" else "rcig-pool's networks learn during distillation.*does not train"
        with pytest.raises(ConfigError, match=reason):
            plan(args, registry)
        return
    if objective == "rcig":
        args += ["objective.tune=false", "objective.inner_steps=2", "objective.hinv_steps=2"]
    (config,) = plan(args, registry).configs
    outcome = execute(config, registry)
    assert outcome.status == "done", outcome.message
    assert math.isfinite(outcome.metrics["acc"]) and math.isfinite(outcome.metrics["loss_final"])


@pytest.mark.parametrize("kernel", ["ntk", "nngp", "rf-nngp", "finite-ntk"])
def test_rcig_refuses_kernels_without_networks_that_learn(registry, kernel):
    with pytest.raises(ConfigError, match=f"objective rcig works on the networks.*kernel {kernel} has none.*"
                                          "kernel=frepo-pool or kernel=rcig-pool|kernel=rcig-pool or kernel=frepo-pool"):
        plan(tiny(f"kernel={kernel}", "objective=rcig"), registry)


@pytest.mark.slow
def test_rcig_linearises_frepo_pool_networks(registry):
    """frepo-pool offers its networks too (batch norm in inference mode): RCIG's step runs on them."""
    args = tiny(*POOL, "objective=rcig", "objective.tune=false", "objective.inner_steps=2", "objective.hinv_steps=2",
                "dataset.height=8", "dataset.width=8")
    (config,) = plan(args, registry).configs
    outcome = execute(config, registry)
    assert outcome.status == "done", outcome.message


@pytest.mark.slow
def test_rcig_subsamples_a_large_support_only_where_the_device_needs_it(registry, monkeypatch):
    """objective.support_rows unset, 75 support rows: every row on a CPU (8 GiB); on a device whose
    quarter holds only a few rows, as many as fit; the value used is recorded with the run."""
    from distillbench import devices
    from distillbench.devices import DeviceInfo

    args = tiny(*RCIG_POOL, "objective=rcig", "objective.tune=false", "objective.inner_steps=2",
                "objective.hinv_steps=2", "objective.steps=2", "objective.target_batch=32", "dataset.height=8",
                "dataset.width=8", "dataset.n_train=300", "ipc=25")
    (config,) = plan(args, registry).configs
    monkeypatch.setitem(devices._CACHE, "info", DeviceInfo("cpu", "cpu", 1, 64 * 2**30))
    outcome = execute(config, registry)
    assert outcome.status == "done", outcome.message
    assert outcome.metrics["objective_support_rows"] == 0
    monkeypatch.setitem(devices._CACHE, "info", DeviceInfo("gpu", "small", 1, 2**20))
    outcome = execute(config, registry)
    assert outcome.status == "done", outcome.message
    assert 1 <= outcome.metrics["objective_support_rows"] < 75
    assert math.isfinite(outcome.metrics["acc"])
