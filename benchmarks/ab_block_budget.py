"""Diagnostic, no bar: the fast exact convnet3 NTK at several block budgets (``memory_budget_mb``),
interleaved in one process, so that each round sees the same machine load.

Modes: ``value`` (K(x1, x2)), ``gradient`` (value + gradient of sum(sin K(x1, x2)) with respect to
x2; the blocks' residuals are kept when they fit the device's allowance), ``recompute`` (the same
with the allowance 0: every block recomputed in the backward pass, as in large KIP steps).
Prints ms per image pair and the median per-round ratio to the first budget.

Usage: python benchmarks/ab_block_budget.py [--budgets 256,128] [--shape 28x28x1] [--dtype float64]
       [--mode gradient] [--block 10x20] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common import banner, median  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budgets", default="256,128", help="MiB, comma-separated; the first is the reference")
    parser.add_argument("--shape", default="28x28x1")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    parser.add_argument("--mode", choices=("value", "gradient", "recompute"), default="gradient")
    parser.add_argument("--block", default="10x20", help="n1 x n2 images")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    banner(f"fast exact convnet3 NTK, {args.dtype}, {args.shape}, {args.mode}: block budgets {args.budgets} MiB")
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from distillbench_builtin.kernels.fast_exact import build_fast_kernel_fn

    shape = tuple(int(v) for v in args.shape.split("x"))
    n1, n2 = (int(v) for v in args.block.split("x"))
    dtype = jnp.dtype(args.dtype)
    x1 = jax.random.normal(jax.random.PRNGKey(2), (n1, *shape), dtype)
    x2 = jax.random.normal(jax.random.PRNGKey(3), (n2, *shape), dtype)
    budgets = [float(b) for b in args.budgets.split(",")]
    fns = {}
    for budget in budgets:
        k = build_fast_kernel_fn("convnet3", "ntk", 2**0.5, 0.1, memory_budget_mb=budget,
                                 residual_memory_mb=0 if args.mode == "recompute" else None)
        if args.mode == "value":
            fn = jax.jit(lambda a, s, k=k: k(a, s))
        else:
            fn = jax.jit(lambda a, s, k=k: jax.value_and_grad(lambda s: jnp.sum(jnp.sin(k(a, s))))(s))
        start = time.perf_counter()
        jax.block_until_ready(fn(x1, x2))
        print(f"{budget:g} MiB: first call (compilation included) {time.perf_counter() - start:.1f} s", flush=True)
        fns[budget] = fn
    times = {b: [] for b in budgets}
    for _ in range(args.rounds):
        for budget, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(x1, x2))
            times[budget].append(time.perf_counter() - start)
    ref = times[budgets[0]]
    for budget, values in times.items():
        ratio = median([a / b for a, b in zip(values, ref)])
        print(f"{budget:8g} MiB  median {1e3 * median(values) / (n1 * n2):8.2f} ms/pair "
              f"(min {1e3 * min(values) / (n1 * n2):.2f}); median per-round ratio to {budgets[0]:g} MiB: {ratio:.3f}")


if __name__ == "__main__":
    main()
