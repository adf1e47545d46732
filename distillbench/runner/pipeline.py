"""The stages of one run, each a function that returns a value: build, distill, evaluate, record.

The pieces are public so that the conformance suite (``distillbench.testing``) runs components
exactly as a run does: :func:`enable_float64`, :func:`train_data`, :func:`make_kernel`.

Blame: each stage runs inside :func:`running`, which names the components whose code runs there.
An exception leaving it carries those names (:func:`involved_in`), so ``Registry.describe_failure``
can name the failing third-party component without a list threaded through every call.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from typing import Any

from distillbench.registry import Registry

#: (kind, name) of the components whose code runs now; a tuple, replaced, never mutated.
#: ``None`` outside any :func:`running` stage.
_RUNNING: contextvars.ContextVar[tuple[tuple[str, str], ...] | None] = contextvars.ContextVar(
    "distillbench_running", default=None)
_BLAME_ATTR = "_distillbench_involved"


def enable_float64() -> None:
    """Runs compute in float64 where a component asks for it (KRR solves, exact kernels)."""
    import jax

    jax.config.update("jax_enable_x64", True)


def train_data(data) -> Any:
    """The ``TrainData`` a run hands ``Distiller.step``: device arrays, mean-centered one-hot ``y``."""
    import jax.numpy as jnp

    from distillbench.components.objectives import TrainData
    from distillbench.krr import centered_one_hot

    return TrainData(
        x=jnp.asarray(data.x_train),
        y=centered_one_hot(jnp.asarray(data.y_train), data.num_classes),
        labels=jnp.asarray(data.y_train, dtype=jnp.int32),
    )


def make_kernel(registry: Registry, name: str, params: Mapping[str, Any]):
    """Build kernel ``name`` with its defaults overridden by ``params`` (validated by its ``Param``s).

    Parameters the kernel does not declare are ignored (e.g. an ``arch`` handed to a kernel that has
    none). Inside a :func:`running` stage the kernel joins the components blamed for a failure.
    """
    now = _RUNNING.get()
    if now is not None and ("kernel", name) not in now:
        _RUNNING.set(now + (("kernel", name),))
    component = registry.get("kernel", name)
    resolved = component.default_params()
    for key, value in params.items():
        param = component.param(key)
        if param is not None:
            resolved[key] = param.validate(value, owner="kernel")
    return component.instantiate(resolved)


@contextlib.contextmanager
def running(*components: tuple[str, str]) -> Iterator[None]:
    """Run a stage with ``components`` ((kind, name) pairs) named as the code that runs in it.

    An exception leaving the stage is annotated with them (and any kernel :func:`make_kernel` built
    inside it), unless an inner stage already did.
    """
    token = _RUNNING.set(tuple(components))
    try:
        yield
    except BaseException as exc:
        if not hasattr(exc, _BLAME_ATTR):
            try:
                setattr(exc, _BLAME_ATTR, _RUNNING.get() or ())
            except AttributeError:
                pass  # an exception type without attributes: blamed on nothing
        raise
    finally:
        _RUNNING.reset(token)


def involved_in(exc: BaseException) -> tuple[tuple[str, str], ...]:
    """The (kind, name) components that ran when ``exc`` was raised (empty outside any stage)."""
    return getattr(exc, _BLAME_ATTR, ())
