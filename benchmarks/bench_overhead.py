"""Bar: steady-state step time of `objective=kip kernel=ntk kernel.arch=fc1` on digits is within
1.2x of a minimal hand-written JAX loop doing the same math, timed in the same run.

The hand-written loop: fc1 NTK from neural-tangents stax, float64 kernels, the whole training
split as targets, trace-scaled ridge 1e-6 with a Cholesky solve, 1/2-mean squared loss, Adam
(lr 0.01) on the support images, labels fixed; one jitted step, blocked only at the end.
The toolkit side is `distillbench.runner.execute` on the equivalent resolved config (what
`distillbench run` calls), whose `step_s` is also the steady-state mean after the first step.
Repeats alternate between the two; medians are compared.

Usage: python benchmarks/bench_overhead.py [--steps 300] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common import banner, median  # noqa: E402


def hand_written_kip(steps: int) -> float:
    """Seconds per steady-state step of a minimal KIP loop (first step excluded)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax.scipy.linalg import cho_factor, cho_solve

    from distillbench.compat.neural_tangents import import_neural_tangents
    from distillbench.sampling import balanced_subset
    from distillbench_builtin.datasets.digits import build_digits

    stax = import_neural_tangents().stax
    _, _, kernel_fn = stax.serial(stax.Flatten(), stax.Dense(1, 2**0.5, 0.1), stax.Relu(), stax.Dense(1, 2**0.5, 0.1))
    data = build_digits(0.2, 0, True)
    idx = balanced_subset(data.y_train, 1, 10, 0)
    onehot = lambda y: jax.nn.one_hot(y, 10, dtype=jnp.float32) - 0.1  # noqa: E731
    x_s = jnp.asarray(data.x_train[idx])
    y_s = onehot(data.y_train[idx])
    x_t, y_t = jnp.asarray(data.x_train), onehot(data.y_train)

    def loss_fn(x_s, x_t, y_t, y_s):
        xs, xt = x_s.astype(jnp.float64), x_t.astype(jnp.float64)
        k_ss, k_ts = kernel_fn(xs, xs, "ntk"), kernel_fn(xt, xs, "ntk")
        a = k_ss + 1e-6 * jnp.trace(k_ss) / k_ss.shape[0] * jnp.eye(k_ss.shape[0])
        pred = k_ts @ cho_solve(cho_factor(a, lower=True), y_s.astype(jnp.float64))
        return 0.5 * jnp.mean((y_t - pred) ** 2)

    opt = optax.adam(0.01)

    @jax.jit
    def step(x_s, opt_state, x_t, y_t, y_s):
        value, grad = jax.value_and_grad(loss_fn)(x_s, x_t, y_t, y_s)
        updates, opt_state = opt.update(grad, opt_state, x_s)
        return optax.apply_updates(x_s, updates), opt_state, value

    opt_state = opt.init(x_s)
    x_s, opt_state, value = step(x_s, opt_state, x_t, y_t, y_s)
    value.block_until_ready()
    t = time.perf_counter()
    for _ in range(steps - 1):
        x_s, opt_state, value = step(x_s, opt_state, x_t, y_t, y_s)
    value.block_until_ready()
    assert np.isfinite(float(value))
    return (time.perf_counter() - t) / (steps - 1)


def toolkit_kip(steps: int, registry) -> float:
    from distillbench.runner.execute import execute
    from distillbench.runner.plan import plan

    (config,) = plan(["objective=kip", "kernel=ntk", "kernel.arch=fc1", "loss=mse", "dataset=digits",
                      f"objective.steps={steps}"], registry).configs
    outcome = execute(config, registry)
    assert outcome.status == "done", outcome.message
    return outcome.timings["step_s"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    banner("toolkit overhead: KIP fc1 NTK step on digits vs hand-written JAX")
    import jax

    jax.config.update("jax_enable_x64", True)
    from distillbench.registry import load_registry

    registry = load_registry()
    hand, toolkit = [], []
    for _ in range(args.repeats):
        hand.append(hand_written_kip(args.steps))
        toolkit.append(toolkit_kip(args.steps, registry))
    h, k = median(hand), median(toolkit)
    print(f"steps per repeat: {args.steps}, repeats: {args.repeats}, backend: {jax.default_backend()}")
    print(f"hand-written  ms/step: {', '.join(f'{1e3 * v:.3f}' for v in hand)}; median {1e3 * h:.3f}")
    print(f"distillbench  ms/step: {', '.join(f'{1e3 * v:.3f}' for v in toolkit)}; median {1e3 * k:.3f}")
    ratio = k / h
    print(f"ratio distillbench / hand-written: {ratio:.3f} (bar <= 1.2)")
    print("PASS" if ratio <= 1.2 else "FAIL")
    sys.exit(0 if ratio <= 1.2 else 1)


if __name__ == "__main__":
    main()
