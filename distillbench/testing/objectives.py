"""The objective and evaluator contracts, checked by running them on tiny synthetic data.

They run with real kernels and losses (the objective's preferred ones by default, built-ins
otherwise), exactly as the runner calls them: ``init`` once, ``step`` compiled once ahead of time
and called with a fresh key each step, then ``support``; the evaluator on the distilled set. The
float64 setup, the ``TrainData`` and the evaluation context are the runner's own
(``distillbench.runner.pipeline``), not copies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from distillbench.components.datasets import DataSplit
from distillbench.components.evaluators import Evaluator
from distillbench.components.kernels import Kernel
from distillbench.components.losses import Loss
from distillbench.components.objectives import Distiller, Problem, Support
from distillbench.runner.pipeline import enable_float64, eval_context, train_data
from distillbench.testing._base import Subject, build, builder_params, registry, resolve, resolve_params
from distillbench.testing.data import tiny_datasplit
from distillbench.testing.kernels import array_result, rel_diff


def _part(value: Any, kind: str, value_type: type, params: Mapping[str, Any] | None = None) -> Any:
    """A kernel/loss to combine with: a built value, or a component/name built with ``params``."""
    if isinstance(value, value_type):
        return value
    component = resolve(value, kind)
    return component.instantiate(builder_params(component, resolve_params(component, params)))


def _leaves(tree) -> list[tuple[str, Any]]:
    import jax

    return [(jax.tree_util.keystr(path), leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _signature(tree) -> tuple:
    import jax

    return (jax.tree_util.tree_structure(tree),
            tuple((np.dtype(leaf.dtype).name, tuple(leaf.shape)) for _, leaf in _leaves(tree)))


def _distill(s: Subject, make, problem: Problem, steps: int):
    import jax

    distiller = s.call("make(problem)", make, problem)
    if not isinstance(distiller, Distiller):
        raise s.fail(f"make(problem) must return distillbench.components.objectives.Distiller, "
                     f"got {type(distiller).__name__}")
    for field in ("init", "step", "support"):
        if not callable(getattr(distiller, field)):
            raise s.fail(f"Distiller.{field} must be callable")
    n = distiller.num_steps
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise s.fail(f"Distiller.num_steps must be an int >= 0, got {n!r}")
    train = train_data(problem.data)
    init_key, step_key = jax.random.split(jax.random.PRNGKey(problem.seed))
    state = s.call("init(key)", distiller.init, init_key)
    for where, leaf in _leaves(state):
        if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
            raise s.fail(f"the state must be a pytree of arrays: state{where} is {type(leaf).__name__}")

    def one_step(state, train, key, i):
        return distiller.step(state, train, jax.random.fold_in(key, i))

    losses = []
    if n > 0:
        shapes = s.call("jax.eval_shape(step, state, train, key)", jax.eval_shape, one_step, state, train,
                        step_key, np.int32(0))
        if not isinstance(shapes, tuple) or len(shapes) != 2:
            raise s.fail(f"step must return (state, loss), got {type(shapes).__name__}")
        if _signature(shapes[0]) != _signature(state):
            raise s.fail(f"step must return a state with the structure, shapes and dtypes it was given "
                         f"(the runner compiles step once): {_first_difference(state, shapes[0])}")
        if not hasattr(shapes[1], "shape") or tuple(shapes[1].shape) != ():
            raise s.fail(f"step must return a scalar loss, got shape {getattr(shapes[1], 'shape', None)}")
        compiled = s.call("jax.jit(step).lower(state, train, key).compile()",
                          lambda: jax.jit(one_step).lower(state, train, step_key, np.int32(0)).compile())
        for i in range(min(int(n), steps)):
            state, loss = s.call(f"step {i + 1} (compiled)", compiled, state, train, step_key, np.int32(i))
            array_result(s, f"the loss returned by step {i + 1}", loss, (), None)
            losses.append(float(loss))
    support = s.call("support(state)", distiller.support, state)
    return support, losses


def _first_difference(old, new) -> str:
    import jax

    if jax.tree_util.tree_structure(old) != jax.tree_util.tree_structure(new):
        return f"structure {jax.tree_util.tree_structure(old)} became {jax.tree_util.tree_structure(new)}"
    for (where, a), (_, b) in zip(_leaves(old), _leaves(new)):
        if (np.dtype(a.dtype), tuple(a.shape)) != (np.dtype(b.dtype), tuple(b.shape)):
            return (f"state{where} was {np.dtype(a.dtype).name} {tuple(a.shape)}, "
                    f"became {np.dtype(b.dtype).name} {tuple(b.shape)}")
    return "unknown difference"


def check_objective(objective: Any, params: Mapping[str, Any] | None = None, *, kernel: Any = None,
                    loss: Any = None, kernel_params: Mapping[str, Any] | None = None,
                    loss_params: Mapping[str, Any] | None = None, data: DataSplit | None = None,
                    ipc: int = 2, steps: int = 2, seed: int = 0) -> Support:
    """Check an objective; raise ``ConformanceError`` (``objective contract: ...``).

    ``kernel``/``loss``: what to combine it with (a built ``Kernel``/``Loss``, a component or a
    registered name); by default the objective's ``defaults``, else ``ntk`` and ``mse``.
    ``data``: default ``tiny_datasplit()`` (3 classes, 6 images each, 8x8x1). Checks:

    * ``build`` returns ``make``; ``make(problem)`` returns a ``Distiller`` with ``num_steps >= 0``;
    * ``init(key)`` is a pytree of arrays; ``step`` compiles ahead of time with ``jax.jit`` and
      returns ``(state, loss)`` with the state's structure, shapes and dtypes unchanged and a
      finite scalar loss (``min(num_steps, steps)`` steps are run);
    * ``support(state)`` is a ``Support``: ``x (ipc*C, H, W, C)`` and ``y (ipc*C, C)``, floating and
      finite, and ``loss_params`` shaped like ``loss.init()``;
    * two runs with the same seed give the same support set.

    Returns the ``Support`` of the first run.
    """
    enable_float64()
    component = None if callable(objective) else resolve(objective, "objective")
    make, s = build(component or objective, "objective", params, None)
    if not callable(make):
        raise s.fail(f"build(**params) must return a function make(problem) -> Distiller, got {type(make).__name__}")
    preferred = dict(component.defaults) if component is not None else {}
    kernel_value = _part(kernel if kernel is not None else preferred.get("kernel", "ntk"), "kernel", Kernel, kernel_params)
    loss_value = _part(loss if loss is not None else preferred.get("loss", "mse"), "loss", Loss, loss_params)
    data = data if data is not None else tiny_datasplit()
    problem = Problem(data, ipc, kernel_value, loss_value, seed)

    support, _ = _distill(s, make, problem, steps)
    m, c = ipc * data.num_classes, data.num_classes
    if not isinstance(support, Support):
        raise s.fail(f"support(state) must return distillbench.components.objectives.Support, "
                     f"got {type(support).__name__}")
    x = array_result(s, "support(state).x", support.x, (m, *data.image_shape), None)
    y = array_result(s, "support(state).y", support.y, (m, c), None)
    for name, arr in (("x", x), ("y", y)):
        if not np.issubdtype(arr.dtype, np.floating):
            raise s.fail(f"support(state).{name} must be floating, got {arr.dtype}")
    import jax

    if jax.tree_util.tree_structure(support.loss_params) != jax.tree_util.tree_structure(loss_value.init()):
        raise s.fail("support(state).loss_params must have the structure of loss.init()")

    again, _ = _distill(s, make, problem, steps)
    gap = max(rel_diff(again.x, x), rel_diff(again.y, y))
    if gap > 1e-6:
        raise s.fail(f"two runs with the same seed must give the same support set (relative difference {gap:.2e})")
    return support


def check_evaluator(evaluator: Any, params: Mapping[str, Any] | None = None, *, loss: Any = "mse",
                    data: DataSplit | None = None, ipc: int = 2, seed: int = 0,
                    run_kernel_arch: str | None = None,
                    objective_params: Mapping[str, Any] | None = None,
                    ridge: float | None = 1e-6) -> dict[str, float]:
    """Check an evaluator; raise ``ConformanceError`` (``evaluator contract: ...``).

    Scores a class-balanced real subset (``distillbench.sampling.balanced_subset``) and a noise
    support set of ``ipc`` images per class, as the runner does (numpy arrays, centered one-hot
    labels, ``loss.init()`` parameters). Checks: ``build`` returns an ``Evaluator``; ``evaluate``
    returns a mapping of metric names to finite floats with ``acc`` in [0, 1]; the same support
    scores the same twice. Returns the metrics of the real subset. ``run_kernel_arch``: the run
    kernel's architecture, what an ``arch="auto"`` reference stands for (else its ``auto=`` fallback).
    ``objective_params`` and ``ridge``: the run objective's parameters and declared ridge the
    context carries (``EvalContext``).
    """
    enable_float64()
    import jax.numpy as jnp

    from distillbench.krr import centered_one_hot
    from distillbench.sampling import balanced_subset

    run_references = {"architecture": run_kernel_arch} if run_kernel_arch else None
    value, s = build(evaluator, "evaluator", params, Evaluator, run_references=run_references)
    if not callable(value.evaluate):
        raise s.fail("evaluate must be callable")
    loss_value = _part(loss, "loss", Loss)
    data = data if data is not None else tiny_datasplit()
    ctx = eval_context(registry(), data, loss_value, run_kernel_arch, None, seed)._replace(
        objective_params=dict(objective_params or {}), ridge=ridge)
    idx = balanced_subset(data.y_train, ipc, data.num_classes, seed)
    labels = np.asarray(centered_one_hot(jnp.asarray(data.y_train[idx]), data.num_classes))
    real = Support(data.x_train[idx], labels, loss_value.init())
    rng = np.random.default_rng(seed)
    noise = Support(rng.standard_normal(real.x.shape).astype(np.float32), labels, loss_value.init())
    results = []
    for name, support in (("the real subset", real), ("the real subset again", real), ("a noise support set", noise)):
        metrics = s.call(f"evaluate(support, ctx) on {name}", value.evaluate, support, ctx)
        results.append(_metrics(s, metrics, name))
    if results[0] != results[1]:
        raise s.fail(f"evaluate must be deterministic: the same support scored {results[0]} then {results[1]}")
    return results[0]


def _metrics(s: Subject, metrics: Any, name: str) -> dict[str, float]:
    if not isinstance(metrics, Mapping):
        raise s.fail(f"evaluate(support, ctx) must return a mapping of metrics, got {type(metrics).__name__}")
    out = {}
    for key, v in metrics.items():
        if isinstance(key, str) and (v is None or isinstance(v, str)):
            out[key] = v  # text says what ran (eval_kernel, eval_arch; None: no arch): the evaluator contract
            continue
        try:
            out[key] = float(v)
        except (TypeError, ValueError):
            raise s.fail(f"metric {key!r} must be a float, got {type(v).__name__}") from None
        if not isinstance(key, str) or not np.isfinite(out[key]):
            raise s.fail(f"metric {key!r} on {name} must be a finite float named by a str, got {v!r}")
    if "acc" not in out:
        raise s.fail(f"evaluate(support, ctx) must report 'acc' (test accuracy in [0, 1]); got {sorted(out)}")
    if not 0.0 <= out["acc"] <= 1.0:
        raise s.fail(f"metric 'acc' must be in [0, 1], got {out['acc']}")
    return out
