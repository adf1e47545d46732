"""The ``nn`` evaluator's training step per architecture (issue 30 item 7): one full-batch SGD step
on a support set, compiled once (the evaluator's own ``_program``), on this machine.

Run::

    python benchmarks/bench_nn_step.py [--ipc 10] [--steps 20] [--augment none|flip|dsa]

Support: ``ipc`` x 10 classes of random 28x28x1 images (MNIST's shape; the step's time does not
depend on the pixels), centred one-hot labels, the evaluator's defaults (lr 1e-3, momentum 0.9,
centering, alpha 2). Per architecture, at the width of the paper that defines it: compile + first
step, then the median (min, max) of ``--steps`` steps, each blocked until ready. No bar: figures.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common import banner, median  # noqa: E402

#: (architecture, width, normalization): convnet3 as the RFAD reference trains it, then DC's networks.
NETWORKS = (
    ("convnet3", 128, "none"),
    ("convnet-dc", 128, "instance"),
    ("alexnet", 128, "none"),
    ("vgg11", 64, "instance"),
    ("resnet18", 64, "batch"),
)


def time_step(name: str, width: int, normalization: str, ipc: int, steps: int, augment: str):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from distillbench.krr import centered_one_hot
    from distillbench.registry import load_registry
    from distillbench_builtin.evaluators.nn import _net, _program, make_optimizer

    arch = load_registry().instantiate("architecture", name, {})
    rng = np.random.default_rng(0)
    x_s = jnp.asarray(rng.standard_normal((ipc * 10, 28, 28, 1)).astype(np.float32))
    y_s = centered_one_hot(jnp.asarray(np.repeat(np.arange(10), ipc)), 10).astype(jnp.float32)
    tx = make_optimizer("sgd", 1e-3, 0.9, "constant", 0, steps)
    program = _program(_net(arch, width, 10, normalization, x_s), y_s, tx, 2.0, True, 500, augment, x_s)
    w0 = program.init(jax.random.PRNGKey(0))
    w, state = w0, program.start(w0[0])
    key = jax.random.PRNGKey(1) if program.augmented else None
    t = time.perf_counter()
    w, state, stats0 = jax.block_until_ready(program.sgd_step(w, state, w0, key))
    first = time.perf_counter() - t
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        w, state, stats0 = jax.block_until_ready(program.sgd_step(w, state, w0, key))
        times.append(time.perf_counter() - t)
    return first, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--augment", default="none", choices=("none", "flip", "dsa"))
    parser.add_argument("--only", default="", help="comma-separated architectures")
    args = parser.parse_args()
    banner("nn evaluator: one SGD step per architecture")
    print(f"{args.ipc * 10} images 28x28x1, augment {args.augment}, {args.steps} timed steps each\n")
    print("| architecture | width | normalization | compile + first step, s | step, ms: median (min-max) |")
    print("|---|---|---|---|---|")
    for name, width, normalization in NETWORKS:
        if args.only and name not in args.only.split(","):
            continue
        first, times = time_step(name, width, normalization, args.ipc, args.steps, args.augment)
        print(f"| {name} | {width} | {normalization} | {first:.1f} | {1e3 * median(times):.1f} "
              f"({1e3 * min(times):.1f}-{1e3 * max(times):.1f}) |", flush=True)


if __name__ == "__main__":
    main()
