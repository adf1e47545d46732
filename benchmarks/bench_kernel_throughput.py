"""Exact kernel throughput on whatever device JAX has (GPU first): image pairs per second of the
fast convnet3 NNGP and NTK, float32 and float64, no neural-tangents needed.

For each cell the square block ``n x n`` doubles (from 16) until one call takes at least
``--min-call-s`` or ``n`` reaches ``--max-n``; pairs/s is ``n^2 / median call time`` of the last
block (first call apart: it includes the compilation). With ``memory_budget_mb=auto`` the
blocks follow the device's memory (``distillbench.devices``). No bar: the figures go to
``--json`` for benchmarks/README.md (``benchmarks/gpu_check.sh`` runs this).

Usage: python benchmarks/bench_kernel_throughput.py [--shapes 32x32x3,28x28x1] [--gets nngp,ntk]
       [--dtypes float32,float64] [--max-n 1024] [--min-call-s 0.5] [--budget-s 90] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common import banner, median  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="convnet3")
    parser.add_argument("--shapes", default="32x32x3,28x28x1")
    parser.add_argument("--gets", default="nngp,ntk")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--start-n", type=int, default=16)
    parser.add_argument("--max-n", type=int, default=1024)
    parser.add_argument("--min-call-s", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=90.0, help="stop growing blocks after this long")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    banner(f"exact {args.arch} kernel throughput (fast implementation), image pairs per second")
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    from distillbench import devices
    from distillbench.registry import load_registry
    from distillbench_builtin.kernels.exact import build_nngp, build_ntk

    info = devices.current()
    print(f"device: {info.count} x {info.kind} ({info.platform}), memory "
          f"{(info.memory_bytes or 0) / 2**30:.1f} GiB, memory_budget_mb=auto -> {devices.memory_budget_mb(info):.0f}")
    start = time.perf_counter()
    rows = []
    for shape_text in args.shapes.split(","):
        shape = tuple(int(v) for v in shape_text.split("x"))
        for dtype_name in args.dtypes.split(","):
            dtype = jnp.dtype(dtype_name)
            for get in args.gets.split(","):
                kernel_fn = (build_nngp if get == "nngp" else build_ntk)(arch=load_registry().architecture(args.arch)).kernel_fn
                fn = jax.jit(lambda a, b: kernel_fn(a, b, None))
                n, row = args.start_n, None
                while True:
                    x1 = jax.random.normal(jax.random.PRNGKey(0), (n, *shape), dtype)
                    x2 = jax.random.normal(jax.random.PRNGKey(1), (n, *shape), dtype)
                    t = time.perf_counter()
                    jax.block_until_ready(fn(x1, x2))
                    first = time.perf_counter() - t
                    times = []
                    for _ in range(args.repeats):
                        t = time.perf_counter()
                        jax.block_until_ready(fn(x1, x2))
                        times.append(time.perf_counter() - t)
                    call = median(times)
                    row = {"arch": args.arch, "get": get, "shape": shape_text, "dtype": dtype_name, "n": n,
                           "pairs": n * n, "first_call_s": first, "call_s": call, "pairs_per_s": n * n / call,
                           "us_per_pair": call / (n * n) * 1e6}
                    over = time.perf_counter() - start > args.budget_s
                    if call >= args.min_call_s or 2 * n > args.max_n or over:
                        break
                    n *= 2
                rows.append(row)
                print(f"{args.arch} {get:4s} {shape_text:8s} {dtype_name}: {row['pairs_per_s']:12.0f} pairs/s "
                      f"({row['us_per_pair']:.3g} us per pair, {n}x{n} block, {row['call_s'] * 1e3:.1f} ms per call, "
                      f"first call {row['first_call_s']:.1f} s)", flush=True)
                if time.perf_counter() - start > args.budget_s:
                    break
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": info.kind, "platform": info.platform, "jax": jax.__version__, "rows": rows}, f, indent=2)
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
