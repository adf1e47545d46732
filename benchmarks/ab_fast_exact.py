"""Diagnostic, no bar: the fast exact kernels of the working tree against those of a git revision,
interleaved in one process (float64, convnet3 NTK or NNGP, 28x28x1).

On a shared machine two separate runs differ by up to ~30%; calls alternating between the two
versions in one process see the same load, so the median of the per-round ratios is the figure to
trust. Both versions are compiled before timing starts; results are compared (max rel diff).

Modes: ``value`` (K(x1, x2)), ``gradient`` (value + gradient of sum(sin K(x1, x2)) with respect to
x2, what KIP needs of K(targets, support)), ``symmetric`` (the same for K(x2, x2), K(support,
support)).

Usage: python benchmarks/ab_fast_exact.py --rev HEAD~1 [--mode gradient] [--kernel ntk] [--rounds 9]
       [--block 10x20]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common import ROOT, banner, median  # noqa: E402

PACKAGE = "distillbench_builtin"


def load_revision(rev: str):
    """``fast_exact`` as it was at ``rev``, with every module of the built-in plugin it imports
    (``fast_relu``, ``fast_layers``, ``blocking``, ...) as it was at ``rev`` too: the plugin package
    of ``rev`` is exported to a temporary folder and imported in place of the working tree's, then
    the working tree's modules are put back (the revision's functions keep their own references).
    Its imports of ``distillbench`` itself resolve to the working tree's."""
    folder = tempfile.mkdtemp()
    archive = subprocess.run(["git", "archive", rev, f"plugins/{PACKAGE}"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    ours = {k: v for k, v in sys.modules.items() if k == PACKAGE or k.startswith(PACKAGE + ".")}
    for name in ours:
        del sys.modules[name]
    sys.path.insert(0, os.path.join(folder, "plugins"))
    try:
        return importlib.import_module(f"{PACKAGE}.kernels.fast_exact")
    finally:
        sys.path.remove(os.path.join(folder, "plugins"))
        for name in [k for k in sys.modules if k == PACKAGE or k.startswith(PACKAGE + ".")]:
            del sys.modules[name]
        sys.modules.update(ours)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rev", required=True, help="git revision to compare with, e.g. HEAD~1")
    parser.add_argument("--mode", choices=("value", "gradient", "symmetric"), default="gradient")
    parser.add_argument("--kernel", choices=("ntk", "nngp"), default="ntk")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--block", default="10x20", help="n1 x n2 images")
    args = parser.parse_args()
    banner(f"fast exact convnet3 {args.kernel.upper()}, float64, 28x28x1, {args.mode}: working tree vs {args.rev}")
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from distillbench_builtin.kernels import fast_exact

    n1, n2 = (int(v) for v in args.block.split("x"))
    x1 = jax.random.normal(jax.random.PRNGKey(2), (n1, 28, 28, 1), jnp.float64)
    x2 = jax.random.normal(jax.random.PRNGKey(3), (n2, 28, 28, 1), jnp.float64)
    pairs = n2 * (n2 - 1) // 2 if args.mode == "symmetric" else n1 * n2
    fns, outs = {}, {}
    for name, module in ((args.rev, load_revision(args.rev)), ("working tree", fast_exact)):
        k = module.build_fast_kernel_fn("convnet3", args.kernel, 2**0.5, 0.1)
        if args.mode == "value":
            fn = jax.jit(lambda a, s, k=k: k(a, s))
        elif args.mode == "gradient":
            fn = jax.jit(lambda a, s, k=k: jax.value_and_grad(lambda s: jnp.sum(jnp.sin(k(a, s))))(s))
        else:
            fn = jax.jit(lambda a, s, k=k: jax.value_and_grad(lambda s: jnp.sum(jnp.sin(k(s, s))))(s))
        start = time.perf_counter()
        outs[name] = jax.block_until_ready(fn(x1, x2))
        print(f"{name}: first call (compilation included) {time.perf_counter() - start:.1f} s")
        fns[name] = fn
    old, new = (jax.tree.leaves(o) for o in outs.values())
    diff = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) for a, b in zip(new, old))
    times = {name: [] for name in fns}
    for _ in range(args.rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(x1, x2))
            times[name].append(1e3 * (time.perf_counter() - start) / pairs)
    base = times[args.rev]
    for name, ts in times.items():
        ratio = median([t / b for t, b in zip(ts, base)])
        print(f"{name:14} median {median(ts):7.2f} ms/pair (min {min(ts):.2f}); "
              f"median per-round ratio to {args.rev}: {ratio:.3f}")
    print(f"max rel diff of the results: {diff:.1e}")


if __name__ == "__main__":
    main()
