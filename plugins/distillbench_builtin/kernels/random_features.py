"""Random-feature NNGP (RFAD): the NNGP of a Dense readout on N freshly sampled random trunks.

``Phi(x) = concat_m f_m(x) / sqrt(N*F)`` over N random trunks with F features each; the readout
Dense(W_std, b_std) makes the kernel ``W_std^2 Phi Phi^T + b_std^2``. We return features already
scaled by W_std with a constant b_std column appended, so the kernel is a plain inner product and
objectives can compute support and target features once per step (linear cost).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from distillbench.components.kernels import Kernel
from distillbench_builtin.kernels.architectures import Trunk, check_image_shape, trunk_features
from distillbench_builtin.kernels.exact import balanced, pad_to_blocks


def build_rf_nngp(
    arch: str = "fc1",
    num_networks: int = 8,
    width: int = 256,
    w_std: float = 2**0.5,
    b_std: float = 0.1,
    batch_size: int = 1280,
) -> Kernel:
    """Random-feature NNGP of ``arch``; one ``key`` is one draw of ``num_networks`` trunks."""

    @jax.jit
    def feature_fn(x, key):
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.float32)
        dtype = x.dtype
        check_image_shape(arch, x.shape)
        n = x.shape[0]
        n_feat = trunk_features(arch, width, x.shape[1:])
        trunk = Trunk(arch=arch, width=width, w_std=w_std, b_std=b_std, dtype=dtype)
        # Weights are always drawn in float32, then cast: one key is one kernel whatever the
        # dtype (float32 targets and float64 support must see the same networks).
        sampler = trunk.clone(dtype=jnp.float32)
        dummy = jnp.zeros((1, *x.shape[1:]), jnp.float32)
        # All N networks are sampled and applied as one batched computation (vmap over keys).
        params = jax.vmap(lambda k: sampler.init(k, dummy))(jax.random.split(key, num_networks))
        params = jax.tree.map(lambda p: p.astype(dtype), params)

        def chunk_features(xc):  # (b, H, W, C) -> (b, N*F)
            f = jax.vmap(lambda p: trunk.apply(p, xc))(params)  # (N, b, F)
            return jnp.moveaxis(f, 0, 1).reshape(xc.shape[0], num_networks * n_feat)

        if n <= batch_size:
            feats = chunk_features(x)
        else:
            # Chunks bound the activation memory; checkpoint keeps it bounded under jax.grad too.
            blocks = pad_to_blocks(x, balanced(n, batch_size))
            chunks = jax.lax.map(jax.checkpoint(chunk_features, prevent_cse=False), blocks)
            feats = chunks.reshape(-1, num_networks * n_feat)[:n]
        scale = jnp.asarray(w_std / (num_networks * n_feat) ** 0.5, dtype)
        const = jnp.full((n, 1), b_std, dtype)
        return jnp.concatenate([feats * scale, const], axis=1)

    @jax.jit
    def kernel_fn(x1, x2, key):
        return feature_fn(x1, key) @ feature_fn(x2, key).T

    return Kernel(kernel_fn=kernel_fn, feature_fn=feature_fn, random=True, arch=arch)
