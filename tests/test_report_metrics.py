"""Evaluators declare the metrics reports show: a metric added to ``krr`` in a test (declared on a
modified copy of its Component, in a registry of its own) reaches the console line, and the md,
csv, json and html leaderboards, with no change to ``distillbench/reports``; a stored run whose
evaluator is not installed still shows its numbers under their names."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest
from helpers import TINY
from rich.console import Console

from distillbench import Component, Metric
from distillbench.components.evaluators import Evaluator
from distillbench.records import Metrics, RunResult, Timings
from distillbench.registry import Registry, load_registry
from distillbench.reports import formats
from distillbench.reports.console import ConsoleReporter
from distillbench.reports.declared import EvaluatorMetrics, cell, header, undeclared
from distillbench.reports.html_page import to_html
from distillbench.reports.leaderboard import leaderboard_from_stores
from distillbench.runner.plan import plan
from distillbench.store.database import ResultStore

#: The new metric: the mean absolute pixel of the scored set (a number for the distilled set and
#: for the random subset alike).
SPREAD = Metric("support_spread", "support |x|", "number", higher_is_better=None)


def build_krr_with_spread(**params) -> Evaluator:
    """The built-in krr evaluator, reporting one more number."""
    from distillbench_builtin.evaluators.krr import build_krr

    inner = build_krr(**params)

    def evaluate(support, ctx):
        return {**inner.evaluate(support, ctx), SPREAD.name: float(np.mean(np.abs(np.asarray(support.x))))}

    return Evaluator(evaluate=evaluate)


def registry_with_spread() -> Registry:
    """The built-in plugin's components, with krr's declaration (and builder) extended by ``SPREAD``."""
    entries = []
    for entry in load_registry(entry_points=False).entries():
        component = entry.component
        if (component.kind, component.name) == ("evaluator", "krr"):
            component = dataclasses.replace(component, build=build_krr_with_spread,
                                            metrics=component.metrics + (SPREAD,))
            entry = dataclasses.replace(entry, component=component)
        entries.append(entry)
    return Registry(entries)


@pytest.fixture(scope="module")
def spread_run(tmp_path_factory):
    """One real tiny run scored by the extended krr: its console line and its store."""
    from distillbench.runner.sweep import run_sweep

    registry = registry_with_spread()
    path = tmp_path_factory.mktemp("spread") / "r.sqlite"
    out = io.StringIO()
    reporter = ConsoleReporter(console=Console(file=out, width=400), err_console=Console(file=io.StringIO()),
                               metrics=EvaluatorMetrics.from_registry(registry))
    with ResultStore(path) as store:
        (outcome,) = run_sweep(plan(TINY, registry), registry, store, reporter)
    assert outcome.status == "done", outcome.message
    return registry, path, out.getvalue(), outcome.metrics


@pytest.mark.slow
def test_a_metric_declared_on_krr_is_shown_in_every_report(spread_run):
    registry, path, console, stored = spread_run
    value, random = stored[SPREAD.name], stored[f"random_{SPREAD.name}"]
    assert value > 0 and random > 0
    shown = f"{cell(SPREAD, value)} (random {cell(SPREAD, random)})"
    assert f"krr: support |x| {shown}" in console

    board = leaderboard_from_stores([path], metrics=EvaluatorMetrics.from_registry(registry))
    md = formats.to_markdown(board)
    assert "| krr: support \\|x\\| |" in md and shown in md
    html = to_html(board)
    assert '<th data-key="metrics-krr"' in html and "krr: support |x|" in html and shown in html
    (row,) = formats.read_csv(formats.to_csv(board))
    assert row["evaluator_metrics"] == {SPREAD.name: value, f"random_{SPREAD.name}": random}
    doc = json.loads(formats.to_json(board))
    assert doc["tables"][0]["rows"][0]["evaluator_metrics"] == row["evaluator_metrics"]
    assert doc["metrics"] == {"krr": [{"name": SPREAD.name, "label": "support |x|", "format": "number",
                                       "higher_is_better": None}]}


def test_the_installed_krr_declares_none_of_it(spread_run):
    """The same store with the installed plugins: the number is stored, and shown nowhere."""
    _, path, _, _ = spread_run
    board = leaderboard_from_stores([path], metrics=EvaluatorMetrics.installed())
    assert board.metrics == {} and board.tables[0].rows[0].evaluator_metrics == {}
    assert "support" not in formats.to_markdown(board)


def test_an_evaluator_no_longer_installed_shows_its_numbers_by_name(tmp_path):
    (config,) = plan(TINY, load_registry(entry_points=False)).configs
    stored = {"acc": 0.8, "random_acc": 0.5, "gain": 0.3, "leak": 0.25, "random_leak": 0.5, "loss_param_t": 2.0,
              "note": "text", "random_note": "text"}
    gone = dataclasses.replace(config, evaluator=dataclasses.replace(config.evaluator, name="gone"))
    with ResultStore(tmp_path / "r.sqlite") as store:
        store.save(RunResult(gone, metrics=Metrics.from_dict(stored), timings=Timings(step_s=0.1),
                             run_id=gone.run_id))
    board = leaderboard_from_stores([tmp_path / "r.sqlite"], metrics=EvaluatorMetrics.installed())
    assert board.metrics == {"gone": (Metric("leak", "leak"),)}  # no random twin: not the evaluator's number
    md = formats.to_markdown(board)
    assert "| gone: leak |" in md and "0.25 (random 0.5)" in md
    assert formats.read_csv(formats.to_csv(board))[0]["evaluator_metrics"] == {"leak": 0.25, "random_leak": 0.5}


def test_declared_formats_and_units():
    ratio, percent, number = Metric("r", "near", "ratio"), Metric("p", "MIA", "percent"), Metric("n", "n")
    assert [header(m) for m in (ratio, percent, number)] == ["near ×", "MIA %", "n"]
    assert [cell(m, 0.55123) for m in (ratio, percent, number)] == ["0.55×", "55.1", "0.551"]
    assert cell(number, 1234.5) == "1234" and cell(number, None) == "-" and cell(number, "x") == "-"
    assert undeclared([{"a": 1.0, "random_a": 2.0, "acc": 0.5, "random_acc": 0.5, "b": 1.0}]) == (Metric("a", "a"),)


@pytest.mark.parametrize("bad, problem", [
    (dict(kind="kernel", metrics=(Metric("a", "A"),)), "only evaluators declare metrics"),
    (dict(metrics=(("a", "A"),)), "must be distillbench.Metric values"),
    (dict(metrics=(Metric("a", "A", "percentage"),)), "format must be one of percent, ratio, number"),
    (dict(metrics=(Metric("a", ""),)), "needs a name and a label"),
    (dict(metrics=(Metric("a", "A"), Metric("a", "B"))), "declares a metric twice"),
])
def test_a_bad_metrics_declaration_is_refused_when_declared(bad, problem):
    with pytest.raises(TypeError, match=problem):
        Component(**{"kind": "evaluator", "name": "e", "summary": "s", "build": "m:f", **bad})
