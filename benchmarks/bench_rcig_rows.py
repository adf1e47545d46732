"""What RCIG's subsampling of large supports (``objective.support_rows``, ``objective.repeats``: the
reference's ``cifar100_50`` config) buys: the memory and time of one meta step through some rows
against every row, same process, same inputs (issue 31 item 2).

Run::

    python benchmarks/bench_rcig_rows.py [--ipc 50] [--classes 10] [--width 32] [--rows 0,200,100]
        [--repeats 1] [--side 32] [--channels 3] [--steps 3]

One meta step (``rcig.meta_gradient``: 20 inner steps, the direct gradient, 20 Hessian-inverse steps,
the implicit gradient) of a support of ``ipc x classes`` random ``side x side x channels`` images on
a fresh width-``--width`` ``frepo-conv`` (softplus 60), 1024 random targets in chunks of 128, for
each value of ``--rows`` (0: every row). Memory: XLA's compiled temporaries of the jitted step
(``memory_analysis().temp_size_in_bytes``: what the device must hold besides the inputs). Time:
median of ``--steps`` executed steps (after one untimed; 0: compile only), compile apart. The per-row cost
``rcig.row_bytes`` (which ``support_rows`` unset uses with ``devices.gradient_rows``) is printed
beside.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from distillbench.components.kernels import Network
from distillbench_builtin.architectures.finite import FrepoConv
from distillbench_builtin.losses.platt import build_platt
from distillbench_builtin.objectives import rcig
from distillbench_builtin.objectives.common import SupportParams


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ipc", type=int, default=50)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--side", type=int, default=32)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--rows", default="0,200,100")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()

    n, c = args.ipc * args.classes, args.classes
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    x = jax.random.normal(keys[0], (n, args.side, args.side, args.channels))
    y = jax.nn.one_hot(jnp.arange(n) % c, c) - 1.0 / c
    xt = jax.random.normal(keys[1], (1024, args.side, args.side, args.channels))
    yt = jax.nn.one_hot(jax.random.randint(keys[2], (1024,), 0, c), c) - 1.0 / c
    module = FrepoConv(width=args.width, num_classes=c, softplus=60.0)
    params = module.init(keys[3], x[:1], train=False)["params"]
    network = Network(lambda v, x: module.apply(v, x, train=False), {"params": params}, 0, None, None)
    loss = build_platt()
    support = SupportParams(x=x, y=y, loss=loss.init(), t=None)
    l2 = 5e-4 * n
    print(f"device {jax.devices()[0].device_kind}; support {n} rows of {x.shape[1:]}, width {args.width}; "
          f"a row costs {rcig.row_bytes(network, x, y, l2) / 2**20:.2f} MiB (rcig.row_bytes)")
    print("| support_rows | repeats | step temporaries (GiB) | compile s | step s (median) |")
    print("|---:|---:|---:|---:|---:|")
    for rows in (int(r) for r in args.rows.split(",")):
        settings = rcig.Settings(l2, 20, 20, False, True, 128, rows, 0, args.repeats)

        def step(p, key):
            return rcig.meta_gradient(p, network, (xt, yt), jnp.float32(1e-3), jnp.float32(1e-2), settings, loss,
                                      c, key)[:2]

        t0 = time.perf_counter()
        compiled = jax.jit(step).lower(support, keys[0]).compile()
        compile_s = time.perf_counter() - t0
        temp = compiled.memory_analysis().temp_size_in_bytes / 2**30
        times = []
        if args.steps:
            jax.block_until_ready(compiled(support, keys[0]))
        for i in range(args.steps):
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(support, jax.random.fold_in(keys[0], i)))
            times.append(time.perf_counter() - t0)
        step = f"{statistics.median(times):.2f}" if times else "-"
        print(f"| {rows or 'all'} | {args.repeats} | {temp:.2f} | {compile_s:.1f} | {step} |", flush=True)


if __name__ == "__main__":
    main()
