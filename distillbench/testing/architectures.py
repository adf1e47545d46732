"""The architecture contract (``distillbench.components.architectures``), checked on tiny images.

The check that matters: the two views are one network. The random-feature NNGP of the flax trunk
(``w_std^2 * Phi Phi^T / F + b_std^2`` over a few sampled trunks) must converge to the stax
network's exact NNGP as the width grows; a trunk initialised in another parameterization, or a
stax network with another layer, converges to something else or not at all. An architecture
without ``stax`` has only its finite views checked. The trainable ``network`` (the default one
included) is checked for every normalization it offers, batch statistics round trip included,
and traced as components run it (``init`` under ``vmap``, training under ``jit``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from distillbench.components.architectures import NORMALIZATIONS, Architecture, complete
from distillbench.testing._base import Subject, build, enable_x64
from distillbench.testing.data import images
from distillbench.testing.kernels import array_result, rel_diff

W_STD, B_STD = 2**0.5, 0.1
#: Independent draws whose mean error is the narrow width's.
NARROW_DRAWS = 4
#: The networks checked: classes and width.
NETWORK_CLASSES, NETWORK_WIDTH = 3, 4


def _frobenius_error(k, ref) -> float:
    return float(np.linalg.norm(np.asarray(k, np.float64) - ref) / np.linalg.norm(ref))


def _exact(s: Subject, arch: Architecture, x) -> tuple[np.ndarray, np.ndarray]:
    """The stax network's (NNGP, NTK) of ``x`` with itself, checked finite, symmetric and PSD."""
    triple = s.call("stax(w_std, b_std)", arch.stax, W_STD, B_STD)
    if not isinstance(triple, tuple) or len(triple) != 3 or not all(callable(f) for f in triple):
        raise s.fail("stax(w_std, b_std) must return the stax triple (init_fn, apply_fn, kernel_fn)")
    import jax

    n = x.shape[0]
    out = []
    for get in ("nngp", "ntk"):
        what = f"stax kernel_fn(x {tuple(x.shape)}, None, {get!r})"
        # jitted: eagerly, each of its many small operations compiles alone (seconds in all)
        kernel_fn = jax.jit(lambda x, get=get: triple[2](x, None, get))
        k = array_result(s, what, s.call(what, kernel_fn, x), (n, n), None)
        if rel_diff(k, k.T) > 1e-8 or np.linalg.eigvalsh((k + k.T) / 2)[0] < -1e-8 * np.abs(k).max():
            raise s.fail(f"{what} must be symmetric and positive semi-definite")
        out.append(k)
    return out[0], out[1]


def _random_feature_nngp(s: Subject, arch: Architecture, x, width: int, networks: int, seed: int) -> np.ndarray:
    """``w^2 mean_m f_m(x) f_m(x)^T / F + b^2`` over ``networks`` trunks of ``width`` (float32 weights)."""
    import jax
    import jax.numpy as jnp

    module = s.call(f"trunk({width}, w_std, b_std, float32)", arch.trunk, width, W_STD, B_STD, jnp.float32)
    shape = tuple(x.shape[1:])
    features = s.call(f"trunk_features({width}, {shape})", arch.trunk_features, width, shape)
    # jitted once per width: eagerly, each of the networks' few hundred operations compiles alone
    init, apply = jax.jit(module.init), jax.jit(module.apply)
    k = 0.0
    for key in jax.random.split(jax.random.PRNGKey(seed), networks):
        params = s.call("trunk.init(key, x)", init, key, x[:1].astype(jnp.float32))
        what = f"trunk.apply(params, x {tuple(x.shape)})"
        f = array_result(s, what, s.call(what, apply, params, x.astype(jnp.float32)),
                         (x.shape[0], features), jnp.float32).astype(np.float64)
        k = k + f @ f.T
    return W_STD**2 * k / (networks * features) + B_STD**2


def _check_dtype_and_fast_forward(s: Subject, arch: Architecture, x) -> None:
    """The float64 trunk computes in float64; ``trunk_apply`` (when given) is the trunk's function."""
    import jax
    import jax.numpy as jnp

    module = s.call("trunk(8, w_std, b_std, float64)", arch.trunk, 8, W_STD, B_STD, jnp.float64)
    params = s.call("trunk(8, w_std, b_std, float64).init(key, x)", jax.jit(module.init), jax.random.PRNGKey(0),
                    x[:1])
    shape = tuple(x.shape[1:])
    features = s.call(f"trunk_features(8, {shape})", arch.trunk_features, 8, shape)
    ref = array_result(s, "trunk(8, ..., float64).apply(params, x)", jax.jit(module.apply)(params, x),
                       (x.shape[0], features), jnp.float64)
    if arch.trunk_apply is not None:
        got = array_result(s, "trunk_apply(params, x)", s.call("trunk_apply(params, x)", arch.trunk_apply, params, x),
                           ref.shape, jnp.float64)
        if rel_diff(got, ref) > 1e-9:
            raise s.fail(f"trunk_apply(params, x) must equal trunk.apply(params, x) (relative difference "
                         f"{rel_diff(got, ref):.2e})")


def _network_outputs(s: Subject, what: str, out, n: int, features: int):
    """``(logits (n, C), features (n, F))`` of a float64 network, checked; as numpy."""
    import jax.numpy as jnp

    if not isinstance(out, tuple) or len(out) != 2:
        raise s.fail(f"{what} must return (logits, features), got {type(out).__name__}")
    return (array_result(s, f"{what}[0] (logits)", out[0], (n, NETWORK_CLASSES), jnp.float64),
            array_result(s, f"{what}[1] (features)", out[1], (n, features), jnp.float64))


def _check_batch_stats(s: Subject, module, what: str, variables, x, evaluation, features: int) -> None:
    """``train=True`` updates the ``batch_stats`` (same structure, new values); ``train=False`` uses them."""
    import jax

    n = x.shape[0]
    out, updates = s.call(f"{what}.apply(variables, x, train=True, mutable=['batch_stats'])",
                          lambda: module.apply(variables, x, train=True, mutable=["batch_stats"]))
    _network_outputs(s, f"{what}.apply(variables, x, train=True, mutable=['batch_stats'])", out, n, features)
    old = variables.get("batch_stats")
    new = dict(updates).get("batch_stats")
    if old is None:
        if new:
            raise s.fail(f"{what}: train=True returned batch_stats its variables do not hold")
        return
    if new is None or jax.tree.structure(new) != jax.tree.structure(old):
        raise s.fail(f"{what}.apply(variables, x, train=True, mutable=['batch_stats']) must return the updated "
                     f"batch_stats, of the structure of variables['batch_stats']")
    if all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new))):
        raise s.fail(f"{what}: train=True must update the running batch_stats (they did not change)")
    again = _network_outputs(s, f"{what}.apply(updated variables, x, train=False)",
                             s.call(f"{what}.apply(updated variables, x, train=False)",
                                    lambda: module.apply({**variables, "batch_stats": new}, x, train=False)),
                             n, features)
    if rel_diff(again[1], evaluation[1]) == 0.0:
        raise s.fail(f"{what}: train=False must use the running batch_stats (its features did not change with them)")


def _check_traceable(s: Subject, module, what: str, variables, x) -> None:
    """Components initialise networks under ``jax.vmap`` (FRePo's pool: one per key) and train them
    under ``jax.jit``: both must trace (no Python branch on a value), ``vmap`` stacking ``init``'s
    variables."""
    import jax

    keys = jax.random.split(jax.random.PRNGKey(1))  # traced only (eval_shape): eager init costs seconds
    stacked = s.call(f"jax.vmap({what}.init)(2 keys, x, train=False)",
                     lambda: jax.eval_shape(jax.vmap(lambda k: module.init(k, x, train=False)), keys))
    if jax.tree.structure(stacked) != jax.tree.structure(variables) or any(
            a.shape != (2, *b.shape) for a, b in zip(jax.tree.leaves(stacked), jax.tree.leaves(variables))):
        raise s.fail(f"jax.vmap({what}.init) over 2 keys must give init's variables stacked on a leading axis of 2")
    mutable = ["batch_stats"] if "batch_stats" in variables else False
    s.call(f"jax.jit({what}.apply)(variables, x, train=True)",
           lambda: jax.jit(lambda v, x: module.apply(v, x, train=True, mutable=mutable))(variables, x))


def _check_network(s: Subject, arch: Architecture, x) -> None:
    """``network`` for each normalization it offers (at least one; an unknown one is a one-line
    ``ValueError``): float64 ``(logits (n, C), features (n, trunk_features))``, batch statistics
    round trip; ``init`` under ``vmap`` and training under ``jit`` (the last offered)."""
    import jax
    import jax.numpy as jnp

    n, shape = x.shape[0], tuple(x.shape[1:])
    features = s.call(f"trunk_features({NETWORK_WIDTH}, {shape})", arch.trunk_features, NETWORK_WIDTH, shape)
    try:
        arch.network(NETWORK_CLASSES, NETWORK_WIDTH, "no-such-normalization", jnp.float64)
    except ValueError as exc:
        if len(str(exc).strip().splitlines()) != 1:
            raise s.fail(f"network(..., 'no-such-normalization', ...) must raise a one-line ValueError, got {exc!r}")
    except Exception as exc:
        raise s.fail(f"network(..., 'no-such-normalization', ...) must raise ValueError, got {type(exc).__name__}")
    else:
        raise s.fail("network(..., 'no-such-normalization', ...) must raise ValueError")
    offered = []
    for normalization in NORMALIZATIONS:
        what = f"network({NETWORK_CLASSES}, {NETWORK_WIDTH}, {normalization!r}, float64)"
        try:
            module = arch.network(NETWORK_CLASSES, NETWORK_WIDTH, normalization, jnp.float64)
        except ValueError:
            continue  # not offered
        except Exception as exc:
            raise s.fail(f"{what} raised {type(exc).__name__} (only ValueError for a normalization it does not "
                         f"offer)") from exc
        offered.append(normalization)
        variables = s.call(f"{what}.init(key, x, train=False)",
                           lambda: module.init(jax.random.PRNGKey(0), x, train=False))
        wanted = ("params", "batch_stats") if normalization == "batch" else ("params",)
        if any(name not in variables for name in wanted):
            raise s.fail(f"{what}.init(...) must hold {' and '.join(map(repr, wanted))}, got {sorted(variables)}")
        evaluation = _network_outputs(s, f"{what}.apply(variables, x, train=False)",
                                      s.call(f"{what}.apply(variables, x, train=False)",
                                             lambda: module.apply(variables, x, train=False)), n, features)
        _check_batch_stats(s, module, what, variables, x, evaluation, features)
        last = module, what, variables
    if not offered:
        raise s.fail(f"network(...) must offer one of the normalizations {', '.join(NORMALIZATIONS)}")
    _check_traceable(s, *last, x)  # once (compiles): batch norm's, when offered


def _check_fast_exact(s: Subject, arch: Architecture, x, nngp, ntk) -> None:
    what = "fast_exact('both', w_std, b_std, None, None)"
    kernel_fn = s.call(what, arch.fast_exact, "both", W_STD, B_STD, None, None)
    both = array_result(s, f"{what}(x, x)", s.call(f"{what}(x, x)", kernel_fn, x, x), (2, *nngp.shape), None)
    gap = max(rel_diff(both[0], nngp), rel_diff(both[1], ntk))
    if gap > 1e-6:
        raise s.fail(f"fast_exact must compute the stax network's NNGP and NTK (relative difference {gap:.2e})")


def check_architecture(architecture: Any, params: Mapping[str, Any] | None = None, *,
                       image_shape: tuple[int, ...] = (8, 8, 1), widths: tuple[int, int] = (8, 1024),
                       networks: int = 4, tolerance: float = 0.15,
                       ntk_widths: tuple[int, int] = (8, 256)) -> Architecture:
    """Check an architecture component (or a built ``Architecture``); raise ``ConformanceError``.

    On 6 float64 images of ``image_shape``: ``stax`` (when given) gives a finite, symmetric, PSD
    NNGP and NTK; the trunk returns ``(n, trunk_features(width, image_shape))`` finite features, in
    float64 for a float64 trunk; ``trunk_apply`` and ``fast_exact``, when given, equal the trunk
    and the stax kernel; ``network`` (or the default one) passes ``_check_network``. Then, with a
    ``stax``, convergence: the random-feature NNGP of ``networks`` trunks is compared with the
    exact NNGP at the two ``widths``: the relative (Frobenius) error at the wide width must fall
    below its mean over ``NARROW_DRAWS`` draws at the narrow width, and below ``tolerance``. The
    error is dominated by one random scale shared by all entries (heavy-tailed: convnet3, 8
    networks, gave 0.088 at width 256 and 0.004 at 1024), hence the mean at the narrow width and
    a plain decrease rather than a ratio. The same for the empirical NTK of ``networks`` finite
    networks (the ``finite-ntk`` kernel, NTK parameterization) against the stax NTK, at
    ``ntk_widths``. Returns the ``Architecture``.
    """
    enable_x64()
    import jax.numpy as jnp

    value, s = build(architecture, "architecture", params, Architecture)
    if not callable(value.trunk):
        raise s.fail("trunk must be callable")
    for name in ("stax", "network"):
        if getattr(value, name) is not None and not callable(getattr(value, name)):
            raise s.fail(f"{name} must be None or callable")
    arch = complete(value)
    x = jnp.asarray(images(6, image_shape, seed=5))
    s.call(f"check_image_shape({tuple(x.shape)})", arch.check_image_shape, tuple(x.shape))
    _check_dtype_and_fast_forward(s, arch, x)
    _check_network(s, arch, x)
    if arch.stax is None:
        return value  # no infinite-width form: nothing to converge to
    nngp, ntk = _exact(s, arch, x)
    if arch.fast_exact is not None:
        _check_fast_exact(s, arch, x, nngp, ntk)
    # The error is dominated by one random scale: averaged over draws at the (cheap) narrow width
    # so that one lucky draw there cannot pass for a lack of convergence.
    narrow = float(np.mean([_frobenius_error(_random_feature_nngp(s, arch, x, widths[0], networks, seed=i), nngp)
                            for i in range(NARROW_DRAWS)]))
    wide = _frobenius_error(_random_feature_nngp(s, arch, x, widths[1], networks, seed=NARROW_DRAWS), nngp)
    if not (wide < narrow and wide < tolerance):
        raise s.fail(f"the random-feature NNGP of the trunk must converge to the stax NNGP as the width grows: "
                     f"relative error {narrow:.3f} at width {widths[0]}, {wide:.3f} at width {widths[1]} "
                     f"(need < the first and < {tolerance}); are both views the same network, in the NTK "
                     f"parameterization (weights N(0, w_std^2/fan_in), biases N(0, b_std^2))?")
    _check_finite_ntk(s, arch, x, ntk, ntk_widths, networks, tolerance)
    return value


def _check_finite_ntk(s: Subject, arch: Architecture, x, ntk, widths: tuple[int, int], networks: int,
                      tolerance: float) -> None:
    """The empirical NTK of ``networks`` random networks (trunk + one-output readout, gradients in the
    NTK parameterization: the ``finite-ntk`` kernel) converges to the stax NTK as the width grows:
    the same rule as the random-feature NNGP's, at ``widths`` (narrower: its features are the
    parameters, ``P`` per image; float32 networks, as the random-feature check's)."""
    import jax

    from distillbench.empirical_ntk import empirical_ntk_features

    jitted = {w: jax.jit(empirical_ntk_features(arch, w, networks)) for w in widths}  # eagerly: an op at a time

    def error(width: int, seed: int) -> float:
        features = s.call(f"empirical NTK features at width {width}", jitted[width], x.astype("float32"),
                          jax.random.PRNGKey(seed))
        f = np.asarray(features, np.float64)
        return _frobenius_error(f @ f.T, ntk)

    narrow = float(np.mean([error(widths[0], i) for i in range(NARROW_DRAWS)]))
    wide = error(widths[1], NARROW_DRAWS)
    if not (wide < narrow and wide < tolerance):
        raise s.fail(f"the empirical NTK of the finite networks (trunk + Dense(1), NTK parameterization) must "
                     f"converge to the stax NTK as the width grows: relative error {narrow:.3f} at width "
                     f"{widths[0]}, {wide:.3f} at width {widths[1]} (need < the first and < {tolerance})")
