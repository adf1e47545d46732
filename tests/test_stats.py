"""Confidence intervals and the comparison with the top row: known values and known answers."""

import json
import math

import numpy as np
import pytest

from distillbench.reports import stats
from distillbench.reports.leaderboard import SCHEMA_VERSION, StoredRun, build_leaderboard
from distillbench.records import Metrics, RunConfig, RunRecord, Timings


def test_t_distribution_against_table_values():
    assert stats.t_quantile(0.975, 4) == pytest.approx(2.7764451, abs=1e-6)
    assert stats.t_quantile(0.975, 1) == pytest.approx(12.7062047, abs=1e-6)
    assert 2 * stats.t_sf(2.228, 10) == pytest.approx(0.05, abs=1e-4)


def test_t_interval_with_five_seeds_and_bootstrap_below():
    values = [90.0, 91.0, 92.0, 93.0, 94.0]
    ci = stats.confidence_interval(values)
    half = 2.7764451 * math.sqrt(2.5) / math.sqrt(5)
    assert ci.method == "t" and ci.low == pytest.approx(92 - half) and ci.high == pytest.approx(92 + half)
    small = stats.confidence_interval([90.0, 91.0, 95.0])
    assert small.method == "bootstrap" and 90.0 <= small.low < small.high <= 95.0
    assert stats.confidence_interval([90.0, 91.0, 95.0]) == small  # reproducible
    assert stats.confidence_interval([90.0]) is None


def test_paired_and_welch_tests_against_scipy():
    from scipy.stats import ttest_ind, ttest_rel

    a = {0: 93.1, 1: 94.0, 2: 92.5, 3: 93.8}
    b = {0: 92.0, 1: 93.5, 2: 92.6, 3: 92.1}
    paired = stats.compare(a, b)
    assert paired.test == stats.PAIRED
    assert paired.p_value == pytest.approx(ttest_rel(list(a.values()), list(b.values())).pvalue)
    c = {5: 92.0, 6: 93.5, 7: 92.6}
    welch = stats.compare(a, c)
    assert welch.test == stats.WELCH
    assert welch.p_value == pytest.approx(ttest_ind(list(a.values()), list(c.values()), equal_var=False).pvalue)
    assert stats.compare(a, {0: 90.0}) is None


def _record(run_id, objective, seed, acc):
    config = {
        "dataset": {"name": "digits", "params": {}}, "kernel": {"name": "ntk", "params": {"arch": "fc1"}},
        "loss": {"name": "mse", "params": {}}, "objective": {"name": objective, "params": {}},
        "evaluator": {"name": "krr", "params": {}}, "ipc": 10, "seed": seed,
    }
    return StoredRun(RunRecord(run_id, "2024-01-01T00:00:00+00:00", "done", None, RunConfig.from_dict(config),
                               Metrics(acc=acc, random_acc=0.5), Timings(), {}, None), None)


def _board(methods):
    runs = [_record(f"{name}-{seed}", name, seed, acc) for name, accs in methods.items()
            for seed, acc in enumerate(accs)]
    return build_leaderboard(runs)


def test_identical_methods_are_tied_and_a_10_point_gap_is_significant():
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 0.01, size=5)  # 1 point of seed noise
    board = _board({"a": 0.80 + noise, "b": 0.80 + noise, "c": 0.70 + noise[::-1]})
    rows = {r.objective: r for r in board.tables[0].rows}
    top = rows["a"] if rows["a"].rank == 1 and rows["a"].vs_top_p is None else rows["b"]
    other = rows["b"] if top is rows["a"] else rows["a"]
    assert top.rank == 1 and top.vs_top_p is None and top.ci_method == "t"
    assert other.tied_with_top is True and other.vs_top_p == 1.0 and other.vs_top_test == stats.PAIRED
    assert rows["c"].tied_with_top is False and rows["c"].vs_top_p < 1e-3
    assert rows["c"].acc_ci_high_pct < top.acc_ci_low_pct


def test_small_gap_over_few_seeds_is_a_tie_and_json_csv_carry_the_columns():
    from distillbench.reports.formats import read_csv, to_csv, to_markdown

    board = _board({"a": [0.937, 0.945, 0.928], "b": [0.921, 0.945, 0.933]})  # 93.7 ± 0.9 vs 93.3 ± 1.2
    (top, second) = board.tables[0].rows
    assert second.tied_with_top is True and second.vs_top_test == stats.PAIRED and top.ci_method == "bootstrap"
    doc = board.to_dict()
    assert doc["version"] == SCHEMA_VERSION == 5 and "bootstrap" in doc["ci"]
    row = json.loads(json.dumps(doc))["tables"][0]["rows"][1]
    assert row["tied_with_top"] is True and row["acc_ci_low_pct"] is not None and row["acc_by_seed_pct"]["0"] == pytest.approx(92.1)
    (_, csv_second) = read_csv(to_csv(board))
    assert csv_second["tied_with_top"] is True and csv_second["vs_top_p"] == second.vs_top_p
    text = to_markdown(board)
    assert "| 2 ≈ |" in text and "bootstrap" in text and "paired t, tied" in text
