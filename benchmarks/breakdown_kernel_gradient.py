"""Diagnostic, no bar: where the exact convnet3 NTK's value + support gradient spends its time
(float64, 28x28x1), per image pair, fast implementation only.

Rows, each timed alone (median of --repeats calls after a first call with compilation):
  first layer, values        the pooled first layer's fused loop (``fast_first_layer.first_layer_fn``) on B pairs
  first layer, + VJP         the same with its custom VJP (a random cotangent)
  one block, values          first layer + later layers + readout (``fast_layers.conv_pairs``) on B pairs
  one block, + VJP           the same with reverse mode through every layer
  kernel, values             ``kernel_fn(x1, x2)`` on an n1 x n2 block (self pass, blocks, lax.map)
  kernel, + support gradient ``value_and_grad`` of sum(sin K) with respect to x2 (what KIP needs)

The difference between the last two and the block rows is the blocking's cost: the self pass,
``lax.map``, and, when the blocks' residuals do not fit in the device's allowance
(``distillbench.devices.residual_memory_mb``; a 10x20 block's do), the recomputation of each
block's forward under ``jax.checkpoint`` in the backward pass.

Usage: python benchmarks/breakdown_kernel_gradient.py [--pairs 16] [--block 10x20] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common import banner, median  # noqa: E402


def timed(fn, *args, repeats: int) -> tuple[float, float]:
    """(median wall seconds, median process CPU seconds) per steady-state call."""
    import jax

    jax.block_until_ready(fn(*args))
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(*args))
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return median(wall), median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=16, help="B, image pairs of the block rows")
    parser.add_argument("--block", default="10x20", help="n1 x n2 of the kernel rows")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    banner("exact convnet3 NTK, float64, 28x28x1: value + support gradient, per part")
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from distillbench_builtin.kernels.fast_first_layer import first_layer_fn, scaled_patches
    from distillbench_builtin.kernels.fast_layers import conv_pairs, conv_plan
    from distillbench.registry import load_registry
    from distillbench_builtin.kernels.exact import build_ntk

    b, bsq, w2 = args.pairs, 0.1**2, 2.0
    x = jax.random.normal(jax.random.PRNGKey(0), (2 * b, 28, 28, 1), jnp.float64)
    plan = conv_plan("convnet3", (28, 28, 1))
    p = scaled_patches(x, w2**0.5, True)
    found = conv_pairs(p, p, None, None, plan, w2, bsq, True, True)[2]
    pa, pb = p[:b], p[b:]
    va, vb = [v[:b] for v in found], [v[b:] for v in found]
    first = first_layer_fn(bsq, False, True)
    ct = jax.random.normal(jax.random.PRNGKey(1), (b, 196, 196), jnp.float64)

    def block(pa, pb):
        nngp, ntk, _ = conv_pairs(pa, pb, va, vb, plan, w2, bsq, True, False)
        return ntk

    n1, n2 = (int(v) for v in args.block.split("x"))
    x1 = jax.random.normal(jax.random.PRNGKey(2), (n1, 28, 28, 1), jnp.float64)
    x2 = jax.random.normal(jax.random.PRNGKey(3), (n2, 28, 28, 1), jnp.float64)
    kernel_fn = build_ntk(arch=load_registry().architecture("convnet3")).kernel_fn
    rows = [
        ("first layer, values", b, jax.jit(first), (pa, pb)),
        ("first layer, + VJP", b, jax.jit(jax.grad(lambda a, c: sum(jnp.sum(o * ct) for o in first(a, c)),
                                                   argnums=1)), (pa, pb)),
        ("one block, values", b, jax.jit(block), (pa, pb)),
        ("one block, + VJP", b, jax.jit(jax.grad(lambda a, c: jnp.sum(jnp.sin(block(a, c))), argnums=1)), (pa, pb)),
        ("kernel, values", n1 * n2, jax.jit(lambda a, c: kernel_fn(a, c)), (x1, x2)),
        ("kernel, + support gradient", n1 * n2,
         jax.jit(lambda a, c: jax.value_and_grad(lambda s: jnp.sum(jnp.sin(kernel_fn(a, s))))(c)), (x1, x2)),
    ]
    print(f"backend: {jax.default_backend()}; B = {b} pairs (block rows), kernel rows {n1}x{n2}; "
          f"medians of {args.repeats} calls; ms per image pair")
    print(f"{'part':28} {'wall':>9} {'CPU':>9}")
    for name, pairs, fn, fn_args in rows:
        wall, cpu = timed(fn, *fn_args, repeats=args.repeats)
        print(f"{name:28} {1e3 * wall / pairs:9.2f} {1e3 * cpu / pairs:9.2f}", flush=True)


if __name__ == "__main__":
    main()
