"""The core names no parameter: a third-party kernel whose architecture parameter is ``net``
(declared ``component="architecture"``) and a third-party objective whose label flag is ``fit_y``
(declared ``role="learns_labels"``) fill the run label and the leaderboard's arch and labels columns
as the built-ins' ``arch`` and ``learn_labels`` do; without their plugin the columns read ``-``."""

from __future__ import annotations

import dataclasses

import pytest

from distillbench.params import LEARNS_LABELS
from distillbench.records import Metrics, RunResult, Timings
from distillbench.registry import Entry, Registry, load_registry
from distillbench.reports.declared import EvaluatorMetrics
from distillbench.reports.leaderboard import leaderboard_from_stores
from distillbench.runner.plan import plan
from distillbench.store.database import ResultStore

ARGS = ("objective=relabel", "kernel=net-ntk", "kernel.net=convnet3", "objective.fit_y=true", "loss=mse")


def _renamed(component, old: str, new: str, name: str):
    """A copy of a built-in ``component`` under ``name`` whose parameter ``old`` is called ``new``."""
    params = tuple(dataclasses.replace(p, name=new) if p.name == old else p for p in component.params)
    return dataclasses.replace(component, name=name, params=params, default=False)


def third_party_registry() -> Registry:
    """The built-ins, plus ``net-ntk`` (ntk, its ``arch`` named ``net``) and ``relabel`` (kip, its
    ``learn_labels`` named ``fit_y``): declarations only, nothing here is built."""
    builtin = load_registry(entry_points=False)
    kernel = _renamed(builtin.get("kernel", "ntk"), "arch", "net", "net-ntk")
    objective = _renamed(builtin.get("objective", "kip"), "learn_labels", "fit_y", "relabel")
    assert kernel.param("net").component == "architecture" and objective.param("fit_y").role == LEARNS_LABELS
    return Registry(builtin.entries() + [Entry(kernel, "a third-party test plugin"),
                                         Entry(objective, "a third-party test plugin")])


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    registry = third_party_registry()
    configs = plan(ARGS + ("seed=0,1",), registry).configs
    path = tmp_path_factory.mktemp("declared") / "r.sqlite"
    with ResultStore(path) as store:
        for config, acc in zip(configs, (0.8, 0.82)):
            metrics = Metrics(acc=acc, random_acc=0.6, gain=acc - 0.6)
            store.save(RunResult(config, "done", None, metrics, Timings(step_s=0.01, wall_s=1.0), environment={}))
    return registry, configs, path


def test_the_run_label_shows_the_declared_architecture(stored):
    _, configs, _ = stored
    label = configs[0].label()
    assert "relabel/net-ntk(convnet3)/mse" in label
    assert "kernel.net" not in label  # in the kernel's parentheses, not repeated in the tag


def test_the_leaderboard_fills_arch_and_labels_from_declarations(stored):
    registry, _, path = stored
    board = leaderboard_from_stores([path], metrics=EvaluatorMetrics.from_registry(registry), with_paper=False,
                                    group_by=("arch", "labels"))
    ((table, row),) = board.all_rows()
    assert table.key == {"arch": "convnet3", "labels": "learned"}
    assert (row.arch, row.learn_labels, row.labels_text()) == ("convnet3", True, "learned")
    assert row.method == "relabel/net-ntk(convnet3)/mse"
    assert row.evaluator == "krr(nngp, convnet3)"  # krr's arch=auto: the run kernel's, by its declaration
    assert "kernel.net" not in row.setting and "objective.fit_y" not in row.setting
    assert row.to_dict()["arch"] == "convnet3" and row.to_dict()["learn_labels"] is True


def test_without_the_plugin_the_columns_are_empty_not_a_crash(stored):
    _, _, path = stored
    board = leaderboard_from_stores([path], metrics=EvaluatorMetrics.from_registry(load_registry(entry_points=False)),
                                    with_paper=False)
    ((_, row),) = board.all_rows()
    assert (row.arch, row.learn_labels, row.labels_text()) == (None, None, "-")
    assert row.method == "relabel/net-ntk/mse" and row.acc_mean_pct == pytest.approx(81.0)


@pytest.mark.parametrize("role, kind", [("labels", bool), (LEARNS_LABELS, str)])
def test_a_role_is_one_reports_know_on_a_parameter_of_its_type(role, kind):
    from distillbench import Param

    with pytest.raises(TypeError, match="role must be one of learns_labels \\(bool\\)"):
        Param("fit_y", kind, False if kind is bool else "no", "learn the labels", role=role)
