import types

import numpy as np
import pytest

from distillbench import Component, hookimpl
from distillbench.components.evaluators import Evaluator

from distillbench.registry import load_registry
from distillbench.runner.execute import execute
from distillbench.runner.plan import plan
from distillbench.runner.sweep import run_sweep
from distillbench.store.database import ResultStore

from helpers import tiny


def _evaluate_raises(support, ctx):
    raise RuntimeError("no scores today")


@hookimpl
def _failing_components():
    return [Component(kind="evaluator", name="raises", summary="s", build=lambda: Evaluator(_evaluate_raises))]


FAILING_PLUGIN = types.ModuleType("failing_plugin")
FAILING_PLUGIN.distillbench_components = _failing_components


@pytest.fixture(scope="module")
def registry():
    return load_registry(entry_points=False)


def _one(registry, *args, timeout=None):
    (config,) = plan(tiny(*args), registry).configs
    return execute(config, registry, timeout=timeout)


def test_done_run_reports_metrics_timings_and_support(registry):
    outcome = _one(registry, "objective.steps=5")
    assert outcome.status == "done", outcome.message
    m, t = outcome.metrics, outcome.timings
    assert 0 <= m["acc"] <= 1 and 0 <= m["random_acc"] <= 1
    assert m["gain"] == pytest.approx(m["acc"] - m["random_acc"])
    for key in ("compile_s", "first_step_s", "step_s", "eval_s", "wall_s", "peak_rss_mb"):
        assert t[key] > 0, key
    assert outcome.artifact.support.x.shape == (3, 4, 4, 1)
    assert outcome.artifact.loss_history.shape[1] == 2


@pytest.mark.slow
def test_same_seed_same_numbers_on_cpu(registry):
    a = _one(registry, "objective.steps=4", "seed=3")
    b = _one(registry, "objective.steps=4", "seed=3")
    c = _one(registry, "objective.steps=4", "seed=4")
    assert a.metrics == b.metrics
    np.testing.assert_array_equal(a.artifact.support.x, b.artifact.support.x)
    assert not np.array_equal(a.artifact.support.x, c.artifact.support.x)


def test_platt_learns_its_scale_and_records_it(registry):
    outcome = _one(registry, "loss=platt", "objective.steps=5")
    assert outcome.status == "done", outcome.message
    assert outcome.metrics["loss_param_log_scale"] != 0.0
    assert "log_scale" in outcome.artifact.loss_params


def test_diverged_status(registry):
    outcome = _one(registry, "objective.lr=1e30", "objective.steps=20", "objective.dtype=float32")
    assert outcome.status == "diverged", (outcome.status, outcome.metrics)
    assert "loss became" in outcome.message


def test_timeout_status(registry):
    outcome = _one(registry, "objective.steps=100000", timeout=1.0)  # compile alone may exceed 1 s under load
    assert outcome.status == "timeout" and "timeout=1s" in outcome.message
    assert 1 < outcome.metrics["steps_run"] < 100000


@pytest.mark.slow
def test_error_is_kept_and_sweep_continues(tmp_path):
    # a plugin evaluator that raises: that cell errors (with its traceback kept), the next one runs
    registry = load_registry(entry_points=False, extra=(FAILING_PLUGIN,))
    p = plan(tiny("evaluator=raises,krr"), registry)
    with ResultStore(tmp_path / "r.sqlite") as store:
        outcomes = run_sweep(p, registry, store)
        assert [o.status for o in outcomes] == ["error", "done"]
        assert "no scores today" in outcomes[0].message
        assert outcomes[0].plain == "evaluator 'raises' (failing_plugin): no scores today"
        record = store.get(outcomes[0].config.run_id)
        assert "Traceback (most recent call last)" in record.traceback and "_evaluate_raises" in record.traceback
        assert store.count() == 2
        again = run_sweep(p, registry, store)
        assert [o.cached for o in again] == [False, True]


@pytest.mark.slow
def test_force_reruns_done_cells(registry, tmp_path):
    p = plan(tiny("objective.steps=2"), registry)
    with ResultStore(tmp_path / "r.sqlite") as store:
        (first,) = run_sweep(p, registry, store)
        before = store.get(first.config.run_id).finished_at
        (cached,) = run_sweep(p, registry, store)
        assert cached.cached and cached.metrics == first.metrics
        (forced,) = run_sweep(p, registry, store, force=True)
        assert not forced.cached and forced.metrics == first.metrics  # same seed, same numbers
        assert store.count() == 1 and store.get(first.config.run_id).finished_at >= before


@pytest.mark.slow
def test_model_selection_stops_at_the_same_step_with_the_same_bits(registry):
    """Early stopping, divergence and loss history at fixed step indices, never at wall-clock points."""
    from distillbench.runner.execute import check_interval

    args = ("objective.val_every=5", "objective.patience=12", "objective.steps=400", "objective.val_per_class=4",
            "objective.lr=0.3")
    runs = [_one(registry, *args) for _ in range(3)]
    every = check_interval(400)
    first = runs[0]
    assert first.status == "done", first.message
    stop = first.metrics["stopped_early_at"]
    assert 12 < stop < 400 and stop % every == 0
    np.testing.assert_array_equal(first.artifact.loss_history[:, 0], [1, *range(every, stop + 1, every)])
    assert first.metrics["objective_val_per_class"] == 4  # what the objective resolved, as it reports it
    for other in runs[1:]:
        assert other.metrics["stopped_early_at"] == stop and other.metrics["acc"] == first.metrics["acc"]
        for name, array in (("support x", lambda r: r.artifact.support.x), ("support y", lambda r: r.artifact.support.y),
                            ("loss history", lambda r: r.artifact.loss_history)):
            assert np.array_equal(array(other), array(first)), name


def test_history_is_on_the_fixed_grid_and_ends_at_the_last_step(registry):
    from distillbench.runner.execute import check_interval

    outcome = _one(registry, "objective.steps=25")
    every = check_interval(25)
    np.testing.assert_array_equal(outcome.artifact.loss_history[:, 0], [1, *range(every, 25, every), 25])


@pytest.mark.slow
def test_the_run_records_its_data_fingerprint_and_what_evaluated_it(registry):
    a = _one(registry, "objective.steps=2")
    b = _one(registry, "objective.steps=2", "dataset.data_seed=1")
    assert len(a.data_fingerprint) == 32 and a.data_fingerprint != b.data_fingerprint
    assert a.data_fingerprint == _one(registry, "objective.steps=2", "seed=5").data_fingerprint  # seed: not the data
    assert (a.metrics["eval_kernel"], a.metrics["eval_arch"]) == ("nngp", "fc1")
    assert "random_eval_kernel" not in a.metrics


def _reporting_objective(settings):
    """A plugin objective: kip, whose ``Distiller`` also says what it resolved (``settings``)."""
    from distillbench import Component

    kip = load_registry(entry_points=False).get("objective", "kip")

    def build(**params):
        make = kip.instantiate(params)
        return lambda problem: make(problem)._replace(settings=settings(problem))

    module = types.ModuleType("settings_plugin")
    module.distillbench_components = hookimpl(lambda: [Component(
        kind="objective", name="kip-settings", summary="s", build=build, params=kip.params, defaults=kip.defaults)])
    return module


def test_an_objective_reports_what_it_resolved():
    def settings(problem):
        return {"target_batch": np.int64(min(6000, len(problem.data.y_train))), "rule": "capped", "none": None}

    registry = load_registry(entry_points=False, extra=(_reporting_objective(settings),))
    (config,) = plan(tiny("objective=kip-settings", "objective.steps=2"), registry).configs
    outcome = execute(config, registry)
    assert outcome.status == "done", outcome.message
    n = dict(outcome.metrics)["objective_target_batch"]
    assert type(n) is int and n == 60 and dict(outcome.metrics)["objective_rule"] == "capped"
    assert dict(outcome.metrics)["objective_none"] is None


def test_settings_that_are_not_scalars_fail_the_run_naming_the_plugin():
    registry = load_registry(entry_points=False, extra=(_reporting_objective(lambda p: {"sizes": [1, 2]}),))
    (config,) = plan(tiny("objective=kip-settings", "objective.steps=2"), registry).configs
    outcome = execute(config, registry)
    assert outcome.status == "error"
    assert "objective 'kip-settings' (settings_plugin)" in outcome.message
    assert "Distiller.settings['sizes'] must be a number, text, bool or None, got list" in outcome.message


def test_a_failure_carries_the_components_of_the_stage_it_left(registry):
    from distillbench.runner.pipeline import involved_in, make_kernel, running

    with pytest.raises(RuntimeError) as err:
        with running(("evaluator", "krr"), ("loss", "mse")):
            with running(("objective", "kip")):  # the innermost stage names the code that ran
                raise RuntimeError("in the objective")
    assert involved_in(err.value) == (("objective", "kip"),)
    with pytest.raises(RuntimeError) as err:
        with running(("evaluator", "krr")):
            make_kernel(registry, "nngp", {"arch": "fc1", "not_a_kernel_param": 1})  # an evaluator's kernel
            raise RuntimeError("after the evaluator built a kernel")
    assert involved_in(err.value) == (("evaluator", "krr"), ("kernel", "nngp"))
    assert involved_in(RuntimeError("outside any stage")) == ()
    make_kernel(registry, "nngp", {})  # outside a stage: nothing to blame, nothing kept
    with pytest.raises(KeyError) as err:
        with running():
            raise KeyError("no component's code")
    assert involved_in(err.value) == ()


@pytest.mark.slow
def test_the_built_in_objectives_report_the_validation_split_they_resolved(registry):
    """``val_per_class`` none resolves to the RFAD reference's 500 (10 classes) or 100 (here: 3 classes);
    the run records the number the objective used, so nothing downstream re-derives the rule."""
    for objective in ("kip", "rfad"):
        outcome = _one(registry, f"objective={objective}", "dataset.n_train=360", "objective.steps=2",
                       "objective.val_every=1", "objective.target_batch=30")
        assert outcome.status == "done", outcome.message
        assert outcome.metrics["objective_val_per_class"] == 100, objective
    outcome = _one(registry, "objective.steps=2")
    assert "objective_val_per_class" not in outcome.metrics  # no model selection: nothing resolved
