"""Diagnostic, no bar: distillbench's XLA:CPU flags (``distillbench/compat/xla_flags.py``) against
JAX's own defaults (``DISTILLBENCH_XLA_DEFAULTS=0``), on the parts that convolve or multiply.

XLA reads its flags once per process, so every round runs one child process per side, the two
sides alternating. Each child times (medians of ``--repeats`` calls after a first call with
compilation, in ms):

* ``rf-nngp features``: the RFAD target pass, convnet3 random features of 1280 MNIST-shaped images
  (1 network x 32 channels, the reduced RFAD setting's kernel);
* ``convnet3 train step``: one SGD step of the ``nn`` evaluator's flax network (trunk + readout,
  width 128) on 100 images, 28x28x1 and 32x32x3;
* ``convnet3 predict``: that network on 1000 images;
* ``exact NTK + gradient``: the fast exact convnet3 NTK's value and support gradient, float64,
  28x28x1, a 5x10 block (ms per image pair).

Prints each side's median over the rounds and the median of the per-round ratios
(distillbench's flags / JAX's defaults). Where the installed jaxlib gets no flag, both sides are the
same program and the ratios read ~1.

Usage: python benchmarks/ab_xla_flags.py [--rounds 3] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common import banner, median, timed_ms  # noqa: E402  (applies distillbench's flags to this process)

from distillbench.compat import xla_flags  # noqa: E402


def _convnet_parts(repeats: int) -> dict[str, float]:
    import jax
    import jax.numpy as jnp
    import optax

    from distillbench.registry import load_registry
    from distillbench_builtin.evaluators.nn import Network

    out = {}
    for shape in ((28, 28, 1), (32, 32, 3)):
        net = Network(load_registry().architecture("convnet3").trunk, 128, 10)
        x = jax.random.normal(jax.random.PRNGKey(0), (100, *shape))
        y = jax.random.normal(jax.random.PRNGKey(1), (100, 10))
        x_test = jax.random.normal(jax.random.PRNGKey(2), (1000, *shape))
        params = net.init(jax.random.PRNGKey(3), x[:1])
        tx = optax.sgd(1e-3, 0.9)

        @jax.jit
        def step(params, state):
            grads = jax.grad(lambda p: jnp.mean((net.apply(p, x) - y) ** 2))(params)
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        name = "x".join(map(str, shape))
        out[f"convnet3 train step {name}"] = timed_ms(step, params, tx.init(params), repeats=repeats)
        out[f"convnet3 predict {name}"] = timed_ms(jax.jit(lambda p: net.apply(p, x_test)), params, repeats=repeats)
    return out


def child(repeats: int) -> dict[str, float]:
    import jax
    import jax.numpy as jnp

    from distillbench.registry import load_registry
    from distillbench_builtin.kernels.exact import build_ntk
    from distillbench_builtin.kernels.random_features import build_rf_nngp

    convnet3 = load_registry().architecture("convnet3")  # as a run's registry hands it to the kernels
    images = jax.random.normal(jax.random.PRNGKey(0), (1280, 28, 28, 1))
    features = build_rf_nngp(arch=convnet3, num_networks=1, width=32).feature_fn
    out = {"rf-nngp features": timed_ms(features, images, jax.random.PRNGKey(1), repeats=repeats)}
    out.update(_convnet_parts(repeats))
    jax.config.update("jax_enable_x64", True)
    x1 = jax.random.normal(jax.random.PRNGKey(2), (5, 28, 28, 1), jnp.float64)
    x2 = jax.random.normal(jax.random.PRNGKey(3), (10, 28, 28, 1), jnp.float64)
    kernel_fn = build_ntk(arch=convnet3).kernel_fn
    both = jax.jit(lambda s: jax.value_and_grad(lambda s: jnp.sum(jnp.sin(kernel_fn(x1, s))))(s))
    out["exact NTK + gradient, per pair"] = timed_ms(both, x2, repeats=max(1, repeats // 2)) / 50
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.repeats)))
        return
    banner("XLA:CPU flags: distillbench's (compat/xla_flags.py) vs JAX's defaults")
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_flags.OPT_OUT)}
    sides = {"distillbench": dict(env), "jax defaults": dict(env, **{xla_flags.OPT_OUT: "0"})}
    flags = xla_flags.cpu_flags(sides["distillbench"], xla_flags.jaxlib_version())
    print(f"distillbench's XLA_FLAGS here: {flags or '(none: this jaxlib gets no flag)'}; "
          f"{args.rounds} rounds, {args.repeats} calls each; ms")
    results: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    for _ in range(args.rounds):
        for side, side_env in sides.items():
            out = subprocess.run([sys.executable, __file__, "--child", "--repeats", str(args.repeats)],
                                 capture_output=True, text=True, env=side_env, check=True)
            results[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'part':36} {'distillbench':>13} {'jax defaults':>13} {'ratio':>7}")
    for part in results["distillbench"][0]:
        ours = [r[part] for r in results["distillbench"]]
        theirs = [r[part] for r in results["jax defaults"]]
        ratio = median([a / b for a, b in zip(ours, theirs)])
        print(f"{part:36} {median(ours):13.2f} {median(theirs):13.2f} {ratio:7.2f}", flush=True)


if __name__ == "__main__":
    main()
