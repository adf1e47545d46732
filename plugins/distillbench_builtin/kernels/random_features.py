"""Random-feature NNGP (RFAD): the NNGP of a Dense readout on N freshly sampled random trunks.

``Phi(x) = concat_m f_m(x) / sqrt(N*F)`` over N random trunks with F features each; the readout
Dense(W_std, b_std) makes the kernel ``W_std^2 Phi Phi^T + b_std^2``. We return features already
scaled by W_std with a constant b_std column appended, so the kernel is a plain inner product and
objectives can compute support and target features once per step (linear cost).

The trunks are the ``arch`` architecture's (``distillbench.components.architectures``): weights
drawn by initialising its flax ``trunk``, the forward pass its ``trunk_apply`` when it has one
(the built-ins: ``architectures/fast_forward.py``, written for XLA on CPU), else the module's own.

Speed (the RFAD step is almost all target forward passes):

* the N networks run one after the other inside one computation (``lax.map``; a vmap would make
  XLA emit grouped convolutions, slower on CPU), and examples in chunks of ``batch_size``
  (``auto``: 256 on CPU, where chunks that stay in cache run ~1.1-1.5x faster than one
  1280-image batch; on a GPU as many as a quarter of its memory holds, see
  ``distillbench.devices``) (``lax.map`` + checkpoint), split across all local devices when
  there are several.

float32 products (convolutions, matmuls) run at ``precision=highest`` unless ``precision=tf32``:
GPUs would otherwise use TF32 (~1e-3 relative error) for float32 by default.

Target features are computed without autodiff (the objectives stop the gradient at them).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from distillbench import devices
from distillbench.components.kernels import Kernel
from distillbench.components.architectures import Architecture
from distillbench_builtin.kernels.blocking import local_devices, map_blocks, materialize

#: Bytes held per example per network in a forward chunk, in units of the largest activation:
#: the activation, the next one, XLA's temporaries (the fused first conv never stores its
#: full-resolution output, so this is a margin there).
ACTIVATIONS_PER_EXAMPLE = 4


def example_bytes(arch: Architecture, width: int, image_shape, dtype) -> int:
    """Working memory of one example of one network in a forward chunk (largest activation:
    ``width`` for a fully connected net, ``H*W*width`` for a conv net, as the architecture's
    ``pixel_pairs`` hint tells them apart)."""
    conv = arch.pixel_pairs(tuple(image_shape)) > 1
    size = int(image_shape[0]) * int(image_shape[1]) * width if conv else width
    return ACTIVATIONS_PER_EXAMPLE * size * jnp.dtype(dtype).itemsize


def _sample(sampler, key, num_networks: int, x):
    """``num_networks`` parameter sets of the flax trunk ``sampler``, cast to ``x``'s dtype.

    Weights are always drawn in float32, then cast: one key is one kernel whatever the dtype
    (float32 targets and float64 support must see the same networks).
    """
    dummy = jnp.zeros((1, *x.shape[1:]), jnp.float32)
    params = jax.vmap(lambda k: sampler.init(k, dummy))(jax.random.split(key, num_networks))
    # Stored once (see blocking.materialize): XLA would otherwise fuse the sampling (an
    # inverse-erf per draw) into the first conv's loop and redo it for every activation.
    return jax.tree.map(lambda p: materialize(p.astype(x.dtype), x), params)


def _module_forward(net: Architecture, width: int, w_std: float, b_std: float):
    """The trunk's own forward pass, computing in the images' dtype (no ``trunk_apply`` given)."""

    def forward(params, x):
        return net.trunk(width, w_std, b_std, x.dtype).apply(params, x)

    return forward


def build_rf_nngp(
    arch: Architecture,
    num_networks: int = 8,
    width: int = 256,
    w_std: float = 2**0.5,
    b_std: float = 0.1,
    batch_size: int | None = None,
    precision: str = "highest",
) -> Kernel:
    """Random-feature NNGP of ``arch``; one ``key`` is one draw of ``num_networks`` trunks.

    ``batch_size``: examples per forward chunk; None = from the device (``devices.rf_chunk_size``).
    ``precision``: float32 matmul precision, ``highest`` or ``tf32`` (GPU only).
    """
    jax_precision = devices.matmul_precision(precision)
    forward = arch.trunk_apply or _module_forward(arch, width, w_std, b_std)

    @jax.jit
    def feature_fn(x, key):
        with jax.default_matmul_precision(jax_precision):
            return _features(x, key)

    def _features(x, key):
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.float32)
        dtype = x.dtype
        arch.check_image_shape(x.shape)
        n = x.shape[0]
        n_feat = arch.trunk_features(width, x.shape[1:])
        params = _sample(arch.trunk(width, w_std, b_std, jnp.float32), key, num_networks, x)

        def chunk_features(xc, params):  # (b, H, W, C) -> (b, N*F)
            xc = materialize(xc, xc)  # e.g. a gather of the target batch: done once, not per tap
            if num_networks == 1:
                f = forward(jax.tree.map(lambda p: p[0], params), xc)[None]
            else:  # one network after the other (see the module docstring)
                f = jax.lax.map(lambda p: forward(p, xc), params)  # (N, b, F)
            return jnp.moveaxis(f, 0, 1).reshape(xc.shape[0], num_networks * n_feat)

        # Chunks bound the activation memory (checkpointed: bounded under jax.grad too) and are
        # spread over the local devices.
        chunk = devices.rf_chunk_size(devices.current(), example_bytes(arch, width, x.shape[1:], dtype),
                                      batch_size)
        feats = map_blocks(chunk_features, x, params, chunk, local_devices())
        scale = jnp.asarray(w_std / (num_networks * n_feat) ** 0.5, dtype)
        const = jnp.full((n, 1), b_std, dtype)
        return jnp.concatenate([feats * scale, const], axis=1)

    @jax.jit
    def kernel_fn(x1, x2, key):
        return jnp.matmul(feature_fn(x1, key), feature_fn(x2, key).T, precision=jax_precision)

    return Kernel(kernel_fn=kernel_fn, feature_fn=feature_fn, random=True, arch=arch.name)
