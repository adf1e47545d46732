"""The ReLU update of an infinite-width network's (K, Θ), with analytic derivatives.

With ``c = K/sqrt(v_x(p) v_y(q))`` (the cosine of the angle ``θ`` between two pre-activations,
``v`` their variances)::

    G = (π − θ)/(2π) = 1/4 + asin(c)/(2π)           (E[relu'(u) relu'(u')])
    K ← sqrt(v_x v_y)·sqrt(1 − c²)/(2π) + G·K       (E[relu(u) relu(u')], arc-cosine kernel)
    Θ ← G·Θ

``asin`` is a polynomial (coefficients fitted once, see ``_ASIN``) so the whole update is
multiply-add, ``sqrt`` and select, which XLA vectorises (``jnp.arctan2`` is a scalar libm call on
CPU, ~20 ns per entry). The derivatives are given analytically (``jax.custom_jvp``):
``∂K'/∂K = G``, ``∂K'/∂v_x = s/(4π v_x)`` and ``∂G/∂K = 1/(2π s)``, ``∂G/∂v_x = −K/(4π v_x s)``
with ``s = sqrt(v_x v_y − K²)``; where ``s = 0`` (identical directions) ``∂G`` is 0, as in
neural-tangents. Used on (B, N, N) position-position covariances (conv layers without pooling,
``relu_fn``) and on (n1, n2) matrices (fc layers, ``relu_fc_fn``); the pooled layers build on
``relu_parts`` (``fast_relu_pool``, ``fast_first_layer``).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from distillbench_builtin.kernels.blocking import materialize

_PI = math.pi


# asin(x) = x·(1 + z·Q(z)), z = x², on 0 <= x <= 1/2, coefficients of (1, Q) in increasing powers.
# Least-squares Chebyshev fits of (asin(x)/x − 1)/z in float64 (numpy), degree 4 for float32
# (max error 6e-8 ~ float32 rounding) and 10 for float64 (max error 3e-15);
# tests/test_fast_kernels.py re-checks both against numpy's arcsin. |x| > 1/2 uses
# asin(x) = π/2 − 2·asin(sqrt((1 − x)/2)).
_ASIN = {
    4: (1.0, 0.16666672758679127, 0.07498809405636127, 0.045010680081498534,
        0.026494313308391616, 0.0382065115949783),
    8: (1.0, 0.16666666666624297, 0.07500000012068775, 0.04464284696541512, 0.0303823369017449,
        0.02236389129333241, 0.017456421503609754, 0.013163569388143115, 0.01534951251933611,
        -0.0006171764684551326, 0.021717621345261083, 0.006137103043882408),
}


def asin(c):
    """arcsin on [-1, 1] with multiply-add, one sqrt and selects (vectorisable), in c's dtype."""
    # Written so that the sqrt's value is used exactly once: XLA's CPU fusion then keeps the
    # whole ReLU update in one loop instead of storing the sqrt in a temporary array.
    coef = _ASIN[8 if c.dtype == jnp.float64 else 4]
    ac = jnp.abs(c)
    big = ac > 0.5
    z = jnp.where(big, (1 - ac) * 0.5, ac * ac)  # x² without the sqrt
    r = coef[-1]
    for a in coef[-2::-1]:
        r = r * z + a
    y = jnp.where(big, jnp.sqrt(z), ac) * r  # asin(x)
    one = jnp.ones((), c.dtype)
    scale = jnp.where(big, -2 * one, one) * jnp.where(c < 0, -one, one)
    offset = jnp.where(big, _PI / 2 * one, 0 * one) * jnp.where(c < 0, -one, one)
    return offset + scale * y


def _cosine(k, q1, q2, diag=None):
    """cos θ = k·q1·q2 (q = 1/sqrt(v)), clipped to [-1, 1]; snapped to ±1 within rounding of it
    (then sqrt(1 − c²) is exactly 0, as for identical directions), and to 1 where ``diag``."""
    eps = float(jnp.finfo(k.dtype).eps)
    c = jnp.clip(k * q1 * q2, -1, 1)
    c = jnp.where(jnp.abs(c) >= 1 - 4 * eps, jnp.sign(c), c)
    if diag is not None:
        c = jnp.where(diag, jnp.ones((), c.dtype), c)
    return c


def inv_sqrt(v):
    ok = v > 0
    return jnp.where(ok, jax.lax.rsqrt(jnp.where(ok, v, 1)), 0)


def relu_parts(k, q1, q2, sv1, sv2, diag):
    """(G, s) of the ReLU update: q = 1/sqrt(v), sv = sqrt(v) (broadcastable to k)."""
    c = _cosine(k, q1, q2, diag)
    g = (_PI / 2 + asin(c)) * (1 / (2 * _PI))
    s = sv1 * sv2 * jnp.sqrt(jnp.maximum(1 - c * c, 0))
    return g, s


def safe_ratio(num, den):
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1), 0)


def _relu_tangents(k, t, v1, v2, dk, dt, dv1, dv2, diag, want_ntk: bool):
    """Tangents of K' = s/(2π) + G·K and Θ' = G·Θ (analytic; finite where s = 0).

    ``t``/``dt``: the NTK Θ before the ReLU and its tangent (unused unless ``want_ntk``).
    """
    g, s = relu_parts(k, inv_sqrt(v1), inv_sqrt(v2), jnp.sqrt(v1), jnp.sqrt(v2), diag)
    u = safe_ratio(dv1, v1) + safe_ratio(dv2, v2)
    dkp = g * dk + s * u * (1 / (4 * _PI))
    if not want_ntk:
        return dkp, None
    dg = (dk - 0.5 * k * u) * safe_ratio(jnp.ones((), s.dtype), s) * (1 / (2 * _PI))
    return dkp, g * dt + t * dg


def _with_jvp(core, tangents):
    """``core`` with its derivative given by ``tangents(primals, tangent_inputs)`` (analytic)."""
    fn = jax.custom_jvp(core)
    fn.defjvp(lambda primals, dots: (core(*primals), tangents(primals, dots)))
    return fn


@functools.lru_cache(maxsize=None)
def relu_fn(self_pairs: bool, want_ntk: bool):
    """ReLU of (K, Θ) without pooling, (B, N, N) each, variances (B, N).

    Returns K' (B, N, N) for the NNGP, or [K'; Θ'] stacked as (2B, N, N) for the NTK (one array:
    see ``relu_pool_primal``; the convolution that follows takes both at once).
    """

    def diag_mask(n):
        return jnp.eye(n, dtype=bool) if self_pairs else None

    def core(k, t, va, vb):
        v1, v2 = va[:, :, None], vb[:, None, :]
        g, s = relu_parts(k, inv_sqrt(v1), inv_sqrt(v2), jnp.sqrt(v1), jnp.sqrt(v2),
                           diag_mask(k.shape[-1]))
        kp = s * (1 / (2 * _PI)) + g * k
        return materialize(jnp.concatenate([kp, g * t]) if want_ntk else kp, va)

    def tangents(primals, dots):
        (k, t, va, vb), (dk, dt, dva, dvb) = primals, dots
        dkp, dtp = _relu_tangents(k, t, va[:, :, None], vb[:, None, :], dk, dt, dva[:, :, None],
                                  dvb[:, None, :], diag_mask(k.shape[-1]), want_ntk)
        return materialize(jnp.concatenate([dkp, dtp]) if want_ntk else dkp, va, tangent=True)

    return _with_jvp(core, tangents)


@functools.lru_cache(maxsize=None)
def relu_fc_fn(with_diag: bool):
    """ReLU update of (n1, n2) matrices (fc archs): (K, G) from K, variances (n1, 1), (1, n2) and,
    if ``with_diag``, a boolean mask of identical pairs."""

    def core(k, v1, v2, diag=None):
        g, s = relu_parts(k, inv_sqrt(v1), inv_sqrt(v2), jnp.sqrt(v1), jnp.sqrt(v2), diag)
        return s * (1 / (2 * _PI)) + g * k, g

    @jax.custom_jvp
    def relu(k, v1, v2, *diag):
        return core(k, v1, v2, *diag)

    @relu.defjvp
    def relu_jvp(primals, tangents):
        k, v1, v2, *diag = primals
        dk, dv1, dv2 = tangents[:3]
        # dG through the NTK formula: Θ' = G·Θ with Θ = 1, dΘ = 0 gives dΘ' = dG.
        dkp, dg = _relu_tangents(k, jnp.ones_like(k), v1, v2, dk, jnp.zeros_like(k), dv1, dv2,
                                 diag[0] if diag else None, True)
        return core(k, v1, v2, *diag), (dkp, dg)

    return relu
