"""Execute one resolved run: build components, distill, time, evaluate.

Timing is honest: ``compile_s`` is the AOT lowering+compilation of the step, ``first_step_s`` the
first execution, ``step_s`` the steady-state mean over the remaining steps measured to a
``block_until_ready``; evaluation and total wall time are reported apart.

Reproducible: the loop syncs with the device only at fixed step indices (every
:func:`check_interval` steps, and the last step). There, and only there, the loss is recorded in
``loss_history``, divergence is detected and the objective's ``stopped`` is asked, so the same
seed and config stop at the same step with the same support bits whatever the machine's speed.
Wall-clock time drives only the progress display (with the last synced loss) and the timeout.

Any exception becomes status ``error`` with its one-line message, naming the third-party component
and package it came from (``Registry.describe_failure``), and its full traceback; a NaN/inf loss
``diverged``; passing ``timeout`` seconds ``timeout`` (checked between steps). Every run records
the fingerprint of the data it loaded (:func:`data_fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
import math
import resource
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from distillbench.registry import Registry
from distillbench.runner.plan import RunConfig
from distillbench.runner.pipeline import enable_float64, make_kernel, train_data
from distillbench.runner.reporter import Reporter

__all__ = ["enable_float64"]  # re-exported: its callers import it from here

PROGRESS_INTERVAL_S = 0.25  # the progress display only
#: Loss history, divergence and early stopping: every ``max(MIN_CHECK_EVERY, ceil(steps / HISTORY_POINTS))``
#: steps. A sync stalls the dispatch queue once, so never every step.
MIN_CHECK_EVERY = 10
HISTORY_POINTS = 100


def check_interval(num_steps: int) -> int:
    """Steps between the loop's sync points: a function of the step count only."""
    return max(MIN_CHECK_EVERY, math.ceil(num_steps / HISTORY_POINTS))


def data_fingerprint(data) -> str:
    """A content hash of a ``DataSplit``: every array's dtype, shape and bytes, and the class count.

    blake2b runs at about 1 GB/s, so even CIFAR-10 costs well under a second.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(f"num_classes={int(data.num_classes)};".encode())
    for name in ("x_train", "y_train", "x_test", "y_test"):
        arr = np.ascontiguousarray(getattr(data, name))
        h.update(f"{name}:{arr.dtype.str}:{arr.shape};".encode())
        h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


class DataCache:
    """The last dataset a sweep loaded, with its fingerprint: cells of one dataset load it once."""

    def __init__(self):
        self._key: str | None = None
        self._value = None

    def load(self, config: RunConfig, build) -> tuple[Any, str, float]:
        """``(DataSplit, fingerprint, seconds spent loading)``; ``build()`` loads it (exceptions propagate)."""
        key = json.dumps(config.to_dict()["dataset"], sort_keys=True, default=str)
        if key != self._key:
            self._key, self._value = None, None  # free the previous split before loading the next
            t = time.perf_counter()
            data = build()
            fingerprint = data_fingerprint(data)
            self._key, self._value = key, (data, fingerprint, time.perf_counter() - t)
            return self._value
        data, fingerprint, _ = self._value
        return data, fingerprint, 0.0


@dataclass
class Outcome:
    """What one run produced; ``arrays`` go to the artifact file, the rest to the row."""

    config: RunConfig
    status: str = "done"
    message: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    cached: bool = False
    data_fingerprint: str | None = None
    traceback: str | None = None  # the full traceback of a failure
    plain: str | None = None  # the failure in one plain line (no exception class names), for stderr


def execute(config: RunConfig, registry: Registry, reporter: Reporter | None = None,
            timeout: float | None = None, index: int = 1, total: int = 1,
            datasets: DataCache | None = None) -> Outcome:
    reporter = reporter or Reporter()
    outcome = Outcome(config)
    start = time.perf_counter()
    involved: list[tuple[str, str]] = []  # (kind, name) of the components whose code runs now
    try:
        _distill_and_evaluate(config, registry, reporter, timeout, start, outcome, index, total, involved,
                              datasets or DataCache())
    except KeyboardInterrupt:
        raise
    except (Exception, SystemExit) as exc:  # one failing cell (or plugin) never stops a sweep
        outcome.status, outcome.message = "error", registry.describe_failure(exc, involved)
        outcome.plain = plain_failure(outcome.message, exc)
        outcome.traceback = traceback.format_exc()
    if outcome.status != "done" and outcome.plain is None:
        outcome.plain = outcome.message
    outcome.timings["wall_s"] = time.perf_counter() - start
    outcome.timings.update(_peak_memory())
    return outcome


def plain_failure(message: str, exc: BaseException) -> str:
    """``message`` with the exception's ``ValueError: `` prefix dropped (the class stays in the traceback)."""
    from distillbench.plugins import one_line

    text = str(exc).strip().splitlines()
    plain = text[0] if text else f"failed without a message ({type(exc).__name__})"
    return message.replace(one_line(exc), plain, 1)


def _distill_and_evaluate(config, registry, reporter, timeout, start, outcome, index, total, involved, datasets):
    enable_float64()
    import jax
    import jax.numpy as jnp

    from distillbench.components.datasets import check_datasplit
    from distillbench.components.objectives import Problem, Support
    from distillbench.krr import centered_one_hot
    from distillbench.sampling import balanced_subset

    def build(kind):
        choice = config.choice(kind)
        involved[:] = [(kind, choice.name)]
        return registry.instantiate(kind, choice.name, choice.as_dict())

    def running(*kinds):
        involved[:] = [(kind, config.choice(kind).name) for kind in kinds]

    data, outcome.data_fingerprint, outcome.timings["data_s"] = datasets.load(
        config, lambda: check_datasplit(build("dataset"), config.dataset.name))
    kernel, loss, evaluator = build("kernel"), build("loss"), build("evaluator")
    make = build("objective")
    running("objective", "kernel", "loss")
    distiller = make(Problem(data, config.ipc, kernel, loss, config.seed))

    num_classes = data.num_classes
    train = train_data(data)
    init_key, step_key = jax.random.split(jax.random.PRNGKey(config.seed))
    state = distiller.init(init_key)

    def one_step(state, train, key, i):
        return distiller.step(state, train, jax.random.fold_in(key, i))

    n = distiller.num_steps
    reporter.run_started(index, total, config.label(), n)
    history: list[tuple[int, float]] = []
    if n > 0:
        t = time.perf_counter()
        step = jax.jit(one_step).lower(state, train, step_key, np.int32(0)).compile()
        outcome.timings["compile_s"] = time.perf_counter() - t
        t = time.perf_counter()
        state, loss_value = step(state, train, step_key, np.int32(0))
        first = float(loss_value)  # blocks
        outcome.timings["first_step_s"] = time.perf_counter() - t
        history.append((1, first))
        reporter.run_progress(1, n, first, 0.0)
        if not math.isfinite(first):
            outcome.status, outcome.message = "diverged", f"loss became {first} at step 1"
        else:
            state = _steady_loop(step, state, train, step_key, n, start, timeout, reporter, history, outcome,
                                 distiller.stopped)
    if outcome.status != "done":
        outcome.metrics["steps_run"] = max((step for step, _ in history), default=0)
        outcome.arrays["loss_history"] = np.asarray(history, dtype=np.float64).reshape(-1, 2)
        return

    support = distiller.support(state)
    support = Support(np.asarray(support.x), np.asarray(support.y), jax.tree_util.tree_map(np.asarray, support.loss_params))
    running()
    baseline_idx = balanced_subset(data.y_train, config.ipc, num_classes, config.seed)
    baseline = Support(
        data.x_train[baseline_idx],
        np.asarray(centered_one_hot(jnp.asarray(data.y_train[baseline_idx]), num_classes)),
        loss.init(),
    )
    ctx = eval_context(registry, data, loss, kernel.arch, config.objective.as_dict(), config.seed, involved)
    running("evaluator", "loss")
    metrics, outcome.timings["eval_s"] = score_sets(evaluator, support, baseline, ctx)
    outcome.metrics.update(metrics)
    if history:
        outcome.metrics["loss_first"], outcome.metrics["loss_final"] = history[0][1], history[-1][1]
    outcome.metrics["steps_run"] = outcome.metrics.get("stopped_early_at", n)
    for name, value in _flat_loss_params(support.loss_params).items():
        outcome.metrics[f"loss_param_{name}"] = value
    outcome.arrays.update(
        support_x=support.x, support_y=support.y, baseline_x=baseline.x, baseline_y=baseline.y,
        loss_history=np.asarray(history, dtype=np.float64).reshape(-1, 2),
        **{f"loss_param_{k}": np.asarray(v) for k, v in _flat_loss_params(support.loss_params).items()},
    )


def eval_context(registry: Registry, data, loss, run_kernel_arch, objective_params, seed: int,
                 involved: list[tuple[str, str]]):
    """The ``EvalContext`` of a distilled set: shared by ``run`` and ``distillbench evaluate``."""
    from distillbench.components.evaluators import EvalContext

    return EvalContext(
        data=data,
        loss=loss,
        run_kernel_arch=run_kernel_arch,
        objective_params=objective_params,
        make_kernel=lambda name, **params: _make_kernel(registry, name, params, involved),
        seed=seed,
    )


def score_sets(evaluator, support, baseline, ctx) -> tuple[dict[str, Any], float]:
    """Score the distilled set and its random baseline with one evaluator: ``(metrics, eval_s)``.

    The one scoring path of ``run`` and ``distillbench evaluate``, so a set re-scored later gets
    the numbers it would have got in its run.
    """
    t = time.perf_counter()
    distilled = evaluator.evaluate(support, ctx)
    random = evaluator.evaluate(baseline, ctx)
    eval_s = time.perf_counter() - t
    # numbers are metrics; text values say what ran (eval_kernel, eval_arch), the same for both sets
    metrics = {k: v if v is None or isinstance(v, str) else float(v) for k, v in distilled.items()}
    metrics.update({f"random_{k}": float(v) for k, v in random.items() if not (v is None or isinstance(v, str))})
    if "acc" in distilled and "acc" in random:
        metrics["gain"] = float(distilled["acc"]) - float(random["acc"])
    return metrics, eval_s


def _steady_loop(step, state, train, step_key, n, start, timeout, reporter, history, outcome, stopped=None):
    """Steps 2..n; records progress, divergence and timeout in ``outcome``; returns the state.

    Syncs (loss history, divergence, ``stopped``) happen at steps that are multiples of
    :func:`check_interval` and at the last step, never at wall-clock points.
    """
    every = check_interval(n)
    t_steady = time.perf_counter()
    last_report = t_steady
    last_value = history[-1][1] if history else float("nan")
    done = 1
    loss_value = None
    for i in range(1, n):
        state, loss_value = step(state, train, step_key, np.int32(i))
        done = i + 1
        last = done == n
        if last or done % every == 0:
            last_value = float(loss_value)  # blocks: the loop's sync points, at fixed step indices
            history.append((done, last_value))
            if not math.isfinite(last_value):
                outcome.status, outcome.message = "diverged", f"loss became {last_value} by step {done}"
                break
            if stopped is not None and not last and bool(stopped(state)):
                outcome.metrics["stopped_early_at"] = done
                break
        now = time.perf_counter()
        if last or now - last_report >= PROGRESS_INTERVAL_S:  # display only: the last synced loss
            reporter.run_progress(done, n, last_value, (done - 1) / max(now - t_steady, 1e-12))
            last_report = now
        if timeout is not None and now - start > timeout and not last:
            if history[-1][0] != done:
                history.append((done, float(loss_value)))  # blocks
            outcome.status = "timeout"
            outcome.message = f"stopped after {done} of {n} steps: timeout={timeout:g}s exceeded"
            break
    jax_block(loss_value)
    steady = time.perf_counter() - t_steady
    if done > 1:
        outcome.timings["step_s"] = steady / (done - 1)
        outcome.timings["steps_per_s"] = (done - 1) / steady if steady > 0 else None
    outcome.timings["distill_s"] = steady + outcome.timings.get("first_step_s", 0.0)
    return state


def jax_block(value):
    if value is not None:
        value.block_until_ready()


def _make_kernel(registry: Registry, name: str, params: dict[str, Any], involved: list[tuple[str, str]]):
    if ("kernel", name) not in involved:
        involved.append(("kernel", name))
    return make_kernel(registry, name, params)


def _flat_loss_params(params) -> dict[str, float]:
    out = {}
    if isinstance(params, dict):
        for key, value in params.items():
            arr = np.asarray(value)
            if arr.size == 1:
                out[key] = float(arr.reshape(()))
    return out


def _peak_memory() -> dict[str, Any]:
    """Process peak RSS (Linux reports KiB) and, where the backend tracks it, device peak bytes."""
    out: dict[str, Any] = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    try:
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            out["device_peak_mb"] = stats["peak_bytes_in_use"] / 2**20
    except Exception:
        pass
    return out
