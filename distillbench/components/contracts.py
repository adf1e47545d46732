"""Cheap checks of what a component's ``build`` returned, made before a run spends any compute.

``Registry.instantiate`` passes every built value through ``checked``. A value of the wrong type,
a missing or non-callable field, or a third-party kernel that returns the wrong shape then fails
with ``ContractError`` naming the component and its package, before the first distillation step
rather than after the whole distillation (a loss without ``logits`` would otherwise fail only at
evaluation). The checks never change a number: they look at types and shapes, probe third-party
losses with ``jax.eval_shape`` (abstract, nothing runs), and wrap third-party kernel functions
with a shape check that runs when they are traced, on the run's own shapes.

The full contracts, values included, are checked by ``distillbench.testing`` (the conformance
suite plugin authors run).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from typing import Any

from distillbench.errors import ContractError


def checked(kind: str, value: Any, label: str, third_party: bool) -> Any:
    """``value`` once it is known to meet ``kind``'s contract (possibly wrapped); else ``ContractError``.

    ``label`` names the component and its package (``loss 'x' (pkg 0.1)``). ``third_party``
    enables the probes and shape guards that built-in components, tested by the suite, skip.
    """
    return _CHECKS[kind](value, label, third_party)


def _fail(label: str, message: str) -> ContractError:
    return ContractError(f"{label}: {message}")


def _type(value: Any, expected: type, label: str) -> None:
    if not isinstance(value, expected):
        raise _fail(label, f"build must return {expected.__module__}.{expected.__name__}, got "
                           f"{type(value).__name__}")


def _callable(label: str, owner: Any, *fields: str, optional: tuple[str, ...] = ()) -> None:
    for name in (*fields, *optional):
        fn = getattr(owner, name)
        if fn is None and name in optional:
            continue
        if not callable(fn):
            kind = type(owner).__name__
            wanted = "None or a function" if name in optional else "a function"
            raise _fail(label, f"{kind}.{name} must be {wanted}, got {type(fn).__name__}")


def _dataset(value: Any, label: str, third_party: bool) -> Any:
    from distillbench.components.datasets import check_datasplit

    try:
        return check_datasplit(value, label)
    except ValueError as exc:
        raise ContractError(str(exc)) from None


def check_described(split: Any, info: Any, label: str) -> None:
    """The built split holds what the dataset's ``describe`` promised the planner, or ``ContractError``.

    The planner trusted ``describe`` to refuse a too-large ``ipc``; a split that differs would make
    that check, and the run, silently wrong.
    """
    import numpy as np

    got = {"num_classes": split.num_classes,
           "train_class_counts": tuple(int(n) for n in np.bincount(split.y_train, minlength=split.num_classes)),
           "image_shape": tuple(split.x_train.shape[1:]), "n_test": len(split.y_test)}
    for field, value in got.items():
        promised = getattr(info, field)
        if promised is not None and tuple(np.atleast_1d(promised).tolist()) != tuple(np.atleast_1d(value).tolist()):
            raise _fail(label, f"build returned a split with {field}={value}, but describe() promised {promised}")


def _kernel(value: Any, label: str, third_party: bool) -> Any:
    from distillbench.components.kernels import Kernel

    _type(value, Kernel, label)
    _callable(label, value, "kernel_fn", optional=("feature_fn",))
    if not isinstance(value.random, bool):
        raise _fail(label, f"Kernel.random must be a bool, got {type(value.random).__name__}")
    if value.arch is not None and not isinstance(value.arch, str):
        raise _fail(label, f"Kernel.arch must be None or a str, got {type(value.arch).__name__}")
    if value.learning is not None:
        from distillbench.components.kernels import Learning

        if not isinstance(value.learning, Learning):
            raise _fail(label, f"Kernel.learning must be None or distillbench.components.kernels.Learning, "
                               f"got {type(value.learning).__name__}")
        _callable(label, value.learning, "init", "bind", "update")
    if not third_party:
        return value
    feature_fn = value.feature_fn and _guard_features(value.feature_fn, label)
    return value._replace(kernel_fn=_guard_kernel(value.kernel_fn, label), feature_fn=feature_fn)


def _shape(out: Any) -> tuple[int, ...] | None:
    shape = getattr(out, "shape", None)
    return tuple(shape) if shape is not None else None


def _described(out: Any) -> str:
    return f"shape {_shape(out)}" if _shape(out) is not None else type(out).__name__


def _guard_kernel(fn: Callable, label: str) -> Callable:
    """``fn`` that fails naming the component when its matrix is not ``(len(x1), len(x2))``.

    Shapes are static, so under ``jit`` the check costs nothing after tracing.
    """

    def kernel_fn(x1, x2, key):
        out = fn(x1, x2, key)
        want = (x1.shape[0], x2.shape[0])
        if _shape(out) != want:
            got = f"shape {_shape(out)}" if _shape(out) is not None else type(out).__name__
            raise _fail(label, f"kernel_fn(x1 {tuple(x1.shape)}, x2 {tuple(x2.shape)}, key) returned {got}; "
                               f"the kernel contract requires shape {want}")
        return out

    return kernel_fn


def _guard_features(fn: Callable, label: str) -> Callable:
    def feature_fn(x, key):
        out = fn(x, key)
        shape = _shape(out)
        if shape is None or len(shape) != 2 or shape[0] != x.shape[0]:
            got = f"shape {shape}" if shape is not None else type(out).__name__
            raise _fail(label, f"feature_fn(x {tuple(x.shape)}, key) returned {got}; "
                               f"the kernel contract requires shape ({x.shape[0]}, F)")
        return out

    return feature_fn


def _loss(value: Any, label: str, third_party: bool) -> Any:
    from distillbench.components.losses import Loss

    _type(value, Loss, label)
    _callable(label, value, "init", "apply", "logits")
    if third_party:
        _probe_loss(value, label)
    return value


def _probe_loss(loss: Any, label: str) -> None:
    """``init``, ``logits`` and ``apply`` on a 2-example, 3-class batch, abstractly (nothing runs)."""
    import jax
    import jax.numpy as jnp

    pred = jax.ShapeDtypeStruct((2, 3), jnp.float64)

    def call(what: str, fn: Callable, *args: Any) -> Any:
        try:
            return fn(*args)
        except ContractError:
            raise
        except Exception as exc:
            text = (str(exc).strip().splitlines() or [""])[0]
            raise _fail(label, f"{what} raised {type(exc).__name__}: {text}") from None

    params = call("init()", loss.init)
    logits = call("logits(params, pred (2, 3))", jax.eval_shape, loss.logits, params, pred)
    if _shape(logits) != (2, 3):
        raise _fail(label, f"logits(params, pred (2, 3)) returned {_described(logits)}; "
                           "the loss contract requires shape (2, 3)")
    value = call("apply(params, pred (2, 3), y (2, 3))", jax.eval_shape, loss.apply, params, pred, pred)
    if _shape(value) != ():
        raise _fail(label, f"apply(params, pred (2, 3), y (2, 3)) returned {_described(value)}; "
                           "the loss contract requires a scalar")


def _objective(value: Any, label: str, third_party: bool) -> Any:
    if not callable(value):
        raise _fail(label, f"build must return a function make(problem) -> Distiller, got {type(value).__name__}")

    def make(problem):
        from distillbench.components.objectives import Distiller

        distiller = value(problem)
        if not isinstance(distiller, Distiller):
            raise _fail(label, f"make(problem) must return distillbench.components.objectives.Distiller, got "
                               f"{type(distiller).__name__}")
        _callable(label, distiller, "init", "step", "support", optional=("stopped",))
        steps = distiller.num_steps
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
            raise _fail(label, f"Distiller.num_steps must be an int >= 0, got {steps!r}")
        _settings(label, distiller.settings)
        return distiller

    return make


def _settings(label: str, settings: Any) -> None:
    """``Distiller.settings``: ``None`` or ``{name: number | text | bool | None}`` (stored as metrics)."""
    if settings is None:
        return
    if not isinstance(settings, Mapping):
        raise _fail(label, f"Distiller.settings must be a mapping or None, got {type(settings).__name__}")
    for key, value in settings.items():
        if not isinstance(key, str) or not (value is None or isinstance(value, (str, numbers.Number))):
            raise _fail(label, f"Distiller.settings[{key!r}] must be a number, text, bool or None, "
                               f"got {type(value).__name__}")


def _evaluator(value: Any, label: str, third_party: bool) -> Any:
    from distillbench.components.evaluators import Evaluator

    _type(value, Evaluator, label)
    _callable(label, value, "evaluate")
    return value


def _architecture(value: Any, label: str, third_party: bool) -> Any:
    from distillbench.components.architectures import Architecture

    _type(value, Architecture, label)
    _callable(label, value, "trunk", optional=("stax", "check_image_shape", "trunk_features", "pixel_pairs",
                                               "fast_exact", "trunk_apply", "network"))
    return value


def _launcher(value: Any, label: str, third_party: bool) -> Any:
    from distillbench.launchers import Launcher

    _type(value, Launcher, label)  # an instance: a class returned by build fails here, not at prepare()
    _callable(label, value, "prepare", "run", "describe")
    return value


_CHECKS = {"architecture": _architecture, "dataset": _dataset, "kernel": _kernel, "loss": _loss, "objective": _objective,
           "evaluator": _evaluator, "launcher": _launcher}
