"""Kernel ridge regression, the computation every kernel method here shares (SPEC §1).

``f(X_T) = K_TS (K_SS + λI)^-1 y_S`` with the scale-invariant ridge ``λ = reg · tr(K_SS) / |S|``.
The solve runs in ``solve_dtype`` (float64 by default, as both reference implementations do);
the kernel matrices may come in float32. Requires ``jax_enable_x64`` for true float64
(the runner enables it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_factor, cho_solve

#: The ridge coefficient of a KRR evaluation when neither the evaluator nor the objective sets one.
DEFAULT_REG = 1e-6
#: The key stream of a KRR evaluation's random kernel (``fold_in(PRNGKey(seed), EVAL_STREAM)``): the
#: krr evaluator draws its kernel from it, and ``distillbench explain`` redraws the same one.
EVAL_STREAM = 0xE7A1


def centered_one_hot(labels, num_classes: int, dtype=jnp.float32):
    """Mean-centered one-hot labels: ``1 - 1/C`` for the class, ``-1/C`` elsewhere."""
    return jax.nn.one_hot(labels, num_classes, dtype=dtype) - jnp.asarray(1.0 / num_classes, dtype)


def ridge(k_ss, reg):
    """The scale-invariant regularizer ``reg · tr(K_SS) / |S|``."""
    return reg * jnp.trace(k_ss) / k_ss.shape[0]


def krr_fit(k_ss, y_s, reg, solve_dtype=jnp.float64, method: str = "cholesky"):
    """Return ``alpha = (K_SS + λI)^-1 y_S`` in ``solve_dtype``.

    ``method``: ``"cholesky"`` (KIP: positive-definite solve) or ``"lu"`` (RFAD reference).
    """
    k = k_ss.astype(solve_dtype)
    a = k + ridge(k, reg) * jnp.eye(k.shape[0], dtype=solve_dtype)
    y = y_s.astype(solve_dtype)
    if method == "cholesky":
        return _cholesky_solve(a, y)
    if method == "lu":
        return jnp.linalg.solve(a, y)
    raise ValueError(f"unknown solve method {method!r} (choose cholesky or lu)")


def _cholesky_solve(a, y):
    """``a⁻¹ y`` for a positive-definite ``a`` by its Cholesky factor, differentiated as a linear
    solve (``jax.scipy.linalg.solve(assume_a='pos')`` does the same): the gradient reuses the
    factor (one more ``cho_solve`` and an outer product) instead of differentiating the
    factorisation itself. Same values; KIP's step with it: ``benchmarks/breakdown_kip_step.py``."""
    factor = cho_factor(jax.lax.stop_gradient(a), lower=True)
    return jax.lax.custom_linear_solve(lambda v: jnp.matmul(a, v, precision=jax.lax.Precision.HIGHEST), y,
                                       solve=lambda _, v: cho_solve(factor, v), symmetric=True)


def krr_predict(k_ts, k_ss, y_s, reg, solve_dtype=jnp.float64, method: str = "cholesky"):
    """KRR predictions on targets, ``K_TS (K_SS + λI)^-1 y_S``, in ``solve_dtype``."""
    alpha = krr_fit(k_ss, y_s, reg, solve_dtype, method)
    return k_ts.astype(solve_dtype) @ alpha
