"""Architecture contract: one network, seen as an infinite-width kernel and as a finite net.

An architecture component's ``build(**params)`` returns an ``Architecture``. The kernels
(``ntk``, ``nngp``, ``rf-nngp``) and the evaluators name one by their ``arch`` parameter
(``Param(component="architecture")``); the run's registry builds it once
(``Registry.architecture``) and their builders receive the ``Architecture`` value, so a plugin
that declares an architecture gets all of them with no other code. Where it has an infinite-width
form (``stax``), both views must describe the same network (NTK parameterization: weights
``N(0, W_std^2 / fan_in)``, biases ``N(0, b_std^2)``), so that the random-feature kernel of the
finite trunk converges to the exact NNGP of the stax network as the width grows
(``distillbench.testing.check_architecture`` checks it).

``trunk(width, w_std, b_std, dtype) -> flax module`` (required)
    The random trunk: everything but the readout, NHWC images ``(n, H, W, C)`` -> ``(n, F)``
    features, parameters created and computation done in ``dtype``. Random features sample its
    parameters (``init``); the ``nn`` evaluator trains it under a Dense readout where the
    architecture has ``stax`` and no normalization is asked for (else it trains ``network``).

Optional (``None``: a generic default):

``stax(w_std, b_std) -> (init_fn, apply_fn, kernel_fn)``
    The neural-tangents stax network *with* its ``Dense(1)`` readout; the exact NNGP/NTK are
    its ``kernel_fn``. Import neural-tangents with ``distillbench.compat.import_neural_tangents()``.
    ``None``: the network has no infinite-width form (e.g. widths that grow with depth); the exact
    kernels refuse it, random features and the finite ``network`` still serve it.

``check_image_shape(shape)``
    Raise ``ValueError`` (one line) for an NHWC ``shape`` the network cannot take (e.g. too
    small to pool). Default: accept any 4-D shape.
``trunk_features(width, image_shape) -> int``
    F for one image of ``image_shape`` (no batch axis). Default: the trunk's abstract output.
``pixel_pairs(image_shape) -> int``
    Cost hint: covariance entries per image pair of the exact kernel, ``(H*W)^2`` for conv nets
    (the default), 1 for fully connected ones; sizes neural-tangents' kernel blocks.
``fast_exact(get, w_std, b_std, block_size, memory_budget_mb) -> kernel_fn(x1, x2, key=None)``
    A faster implementation of the same exact kernel (``get``: ``nngp``, ``ntk`` or ``both``);
    the exact kernels use it for ``implementation=auto``/``fast``.
``trunk_apply(params, x) -> (n, F)``
    A faster forward pass for the trunk's ``params``, computing in ``x``'s dtype. Default:
    ``trunk(..., dtype=x.dtype).apply(params, x)``.
``network(num_classes, width, normalization, dtype) -> flax module``
    The finite network that components *train* (FRePo's pool, the ``nn`` evaluator): called as
    ``module.apply(variables, x, train=bool, mutable=...)`` it returns ``(logits (n, C), features
    (n, F))``, the features being the penultimate layer's (the input of the readout), F =
    ``trunk_features(width, image_shape)``.
    ``variables`` holds ``params`` and, with ``normalization="batch"``, ``batch_stats`` (updated
    when ``train=True`` and ``mutable=["batch_stats"]``; ``train=False`` uses the running ones).
    ``normalization``: ``none``, ``instance`` or ``batch``; raise ``ValueError`` (one line) for one
    the architecture does not offer. Default: the trunk (``w_std=sqrt(2)``, ``b_std=0.1``) under a
    Dense readout, ``normalization="none"`` only (``default_network``).

Nothing here imports JAX or the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class Architecture(NamedTuple):
    #: ``None`` when the network has no infinite-width form (positional first, for compatibility).
    stax: Callable[[float, float], tuple[Any, Any, Any]] | None = None
    #: Required: its ``None`` default only lets ``stax`` have one (the registry refuses a missing trunk).
    trunk: Callable[[int, float, float, Any], Any] | None = None
    check_image_shape: Callable[[tuple[int, ...]], None] | None = None
    trunk_features: Callable[[int, tuple[int, ...]], int] | None = None
    pixel_pairs: Callable[[tuple[int, ...]], int] | None = None
    fast_exact: Callable[..., Callable[..., Any]] | None = None
    trunk_apply: Callable[[Any, Any], Any] | None = None
    network: Callable[..., Any] | None = None
    #: The registered name, set by the registry that built it (a kernel reports it as ``Kernel.arch``).
    name: str | None = None


def _check_nhwc(shape) -> None:
    if len(shape) != 4:
        raise ValueError(f"expected NHWC images (n, H, W, C), got shape {tuple(shape)}")


def _all_pixel_pairs(image_shape) -> int:
    return (int(image_shape[0]) * int(image_shape[1])) ** 2


def _abstract_features(trunk):
    """``trunk_features`` read from the trunk's abstract output (nothing is computed)."""

    def trunk_features(width: int, image_shape) -> int:
        import jax
        import jax.numpy as jnp

        module = trunk(width, 2**0.5, 0.1, jnp.float32)
        x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
        out = jax.eval_shape(lambda x: module.init_with_output(jax.random.PRNGKey(0), x)[0], x)
        return int(out.shape[-1])

    return trunk_features


def complete(arch: Architecture) -> Architecture:
    """``arch`` with the generic defaults in place of the optional shape helpers it left ``None``."""
    return arch._replace(
        check_image_shape=arch.check_image_shape or _check_nhwc,
        trunk_features=arch.trunk_features or _abstract_features(arch.trunk),
        pixel_pairs=arch.pixel_pairs or _all_pixel_pairs,
        network=arch.network or default_network(arch.trunk),
    )


#: The normalizations a finite network may use (``Architecture.network``).
NORMALIZATIONS = ("none", "instance", "batch")


def default_network(trunk):
    """``network`` for an architecture that gives only a trunk: the trunk under a Dense readout."""

    def network(num_classes: int, width: int, normalization: str = "none", dtype=None):
        if normalization != "none":
            raise ValueError(f"this architecture's network has no normalization {normalization!r} "
                             f"(it gives only a trunk: normalization none)")
        import jax.numpy as jnp

        from distillbench.components.networks import Classifier  # flax, imported when built

        return Classifier(trunk=trunk(width, 2**0.5, 0.1, dtype or jnp.float32), num_classes=num_classes)

    return network
