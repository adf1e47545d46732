"""The kernel contract (``distillbench.components.kernels``), checked on small random images."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from distillbench.components.kernels import Kernel
from distillbench.testing._base import Subject, build, enable_x64
from distillbench.testing.data import images


def rel_diff(a, b) -> float:
    """``max |a - b|`` relative to the largest magnitude of either."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(b), initial=0.0)), 1e-300)
    return float(np.max(np.abs(a - b), initial=0.0)) / scale


def array_result(subject: Subject, what: str, out: Any, shape: tuple[int, ...] | None, dtype) -> np.ndarray:
    """Check ``out`` is an array of ``shape`` and ``dtype`` with finite entries; return it as numpy."""
    if not hasattr(out, "shape") or not hasattr(out, "dtype"):
        raise subject.fail(f"{what} must return an array, got {type(out).__name__}")
    if shape is not None and tuple(out.shape) != tuple(shape):
        raise subject.fail(f"{what} must return shape {tuple(shape)}, got {tuple(out.shape)}")
    if dtype is not None and np.dtype(out.dtype) != np.dtype(dtype):
        raise subject.fail(f"{what} on {np.dtype(dtype).name} images must return {np.dtype(dtype).name} "
                           f"(compute in the dtype of the images), got {np.dtype(out.dtype).name}")
    arr = np.asarray(out)
    if not np.all(np.isfinite(arr)):
        raise subject.fail(f"{what} returned non-finite values")
    return arr


def check_kernel(kernel: Any, params: Mapping[str, Any] | None = None, *,
                 image_shape: tuple[int, ...] = (8, 8, 1)) -> Kernel:
    """Check a kernel component (or a built ``Kernel``); raise ``ConformanceError`` (``kernel contract: ...``).

    ``kernel``: a ``Component``, ``"kernel:name"`` / a registered name, or a ``Kernel`` value.
    ``params``: parameter overrides (validated like the command line). Checks, on NHWC images of
    ``image_shape`` (float64 enabled, as in a run):

    * ``build`` returns a ``Kernel``; ``kernel_fn(x1 (5, ...), x2 (3, ...), key)`` has shape
      ``(5, 3)``, the dtype of the images (float64 and float32) and finite entries;
    * ``K(x, x)`` is symmetric and positive semi-definite; ``kernel_fn`` is pairwise (a row does
      not change when other rows are added), deterministic for a key and the same under ``jax.jit``;
    * ``random=False`` kernels ignore ``key``; ``random=True`` kernels give different matrices
      for different keys;
    * gradients w.r.t. both image arguments exist under ``jax.jit``, are finite and not all zero;
    * ``feature_fn`` (when given) returns ``(n, F)`` in the images' dtype, is differentiable, and
      ``feature_fn(x1) @ feature_fn(x2).T == kernel_fn(x1, x2)`` for the same key.

    Returns the built ``Kernel``.
    """
    enable_x64()
    import jax
    import jax.numpy as jnp

    value, s = build(kernel, "kernel", params, Kernel)
    if not callable(value.kernel_fn):
        raise s.fail("kernel_fn must be callable")
    if value.feature_fn is not None and not callable(value.feature_fn):
        raise s.fail("feature_fn must be None or callable")
    if not isinstance(value.random, bool):
        raise s.fail(f"random must be a bool, got {type(value.random).__name__}")
    if value.arch is not None and not isinstance(value.arch, str):
        raise s.fail(f"arch must be None or a str, got {type(value.arch).__name__}")

    x1, x2 = jnp.asarray(images(5, image_shape, seed=1)), jnp.asarray(images(3, image_shape, seed=2))
    key0 = jax.random.PRNGKey(0)
    k = _check_matrices(s, value.kernel_fn, x1, x2, key0)
    _check_keys(s, value, x1, x2, key0, k)
    _check_gradients(s, value.kernel_fn, x1, x2, key0)
    if value.feature_fn is not None:
        _check_features(s, value.feature_fn, x1, x2, key0, k)
    return value


def _check_matrices(s: Subject, fn, x1, x2, key0) -> np.ndarray:
    """Shape and dtype (float64 and float32), symmetry, PSD and pairwise-ness; returns K(x1, x2)."""
    import jax.numpy as jnp

    shp = f"x1 {tuple(x1.shape)}, x2 {tuple(x2.shape)}"
    call = f"kernel_fn({shp}, key)"
    k = array_result(s, call, s.call(call, fn, x1, x2, key0), (5, 3), jnp.float64)
    f32 = f"kernel_fn({shp}, key) with float32 images"
    array_result(s, f"kernel_fn({shp}, key)", s.call(f32, fn, x1.astype(jnp.float32), x2.astype(jnp.float32), key0),
                 (5, 3), jnp.float32)

    x = jnp.concatenate([x1, x2])
    what = f"kernel_fn(x, x, key) for x = concat(x1, x2) {tuple(x.shape)}"
    kxx = array_result(s, what, s.call(what, fn, x, x, key0), (8, 8), jnp.float64)
    if rel_diff(kxx, kxx.T) > 1e-6:
        raise s.fail(f"kernel_fn(x, x, key) must be symmetric: max |K - K.T| / max |K| = {rel_diff(kxx, kxx.T):.2e}")
    eig = np.linalg.eigvalsh((kxx + kxx.T) / 2)
    if eig[0] < -1e-6 * max(eig[-1], 1e-300):
        raise s.fail(f"kernel_fn(x, x, key) must be positive semi-definite: eigenvalues from {eig[0]:.3g} to {eig[-1]:.3g}")
    if rel_diff(kxx[:5, 5:], k) > 1e-6:
        raise s.fail(f"kernel_fn must be pairwise: K(x1, x2) and the x1-x2 block of K(concat(x1, x2), concat(x1, x2)) "
                     f"differ by {rel_diff(kxx[:5, 5:], k):.2e} (relative); an entry must not depend on the rest of the batch")
    return k


def _check_keys(s: Subject, value: Kernel, x1, x2, key0, k) -> None:
    """Deterministic for a key and under ``jax.jit``; ``random`` says whether the key matters."""
    import jax

    fn = value.kernel_fn
    shp = f"x1 {tuple(x1.shape)}, x2 {tuple(x2.shape)}"
    call = f"kernel_fn({shp}, key)"
    again = np.asarray(s.call(call, fn, x1, x2, key0))
    if rel_diff(again, k) > 1e-9:
        raise s.fail(f"kernel_fn must be deterministic: two calls with the same key differ by {rel_diff(again, k):.2e}")
    jitted = np.asarray(s.call(f"jax.jit(kernel_fn)({shp}, key)", jax.jit(fn), x1, x2, key0))
    if rel_diff(jitted, k) > 1e-6:
        raise s.fail(f"kernel_fn must give the same matrix under jax.jit (relative difference {rel_diff(jitted, k):.2e})")

    k1 = np.asarray(s.call(call, fn, x1, x2, jax.random.PRNGKey(1)))
    if value.random and rel_diff(k1, k) < 1e-9:
        raise s.fail("a random=True kernel must draw its kernel from key: PRNGKey(0) and PRNGKey(1) gave the same matrix")
    if not value.random and rel_diff(k1, k) > 1e-9:
        raise s.fail(f"a random=False kernel must not depend on key (PRNGKey(0) and PRNGKey(1) differ by "
                     f"{rel_diff(k1, k):.2e}); declare random=True for a kernel drawn from key")


def _check_gradients(s: Subject, fn, x1, x2, key0) -> None:
    import jax
    import jax.numpy as jnp

    weights = jnp.asarray(images(1, (5, 3), seed=3)[0])
    what = "jax.jit(jax.grad(sum(w * kernel_fn(x1, x2, key)), argnums=(0, 1)))"
    grads = s.call(what, jax.jit(jax.grad(lambda a, b: jnp.sum(weights * fn(a, b, key0)), argnums=(0, 1))), x1, x2)
    for name, arg, grad in (("x1", x1, grads[0]), ("x2", x2, grads[1])):
        what = f"the gradient of kernel_fn w.r.t. {name}"
        g = array_result(s, what, grad, tuple(arg.shape), None)
        if not np.any(g):
            raise s.fail(f"{what} is identically zero: support images could not be learned through this kernel")


def _check_features(s: Subject, feature_fn, x1, x2, key, k) -> None:
    import jax
    import jax.numpy as jnp

    x = jnp.concatenate([x1, x2])
    what = f"feature_fn(x {tuple(x.shape)}, key)"
    out = s.call(what, feature_fn, x, key)
    if not hasattr(out, "shape") or len(out.shape) != 2 or out.shape[0] != x.shape[0]:
        raise s.fail(f"{what} must return shape ({x.shape[0]}, F), got {getattr(out, 'shape', type(out).__name__)}")
    phi = array_result(s, what, out, None, jnp.float64)
    array_result(s, what, s.call(f"{what} with float32 images", feature_fn, x.astype(jnp.float32), key),
                 phi.shape, jnp.float32)
    again = np.asarray(s.call(what, feature_fn, x, key))
    if rel_diff(again, phi) > 1e-9:
        raise s.fail("feature_fn must be deterministic: two calls with the same key differ")
    phi1, phi2 = phi[: len(x1)], phi[len(x1):]
    gap = rel_diff(phi1 @ phi2.T, k)
    if gap > 1e-6:
        raise s.fail(f"feature_fn(x1, key) @ feature_fn(x2, key).T must equal kernel_fn(x1, x2, key) "
                     f"(relative difference {gap:.2e})")
    probe = jnp.asarray(images(1, phi.shape, seed=4)[0])
    grad = s.call("jax.jit(jax.grad(sum(r * feature_fn(x, key)), x))",
                  jax.jit(jax.grad(lambda z: jnp.sum(probe * feature_fn(z, key)))), x)
    g = array_result(s, "the gradient of feature_fn w.r.t. x", grad, tuple(x.shape), None)
    if not np.any(g):
        raise s.fail("the gradient of feature_fn w.r.t. x is identically zero")
