"""The loss contract (``distillbench.components.losses``), checked on small KRR-like predictions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from distillbench.components.losses import Loss
from distillbench.runner.pipeline import enable_float64
from distillbench.testing._base import build
from distillbench.testing.data import images
from distillbench.testing.kernels import array_result, rel_diff


def check_loss(loss: Any, params: Mapping[str, Any] | None = None, *, num_classes: int = 3) -> Loss:
    """Check a loss component (or a built ``Loss``); raise ``ConformanceError`` (``loss contract: ...``).

    With ``pred`` float64 ``(6, C)`` (KRR outputs are float64) and ``y`` float32 mean-centered
    one-hot ``(6, C)``, as objectives call it:

    * ``build`` returns a ``Loss`` (plugin API 2: no ``learning_rate``, the objective sets it);
    * ``init()`` is a pytree of floating arrays (``{}`` when nothing is learned);
    * ``apply(params, pred, y)`` is a finite scalar, deterministic, the same under ``jax.jit``,
      and lower for ``pred = y`` than for ``pred = -y``;
    * its gradients w.r.t. ``pred`` (not all zero) and ``params`` exist under ``jax.jit`` and are finite;
    * ``logits(params, pred)`` has the shape of ``pred`` and finite entries.

    Returns the built ``Loss``.
    """
    enable_float64()
    import jax
    import jax.numpy as jnp

    from distillbench.krr import centered_one_hot

    value, s = build(loss, "loss", params, Loss)
    for field in ("init", "apply", "logits"):
        if not callable(getattr(value, field)):
            raise s.fail(f"{field} must be callable")

    loss_params = s.call("init()", value.init)
    for path, leaf in jax.tree_util.tree_flatten_with_path(loss_params)[0]:
        where = "init()" + jax.tree_util.keystr(path)
        if not hasattr(leaf, "dtype") or not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise s.fail(f"{where} must be a floating array (loss parameters are learned by gradient), "
                         f"got {getattr(leaf, 'dtype', type(leaf).__name__)}")

    n, c = 6, num_classes
    y = centered_one_hot(jnp.arange(n) % c, c)  # float32, like TrainData.y
    pred = jnp.asarray(images(1, (n, c), seed=5)[0])  # float64, like krr_predict
    call = f"apply(params, pred {tuple(pred.shape)} float64, y {tuple(y.shape)} float32)"
    out = s.call(call, value.apply, loss_params, pred, y)
    v = array_result(s, call, out, (), None)
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise s.fail(f"{call} must be a floating scalar, got {out.dtype}")
    again = s.call(call, value.apply, loss_params, pred, y)
    if rel_diff(again, v) > 1e-12:
        raise s.fail(f"{call} must be deterministic")
    jitted = s.call("jax.jit(apply)(...)", jax.jit(value.apply), loss_params, pred, y)
    if rel_diff(jitted, v) > 1e-6:
        raise s.fail(f"apply must give the same value under jax.jit (relative difference {rel_diff(jitted, v):.2e})")
    good = float(s.call("apply(params, y, y)", value.apply, loss_params, y.astype(jnp.float64), y))
    bad = float(s.call("apply(params, -y, y)", value.apply, loss_params, -y.astype(jnp.float64), y))
    if not good < bad:
        raise s.fail(f"apply must be lower for predictions equal to the targets than for their negation "
                     f"(apply(params, y, y) = {good:.4g}, apply(params, -y, y) = {bad:.4g})")

    _check_gradients(s, value, loss_params, pred, y)
    logits = s.call(f"logits(params, pred {tuple(pred.shape)})", value.logits, loss_params, pred)
    array_result(s, f"logits(params, pred {tuple(pred.shape)})", logits, tuple(pred.shape), None)
    return value


def _check_gradients(s, value: Loss, loss_params, pred, y) -> None:
    """Finite gradients of ``apply`` in ``pred`` (not all zero) and in ``params``, under ``jax.jit``."""
    import jax

    g_params, g_pred = s.call("jax.jit(jax.grad(apply, argnums=(0, 1)))", jax.jit(jax.grad(value.apply, argnums=(0, 1))),
                              loss_params, pred, y)
    gp = array_result(s, "the gradient of apply w.r.t. pred", g_pred, tuple(pred.shape), None)
    if not np.any(gp):
        raise s.fail("the gradient of apply w.r.t. pred is identically zero: nothing could be learned")
    if jax.tree_util.tree_structure(g_params) != jax.tree_util.tree_structure(loss_params):
        raise s.fail("the gradient w.r.t. params must have the structure of init()")
    for path, leaf in jax.tree_util.tree_flatten_with_path(g_params)[0]:
        array_result(s, "the gradient of apply w.r.t. params" + jax.tree_util.keystr(path), leaf, None, None)
