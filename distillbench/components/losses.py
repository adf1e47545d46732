"""Loss contract.

A loss component's ``build(**params)`` returns a ``Loss``, the loss of KRR predictions on a target
batch. It may have its own learnable parameters (Platt scaling's temperature). How fast they learn
is an optimizer setting, so it belongs to the objective that optimizes them jointly with the support
set (the built-in ``kip`` and ``rfad``: ``objective.loss_lr``), not to the loss.

``init() -> params``          a pytree of float arrays (``{}`` when there is nothing to learn).
``apply(params, pred, y) -> scalar``
    ``pred``: KRR outputs ``(n, C)``; ``y``: mean-centered one-hot targets ``(n, C)``
    (``1 - 1/C`` for the true class, ``-1/C`` elsewhere). Pure, jittable, differentiable in
    ``params`` and ``pred``.
``logits(params, pred) -> (n, C)``
    Class scores used for probabilities/accuracy (identity for MSE; scaled logits for Platt).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class Loss(NamedTuple):
    init: Callable[[], Any]
    apply: Callable[[Any, Any, Any], Any]
    logits: Callable[[Any, Any], Any]

