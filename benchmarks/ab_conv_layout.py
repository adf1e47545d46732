"""Diagnostic, no bar: what writing convolutions in XLA:CPU's canonical layout
(``distillbench/compat/conv_lowering.py``) saves inside compiled loops (jax-ml/jax#12868), against
XLA's own lowering.

The rule is process-wide, so every round runs one child process per side, the sides alternating:
``canonical`` (``enable_float64()``, as every run) and ``xla`` (``jax_enable_x64`` alone). Each child
times, float32, after a first call with compilation (medians of ``--repeats`` calls, ms), a
``frepo-conv``-shaped trunk (3 x (3x3 conv, widths 32/64/128, ReLU, 2x2 average pool), a linear
readout) on 10 images of 28x28x1:

* ``20 filter-gradient steps, fori_loop``: gradient descent on the weights as one compiled loop
  (RCIG's inner steps, FRePo's pool, the ``nn`` evaluator's training);
* ``20 filter-gradient steps, unrolled``: the same steps written out (no loop: XLA's pass applies);
* ``20 image-gradient steps, fori_loop``: gradient descent on the images as one compiled loop.

Prints each side's median over rounds and the median per-round ratio canonical / xla.

Usage: python benchmarks/ab_conv_layout.py [--rounds 3] [--repeats 5]
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common import ab_main, timed_ms  # noqa: E402

STEPS = 20


def _parts(repeats: int) -> dict[str, float]:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    class Trunk(nn.Module):
        @nn.compact
        def __call__(self, x):
            for width in (32, 64, 128):
                x = nn.relu(nn.Conv(width, (3, 3), padding="SAME")(x))
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
            return nn.Dense(10)(x.reshape(x.shape[0], -1))

    key = jax.random.PRNGKey(0)
    images = jax.random.normal(key, (10, 28, 28, 1), jnp.float32)
    labels = jax.nn.one_hot(jnp.arange(10), 10)
    params = Trunk().init(key, images)

    def loss(p, x):
        return jnp.mean((Trunk().apply(p, x) - labels) ** 2)

    def weight_step(p):
        return jax.tree.map(lambda a, g: a - 1e-2 * g, p, jax.grad(loss)(p, images))

    def image_step(x):
        return x - 1e-2 * jax.grad(loss, argnums=1)(params, x)

    def unrolled(p):
        for _ in range(STEPS):
            p = weight_step(p)
        return p

    return {
        f"{STEPS} filter-gradient steps, fori_loop": timed_ms(
            jax.jit(lambda p: jax.lax.fori_loop(0, STEPS, lambda i, p: weight_step(p), p)), params, repeats=repeats),
        f"{STEPS} filter-gradient steps, unrolled": timed_ms(jax.jit(unrolled), params, repeats=repeats),
        f"{STEPS} image-gradient steps, fori_loop": timed_ms(
            jax.jit(lambda x: jax.lax.fori_loop(0, STEPS, lambda i, x: image_step(x), x)), images, repeats=repeats),
    }


def main() -> None:
    ab_main(__doc__, "convolutions in compiled loops: canonical layout vs XLA:CPU's lowering", ('canonical', 'xla'), _parts, width=40)


if __name__ == "__main__":
    main()
