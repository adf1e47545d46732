"""Peak memory is the run's, not the process's (``distillbench.runner.memory``).

In one process (the ``local`` launcher, ``distillbench evaluate``), a cell that follows a larger
one must not be stored with the larger one's peak: the high-water mark is reset at each run's
start where the system allows (Linux), and a figure that could not be is labelled ``process``.
"""

import types

import numpy as np
import pytest

from distillbench import Component, Param, hookimpl
from distillbench.components.evaluators import Evaluator
from distillbench.registry import load_registry
from distillbench.runner import memory
from distillbench.runner.execute import execute
from distillbench.runner.plan import plan

from helpers import tiny

MB = 2**20
RESETS = memory.reset_high_water_mark()
needs_reset = pytest.mark.skipif(not RESETS, reason="this system offers no reset of the peak RSS (not Linux)")


def _hold(mb: int) -> float:
    """Touch ``mb`` MiB, then free it: the process's peak rises by about that much."""
    block = np.ones(mb * MB // 8) if mb else np.zeros(1)
    total = float(block.sum())
    del block
    return total


def _build_hungry(*, mb: int = 0) -> Evaluator:
    def evaluate(support, ctx):
        _hold(mb)
        return {"acc": 0.5}

    return Evaluator(evaluate)


@hookimpl
def _hungry_components():
    return [Component(kind="evaluator", name="hungry", summary="scores 0.5 after holding mb MiB for a moment",
                      build=_build_hungry, params=(Param("mb", int, 0, "MiB to hold while scoring", min=0),))]


HUNGRY = types.ModuleType("hungry_plugin")
HUNGRY.distillbench_components = _hungry_components


@needs_reset
def test_the_window_sees_what_was_held_in_it_and_not_before():
    big = memory.start()
    _hold(400)
    first = big.peak()
    small = memory.start()
    _hold(10)
    second = small.peak()
    assert "peak_rss_scope" not in first and "peak_rss_scope" not in second
    assert second["peak_rss_mb"] < first["peak_rss_mb"] - 300, (first, second)


@needs_reset
def test_a_cell_after_a_larger_one_in_the_same_process_stores_its_own_peak():
    registry = load_registry(entry_points=False, extra=(HUNGRY,))
    large, small = plan(tiny("evaluator=hungry", "evaluator.mb=400,0"), registry).configs
    assert (large.evaluator.as_dict()["mb"], small.evaluator.as_dict()["mb"]) == (400, 0)
    first, second = (execute(c, registry) for c in (large, small))
    assert first.status == second.status == "done", (first.message, second.message)
    assert first.timings["peak_rss_mb"] > second.timings["peak_rss_mb"] + 300, (first.timings, second.timings)
    assert "peak_rss_scope" not in first.timings and "peak_rss_scope" not in second.timings


def test_without_a_reset_the_figure_is_labelled_the_process_s():
    window = memory.Window(reset=False, first=False)
    out = window.peak()
    assert out["peak_rss_scope"] == "process" and out["peak_rss_mb"] > 0
