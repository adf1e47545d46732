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
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common import ROOT, banner, median  # noqa: E402

MODULE = "plugins/distillbench_builtin/kernels/fast_exact.py"
HELPERS = "plugins/distillbench_builtin/kernels/blocking.py"


def _import_at(rev: str, path: str, name: str):
    """The file ``path`` as it was at ``rev``, imported as module ``name``."""
    source = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    file = os.path.join(tempfile.mkdtemp(), f"{name}.py")
    with open(file, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_revision(rev: str):
    """``fast_exact`` as it was at ``rev``, imported under another name, with the blocking
    helpers it imported (``materialize``, ``map_blocks``, ...) also as they were at ``rev``.
    Its other imports (layout, devices) resolve to the working tree's."""
    from distillbench_builtin.kernels import blocking

    module = _import_at(rev, MODULE, "fast_exact_at_rev")
    helpers = _import_at(rev, HELPERS, "blocking_at_rev")
    for name, value in vars(module).items():
        if getattr(blocking, name, None) is value and hasattr(helpers, name):
            setattr(module, name, getattr(helpers, name))
    return module


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
