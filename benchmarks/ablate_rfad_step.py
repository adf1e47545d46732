"""Where the reduced RFAD step's time goes: the step with parts of its work taken out (issue #6).

Not a valid RFAD step and no bar: a diagnostic for the reduced setting of ``bench_rfad_step.py``
(1 network x 32 channels, 1280 targets, convnet3, 28x28x1, 1 image per class). Variants:

* ``full``: the step ``distillbench run`` takes;
* ``no-sampling``: the first 1280 training images every step instead of a uniform sample
  without replacement (``distillbench.sampling.sample_without_replacement``: two sorts of 6000
  words);
* ``no-conv1``: the first conv's arithmetic replaced by a broadcast of the input (its output is
  still written, so the memory traffic stays);
* ``neither``: both.

What is left in ``neither`` is mostly the two 32-channel convolutions (Eigen), whose flops set the
compute floor that ``bench_rfad_step.py`` reports. Every variant is compiled once in the same
process; repeats of ``--steps`` steps alternate between them; medians are printed.

Usage: python benchmarks/ablate_rfad_step.py [--repeats 5] [--steps 20]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common import banner, median  # noqa: E402

VARIANTS = {"full": (), "no-sampling": ("sampling",), "no-conv1": ("conv1",), "neither": ("sampling", "conv1")}


@contextlib.contextmanager
def without(parts):
    """Trace-time replacements for the parts taken out (restored on exit)."""
    import jax.numpy as jnp

    import distillbench_builtin.kernels.random_features as rf
    import distillbench.sampling as sampling  # RFAD's uniform target sampler calls it at trace time

    saved_sampler, saved_block = sampling.sample_without_replacement, rf._conv_block
    if "sampling" in parts:
        sampling.sample_without_replacement = lambda key, n, k: jnp.arange(k, dtype=jnp.int32)
    if "conv1" in parts:
        def block(h, kernel, bias, pool):
            if h.shape[3] > rf.FUSED_CONV_MAX_CHANNELS:
                return saved_block(h, kernel, bias, pool)
            n, height, width, _ = h.shape
            shape = (n, height // 2, width // 2, kernel.shape[-1])
            return jnp.broadcast_to(h[:, ::2, ::2, :] * kernel[0, 0, 0] + bias, shape)
        rf._conv_block = block
    try:
        yield
    finally:
        sampling.sample_without_replacement, rf._conv_block = saved_sampler, saved_block


def compiled_step(parts, registry, config, train, data):
    """The objective's step for ``config``, traced with ``parts`` taken out, and its first state."""
    import jax

    from distillbench.components.objectives import Problem

    def build(kind):
        choice = config.choice(kind)
        return registry.instantiate(kind, choice.name, choice.as_dict())

    with without(parts):
        problem = Problem(data, config.ipc, build("kernel"), build("loss"), config.seed)
        distiller = build("objective")(problem)
        init_key, step_key = jax.random.split(jax.random.PRNGKey(config.seed))
        state = distiller.init(init_key)
        step = jax.jit(lambda s, t, k, i: distiller.step(s, t, jax.random.fold_in(k, i)))
        step = step.lower(state, train, step_key, 0).compile()
    state, value = step(state, train, step_key, 0)
    value.block_until_ready()
    return step, state, step_key


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    banner("RFAD reduced step with parts taken out (diagnostic, no bar)")
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    from bench_rfad_step import toolkit_config

    from distillbench.components.objectives import TrainData
    from distillbench.krr import centered_one_hot
    from distillbench.registry import load_registry

    registry = load_registry()
    config = toolkit_config("reduced", args.steps, registry)
    choice = config.choice("dataset")
    data = registry.instantiate("dataset", choice.name, choice.as_dict())
    train = TrainData(x=jnp.asarray(data.x_train), y=centered_one_hot(jnp.asarray(data.y_train), data.num_classes),
                      labels=jnp.asarray(data.y_train, dtype=jnp.int32))
    runs = {name: list(compiled_step(parts, registry, config, train, data)) for name, parts in VARIANTS.items()}
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            step, state, key = run
            t = time.perf_counter()
            for i in range(1, args.steps + 1):
                state, value = step(state, train, key, i)
            value.block_until_ready()
            times[name].append((time.perf_counter() - t) / args.steps)
            run[1] = state
    print(f"\nms per step, {args.repeats} alternating repeats of {args.steps} steps:")
    for name, values in times.items():
        print(f"  {name:12s} {', '.join(f'{1e3 * v:.1f}' for v in values)}; median {1e3 * median(values):.2f}")


if __name__ == "__main__":
    main()
