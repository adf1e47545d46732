"""The launcher contract (``distillbench.launchers.Launcher``), checked by building and, on request,
by running two tiny cells through it.

The structural part is cheap and needs no engine running. ``cells=True`` is the check that
matters for a new launcher: the same two cells run by it and by the driver itself (``local``)
must both end ``done`` with the same accuracies and the same distilled support, bit for bit (CPU,
same seed), each reported finished exactly once.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from distillbench.launchers import Launcher
from distillbench.testing._base import Subject, build

#: Two tiny cells (seconds each on CPU): a synthetic dataset, a few KIP steps, two seeds.
CELLS = ("dataset=synthetic", "dataset.n_train=40", "dataset.n_test=20", "dataset.num_classes=2",
         "dataset.height=4", "dataset.width=4", "objective.steps=3", "seed=0,1")


def check_launcher(launcher: Any, params: Mapping[str, Any] | None = None, *, cells: bool = False) -> Launcher:
    """Check a launcher component (or a built ``Launcher``); raise ``ConformanceError`` (``launcher contract: ...``).

    * ``build`` returns a ``distillbench.launchers.Launcher`` with a non-empty ``name`` and a
      one-line ``describe()``; ``memory_fraction`` is ``None`` or in ``(0, 1]``;
    * a launcher that is not ``in_process`` overrides ``run`` (the base class's raises);
    * ``cells=True``: two tiny cells run through it give the driver's own results (see module doc).

    Returns the built launcher.
    """
    built, s = build(launcher, "launcher", params, Launcher)
    if not isinstance(built.name, str) or not built.name:
        raise s.fail(f"name must be a non-empty string, got {built.name!r}")
    text = s.call("describe()", built.describe)
    if not isinstance(text, str) or not text.strip() or "\n" in text.strip():
        raise s.fail(f"describe() must return one line of text, got {text!r}")
    fraction = built.memory_fraction
    if fraction is not None and not (isinstance(fraction, float) and 0 < fraction <= 1):
        raise s.fail(f"memory_fraction must be None or a float in (0, 1], got {fraction!r}")
    if not built.in_process and type(built).run is Launcher.run:
        raise s.fail("a launcher that is not in_process must implement run(tasks, finished, tick, folder)")
    if cells:
        _same_as_local(s, built)
    return built


def _same_as_local(s: Subject, launcher: Launcher) -> None:
    """Run :data:`CELLS` through ``launcher`` and in process; compare status, accuracy and support."""
    from distillbench.registry import load_registry
    from distillbench.runner.plan import plan
    from distillbench.runner.sweep import run_sweep
    from distillbench.store.database import ResultStore

    registry = load_registry()
    cells = plan(CELLS, registry)
    s.call("prepare()", launcher.prepare)
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for which, used in (("local", None), (launcher.name, launcher)):
            with ResultStore(Path(tmp) / which / "results.sqlite") as store:
                s.call(f"running {len(cells.configs)} cells", lambda: run_sweep(cells, registry, store, launcher=used))
                results[which] = {r.run_id: (r.status, r.message, r.metrics.acc,
                                             store.load_artifact(r).support if r.artifact else None)
                                  for r in store.records()}
        _compare(s, results["local"], results[launcher.name])


def _compare(s: Subject, local: dict, launched: dict) -> None:
    if sorted(launched) != sorted(local):
        raise s.fail(f"ran {len(launched)} cells ({sorted(launched)}), expected {sorted(local)}")
    for run_id, (status, _, acc, support) in local.items():
        got_status, message, got_acc, got_support = launched[run_id]
        if got_status != status or got_acc != acc:
            why = f" ({message})" if message and got_status != status else ""
            raise s.fail(f"cell {run_id}: {got_status}{why} acc={got_acc}, in process {status} acc={acc}")
        for name in ("x", "y"):
            same = (support is None) == (got_support is None) and (support is None or np.array_equal(
                getattr(got_support, name), getattr(support, name)))
            if not same:
                raise s.fail(f"cell {run_id}: the distilled support's {name} differs from the in-process run's")
