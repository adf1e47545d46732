import numpy as np
import pytest

from distillbench.registry import load_registry
from distillbench.runner.execute import execute
from distillbench.runner.plan import plan
from distillbench.runner.sweep import run_sweep
from distillbench.store.database import ResultStore

from helpers import tiny


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
    assert outcome.arrays["support_x"].shape == (3, 4, 4, 1)
    assert outcome.arrays["loss_history"].shape[1] == 2


def test_same_seed_same_numbers_on_cpu(registry):
    a = _one(registry, "objective.steps=4", "seed=3")
    b = _one(registry, "objective.steps=4", "seed=3")
    c = _one(registry, "objective.steps=4", "seed=4")
    assert a.metrics == b.metrics
    np.testing.assert_array_equal(a.arrays["support_x"], b.arrays["support_x"])
    assert not np.array_equal(a.arrays["support_x"], c.arrays["support_x"])


def test_platt_learns_its_scale_and_records_it(registry):
    outcome = _one(registry, "loss=platt", "objective.steps=5")
    assert outcome.status == "done", outcome.message
    assert outcome.metrics["loss_param_log_scale"] != 0.0
    assert "loss_param_log_scale" in outcome.arrays


def test_diverged_status(registry):
    outcome = _one(registry, "objective.lr=1e30", "objective.steps=20", "objective.dtype=float32")
    assert outcome.status == "diverged", (outcome.status, outcome.metrics)
    assert "loss became" in outcome.message


def test_timeout_status(registry):
    outcome = _one(registry, "objective.steps=100000", timeout=1.0)  # compile alone may exceed 1 s under load
    assert outcome.status == "timeout" and "timeout=1s" in outcome.message
    assert 1 < outcome.metrics["steps_run"] < 100000


def test_error_is_kept_and_sweep_continues(registry, tmp_path):
    # ipc=25 exceeds the 20 examples per class of this dataset: that cell errors, the next runs
    p = plan(tiny("ipc=25,1"), registry)
    with ResultStore(tmp_path / "r.sqlite") as store:
        outcomes = run_sweep(p, registry, store)
        assert [o.status for o in outcomes] == ["error", "done"]
        assert "fewer than ipc=25" in outcomes[0].message
        assert store.count() == 2
        again = run_sweep(p, registry, store)
        assert [o.cached for o in again] == [False, True]


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
