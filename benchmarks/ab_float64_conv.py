"""Diagnostic, no bar: what routing float64 convolutions into slices and dot products
(``distillbench/compat/float64_conv.py``) costs on the paths it touches, against XLA:CPU's own
float64 convolution (which crashes on some AVX-512 CPUs with jaxlib 0.8-0.10; run this where it
does not).

The rule is process-wide, so every round runs one child process per side, the sides alternating:
``routed`` (``enable_float64()``, as every run) and ``xla`` (``jax_enable_x64`` alone). Each child
times, after a first call with compilation (medians of ``--repeats`` calls, ms):

* ``nt convnet3 NTK + gradient``: ``kernel.implementation=neural-tangents``, value and support
  gradient, 5 support x 10 targets, 28x28x1 (its convolutions act on covariance maps);
* ``nt convnet3 NNGP + gradient``: the same, NNGP;
* ``flax conv trunk + gradient``: a third-party style trunk (2 x (3x3 conv 64 channels, ReLU,
  2x2 average pool)), float64, 256 images 28x28x1, value and image gradient;
* ``bare conv, crash shape``: the minimal crash, (50, 64, 64, 1) 3x3 SAME to 8 channels, value and
  input gradient.

Prints each side's median over rounds and the median per-round ratio routed / xla.

Usage: python benchmarks/ab_float64_conv.py [--rounds 3] [--repeats 5]
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common import ab_main, timed_ms  # noqa: E402


def _parts(repeats: int) -> dict[str, float]:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from distillbench.registry import load_registry
    from distillbench_builtin.kernels.exact import build_nngp, build_ntk

    key = jax.random.PRNGKey(0)
    targets = jax.random.normal(key, (10, 28, 28, 1), jnp.float64)
    support = jax.random.normal(jax.random.PRNGKey(1), (5, 28, 28, 1), jnp.float64)
    out = {}
    for name, build in (("NTK", build_ntk), ("NNGP", build_nngp)):
        k = build(arch=load_registry().architecture("convnet3"), implementation="neural-tangents").kernel_fn
        grad = jax.jit(jax.value_and_grad(lambda s, k=k: jnp.sum(k(targets, s, None))))
        out[f"nt convnet3 {name} + gradient"] = timed_ms(grad, support, repeats=repeats)

    class Trunk(nn.Module):
        @nn.compact
        def __call__(self, x):
            for _ in range(2):
                x = nn.relu(nn.Conv(64, (3, 3), padding="SAME", dtype=jnp.float64, param_dtype=jnp.float64)(x))
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
            return x.reshape(x.shape[0], -1)

    images = jax.random.normal(key, (256, 28, 28, 1), jnp.float64)
    params = Trunk().init(key, images[:1])
    trunk = jax.jit(jax.value_and_grad(lambda x: jnp.sum(Trunk().apply(params, x) ** 2)))
    out["flax conv trunk + gradient"] = timed_ms(trunk, images, repeats=repeats)
    x = jax.random.normal(key, (50, 64, 64, 1), jnp.float64)
    w = jax.random.normal(key, (3, 3, 1, 8), jnp.float64)
    bare = jax.jit(jax.value_and_grad(lambda a: jnp.sum(jnp.tanh(jax.lax.conv_general_dilated(
        a, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))))))
    out["bare conv, crash shape"] = timed_ms(bare, x, repeats=repeats)
    return out


def main() -> None:
    ab_main(__doc__, "float64 convolutions: routed (slices + dots) vs XLA:CPU's own", ('routed', 'xla'), _parts, width=34)


if __name__ == "__main__":
    main()
