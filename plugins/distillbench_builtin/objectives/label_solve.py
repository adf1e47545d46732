"""LS, Label Solve (Nguyen, Chen, Lee, ICLR 2021, eq. 8; SPEC §3).

For fixed support images ``X_S`` (the class-balanced real subset ``balanced_subset``) the KIP loss
``½·mean((y_T − K_TS (K_SS + λI)^-1 y_S)²)`` is quadratic in ``y_S``. Writing ``A = K_SS + λI``
and ``z = A^-1 y_S``, its minimizers satisfy the normal equations ``K_ST K_TS z = K_ST y_T``, so

    y_S* = (K_SS + λI) · solve(K_ST K_TS + εI, K_ST y_T),

computed once (``num_steps = 1``) with **all** training images as targets. Choices made here:

* ``λ = reg · tr(K_SS)/|S|`` is the *same trace-scaled ridge the KIP loss uses* (the reference
  implementation uses an unscaled ``r/n``); with it, the gradient of the KIP loss w.r.t. the
  labels vanishes at ``y_S*`` (up to ε), which is what makes LS "the labels KIP would converge
  to" for these images.
* ``ε = solve_reg · tr(K_ST K_TS)/|S|`` is a tiny trace-scaled stabilizer of the normal equations
  (``K_ST K_TS`` squares the condition number of ``K_TS`` and is singular when |S| > |T|); with
  ``solve_reg = 0`` the system is solved as is. The solve is a float64 Cholesky.
* Random kernels: one kernel sample, from the step key.

The reported loss is the loss of the run (MSE for LS) at ``y_S*``. The state is a
``SupportParams`` (float32 images, float64 labels, ``loss.init()``).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.scipy.linalg import cho_factor, cho_solve

from distillbench.components.objectives import Distiller, Problem, Support, TrainData
from distillbench.krr import krr_predict, ridge
from distillbench_builtin.objectives.common import (
    SupportParams,
    initial_support,
    resolve_dtype,
    support_target_kernels,
)


def solve_labels(k_ss, k_ts, y_t, reg: float, solve_reg: float):
    """``(K_SS + λI) · solve(K_ST K_TS + εI, K_ST y_T)`` in float64 (see the module docstring)."""
    f64 = jnp.float64
    k = k_ss.astype(f64)
    m = k.shape[0]
    eye = jnp.eye(m, dtype=f64)
    a = k + ridge(k, reg) * eye
    kts = k_ts.astype(f64)
    gram = kts.T @ kts
    gram = gram + solve_reg * jnp.trace(gram) / m * eye
    z = cho_solve(cho_factor(gram, lower=True), kts.T @ y_t.astype(f64))
    return a @ z


def build_ls(reg: float = 1e-6, dtype: str = "float64", solve_reg: float = 1e-10):
    kernel_dtype = resolve_dtype(dtype)

    def make(problem: Problem) -> Distiller:
        loss = problem.loss

        def init(key) -> SupportParams:
            x, y = initial_support(problem, "real", key)
            return SupportParams(x=x, y=y.astype(jnp.float64), loss=loss.init())

        def step(state: SupportParams, train: TrainData, key):
            xs = state.x.astype(kernel_dtype)
            k_ss, k_ts = support_target_kernels(problem.kernel, xs, train.x.astype(kernel_dtype), key)
            y_star = solve_labels(k_ss, k_ts, train.y, reg, solve_reg)
            pred = krr_predict(k_ts, k_ss, y_star, reg, jnp.float64, "cholesky")
            value = loss.apply(state.loss, pred, train.y)
            return state._replace(y=y_star.astype(state.y.dtype)), value

        def support(state: SupportParams) -> Support:
            return Support(x=state.x, y=state.y, loss_params=state.loss)

        return Distiller(init=init, step=step, support=support, num_steps=1)

    return make
