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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class Kernel(NamedTuple):
    kernel_fn: Callable[[Any, Any, Any], Any]
    feature_fn: Callable[[Any, Any], Any] | None = None
    random: bool = False
    arch: str | None = None
