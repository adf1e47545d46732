"""Execute one resolved run: the stages of :mod:`distillbench.runner.pipeline`, timed and guarded.

Timing is honest: ``compile_s`` is the AOT lowering+compilation of the step, ``first_step_s`` the
first execution, ``step_s`` the steady-state mean over the remaining steps measured to a
``block_until_ready``; evaluation and total wall time are reported apart.

Reproducible: the loop syncs with the device only at fixed step indices (every
:func:`check_interval` steps, and the last step). There, and only there, the loss is recorded in
``loss_history``, divergence is detected and the objective's ``stopped`` is asked, so the same
seed and config stop at the same step with the same support bits whatever the machine's speed.
Wall-clock time drives only the progress display (with the last synced loss) and the timeout.

Any exception becomes status ``error`` with its one-line message, naming the third-party component
and package it came from (``Registry.describe_failure``, told by the stage the exception left:
``pipeline.involved_in``), and its full traceback; a NaN/inf loss ``diverged``; passing ``timeout``
seconds ``timeout`` (checked between steps). Every run records the fingerprint of the data it
loaded (:func:`data_fingerprint`), failed runs included once the data is loaded.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Callable
from typing import Any

from distillbench.records import RunConfig, RunResult, Timings
from distillbench.registry import Registry
from distillbench.runner import memory
from distillbench.runner.pipeline import (
    DataCache,
    Loaded,
    Progress,
    build_components,
    check_interval,
    data_fingerprint,
    distill,
    enable_float64,
    eval_context,
    evaluate,
    involved_in,
    load_data,
    record,
    score_sets,
    train_data,
)
from distillbench.runner.reporter import Reporter

# re-exported: the sweep, cells, ``evaluate`` and the conformance suite import them from here
__all__ = ["DataCache", "check_interval", "data_fingerprint", "enable_float64", "eval_context", "execute", "guarded",
           "plain_failure", "score_sets"]


def execute(config: RunConfig, registry: Registry, *, reporter: Reporter | None = None, timeout: float | None = None,
            position: tuple[int, int] = (1, 1), datasets: DataCache | None = None) -> RunResult:
    """Run one cell: load -> build -> distill -> evaluate -> record. Never raises but on an interrupt.

    ``position``: (index, total) of the cell in its sweep, for the reporter; ``datasets``: the
    sweep's cache of the last dataset loaded.
    """
    progress = Progress(reporter or Reporter(), *position, timeout, time.perf_counter())
    return guarded(config, registry, datasets or DataCache(), lambda loaded: _stages(config, registry, loaded, progress))


def guarded(config: RunConfig, registry: Registry, datasets: DataCache,
            stages: Callable[[Loaded], RunResult]) -> RunResult:
    """The one way a job runs (a cell of ``run``, a scoring of ``evaluate``): load the config's data,
    run ``stages`` on it, time it all (``wall_s``, peak memory). Any failure becomes the result's
    ``error`` (:func:`failed`); only an interrupt propagates."""
    start, window = time.perf_counter(), memory.start()
    loaded = None
    try:
        enable_float64()
        loaded = load_data(config, registry, datasets)
        result = stages(loaded)
    except KeyboardInterrupt:
        raise
    except (Exception, SystemExit) as exc:  # one failing cell (or plugin) never stops a sweep
        result = failed(config, registry, exc, loaded)
    timings = {**result.timings.to_dict(), "wall_s": time.perf_counter() - start, **window.peak()}
    plain = result.message if result.status != "done" and result.plain is None else result.plain
    return dataclasses.replace(result, timings=Timings.from_dict(timings), plain=plain)


def _stages(config: RunConfig, registry: Registry, loaded: Loaded, progress: Progress) -> RunResult:
    built = build_components(config, registry, loaded.data)
    distilled = distill(config, built, train_data(loaded.data), progress)
    if distilled.status != "done":
        return record(config, loaded, distilled, None)
    return record(config, loaded, distilled, evaluate(config, registry, loaded.data, built, distilled))


def failed(config: RunConfig, registry: Registry, exc: BaseException, loaded: Loaded | None) -> RunResult:
    """Status ``error``: the one-line message naming the culprit, the plain line and the traceback.

    The data's fingerprint and loading time are kept when the data was loaded.
    """
    message = registry.describe_failure(exc, involved_in(exc))
    return RunResult(config, "error", message, timings=Timings.from_dict({"data_s": loaded.data_s} if loaded else {}),
                     data_fingerprint=loaded.fingerprint if loaded else None, traceback=traceback.format_exc(),
                     plain=plain_failure(message, exc))


def plain_failure(message: str, exc: BaseException) -> str:
    """``message`` with the exception's ``ValueError: `` prefix dropped (the class stays in the traceback)."""
    from distillbench.plugins import one_line

    text = str(exc).strip().splitlines()
    plain = text[0] if text else f"failed without a message ({type(exc).__name__})"
    return message.replace(one_line(exc), plain, 1)
