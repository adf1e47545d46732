"""Kernel contract.

A kernel component's ``build(**params)`` returns a ``Kernel``. All functions are pure, jittable
and differentiable with respect to their image arguments, take NHWC images ``(n, H, W, C)`` and
compute in the dtype of those images.

``kernel_fn(x1, x2, key) -> (n1, n2)``
    The kernel matrix. Deterministic (exact) kernels ignore ``key``; random kernels
    (``random=True``, e.g. random-feature NNGP) draw their random networks from ``key``, so one
    key is one kernel sample and the same key gives the same kernel for every call.
    Implementations must keep memory bounded for any ``n1, n2`` (block the work).

``feature_fn(x, key) -> (n, F)`` (optional)
    For feature-map kernels: ``kernel_fn(x1, x2, key) == feature_fn(x1, key) @ feature_fn(x2, key).T``.
    Objectives use it to compute support and target features once per step (linear cost).

``arch``
    The architecture name the kernel belongs to (``fc1``, ``convnet3``...), or ``None``: a kernel
    built on an ``Architecture`` (``Param(component="architecture")``) reports its ``name``, and
    evaluators report it as what ran (``eval_arch``).

``learning`` (optional): a kernel whose networks learn (FRePo's pool of trained networks).
    Its state (network parameters, optimizer states, ages) is a pytree the objective carries and
    evolves, one ``update`` per distillation step on the current support; ``bind(state)`` is the
    kernel of the networks as they are now (a plain ``Kernel``, ``learning=None``). The kernel's own
    ``kernel_fn``/``feature_fn`` are those of freshly initialised networks (``init`` from ``key``).
    Objectives that cannot evolve a state refuse such a kernel (``Component.check``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class Learning(NamedTuple):
    """How the networks of a learning kernel evolve. All functions are pure and jittable.

    ``init(key, x, y) -> state``: the networks at step 0 (``x`` ``(m, H, W, C)`` and ``y`` ``(m, C)``:
    the support, for shapes and the readout's size).
    ``bind(state) -> Kernel``: the kernel of the networks in ``state`` (features and matrix).
    ``update(state, x, y, key) -> state``: one online training step of the networks on the support
    images ``x`` ``(m, H, W, C)`` and labels ``y`` ``(m, C)`` (FRePo: the current network of the pool
    takes one optimizer step, or is re-initialised when it is old, and the next one is chosen).
    ``fit(key, x, y, updates) -> state`` (optional): networks trained from initialisation on a
    fixed set for ``updates`` updates, as the method evaluates a finished set (FRePo's
    ``eval_on_proto_krr``: one fresh network, never reset). ``None``: ``init``, then ``updates`` x
    ``update`` (``fit``, the function below).
    ``network(state) -> Network`` (optional): the network whose kernel ``bind`` gives, for
    objectives that work on the network itself (RCIG linearises it). ``None``: the kernel offers
    no network.
    """

    init: Callable[[Any, Any, Any], Any]
    bind: Callable[[Any], "Kernel"]
    update: Callable[[Any, Any, Any, Any], Any]
    fit: Callable[[Any, Any, Any, int], Any] | None = None
    network: Callable[[Any], "Network"] | None = None


class Network(NamedTuple):
    """The current network of a learning kernel (``Learning.network``).

    ``apply(variables, x) -> (logits (n, C), features (n, F))`` in inference mode (running batch
    statistics), pure in ``variables`` (``{"params": ..., "batch_stats": ...}``), so that the kernel
    ``bind`` gives is ``features @ features.T``. ``age``: its optimizer steps since its
    initialisation (int32 scalar). ``optimizer``/``opt_state``: the optax transformation that trains
    its ``params`` and its state now (``None``: not offered); RCIG's reference keeps applying it, with
    zero gradients, while it solves its inner problem.
    """

    apply: Callable[[Any, Any], Any]
    variables: Any
    age: Any
    optimizer: Any = None
    opt_state: Any = None


def fit(learning: Learning, key, x, y, updates: int):
    """The state of ``learning``'s networks trained ``updates`` times on the fixed set ``(x, y)``."""
    if learning.fit is not None:
        return learning.fit(key, x, y, updates)
    import jax

    init_key, loop_key = jax.random.split(key)
    state = learning.init(init_key, x, y)
    return jax.lax.fori_loop(0, updates, lambda i, s: learning.update(s, x, y, jax.random.fold_in(loop_key, i)),
                             state)


class Kernel(NamedTuple):
    kernel_fn: Callable[[Any, Any, Any], Any]
    feature_fn: Callable[[Any, Any], Any] | None = None
    random: bool = False
    arch: str | None = None
    learning: Learning | None = None
