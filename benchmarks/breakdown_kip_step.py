"""Where KIP's step spends its time: the step ``distillbench run objective=kip`` compiles, and its
parts compiled on their own, timed interleaved in one process (no bar: a diagnostic).

Parts (each its own jitted function on the same inputs as the step):

* ``step``: the whole compiled step (``runner.pipeline.compiled_step``, state donated);
* ``sample``: the class-balanced target draw and gather (``sampling.class_balanced``);
* ``kernels``: ``K_SS`` and ``K_TS`` forward in the kernel dtype;
* ``loss``: the KRR loss forward (kernels, float64 Cholesky solve, MSE);
* ``value+grad``: the loss and its gradient with respect to what the step differentiates;
* ``value+grad x,y``: the same, differentiating the fixed labels too (what the step did before);
* ``adam``: the optax update of the support and its application;
* ``dots``: the two big products alone (``X_T X_S^T`` forward, ``G^T X_T`` backward), the floor;
* ``reference``: the transcribed notebook step (``bench_kip_vs_reference.py``) on device targets.

Each part's minor page faults per call are counted (``getrusage``): memory the allocator gave
back to the kernel and took again. ``--malloc default`` runs without ``pipeline.keep_freed_memory``.
It also lists the compiled step's HLO ops that touch the target batch (dots, sorts, gathers,
LAPACK custom calls) from ``compiled.as_text()``.

Usage: python benchmarks/breakdown_kip_step.py [--setting fc1-f64-10] [--repeats 15]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bench_kip_vs_reference import LR, REG, SETTINGS, dataset_args  # noqa: E402
from common import banner, median  # noqa: E402


def build(setting, registry):
    """The run's pieces for ``setting``: data, train arrays, distiller, state and kernel/loss."""
    import jax

    from distillbench.runner import pipeline
    from distillbench.runner.plan import plan

    args = ["objective=kip", "kernel=ntk", f"kernel.arch={setting.arch}", f"ipc={setting.ipc}", "loss=mse",
            f"objective.target_batch={setting.targets}", f"objective.lr={LR}", f"objective.reg={REG}",
            f"objective.dtype={setting.dtype}", *dataset_args(setting.small)]
    (config,) = plan(args, registry).configs
    loaded = pipeline.load_data(config, registry, pipeline.DataCache())
    built = pipeline.build_components(config, registry, loaded.data)
    train = pipeline.train_data(loaded.data)
    init_key, step_key = jax.random.split(jax.random.PRNGKey(config.seed))
    return loaded.data, train, built, built.distiller.init(init_key), step_key


def parts(setting, data, train, built, state, step_key):
    """``{name: thunk}``: each thunk runs one compiled part on the step's inputs."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from distillbench.runner import pipeline
    from distillbench.sampling import class_balanced
    from distillbench_builtin.objectives.common import Optimizer, krr_loss, make_optimizer

    dtype = jnp.float64 if setting.dtype == "float64" else jnp.float32
    sampler = class_balanced(data.y_train, data.num_classes, setting.targets)
    table = sampler.init()
    targets = jax.jit(sampler.sample)(table, train, step_key)
    kernel, loss, p = built.kernel, built.loss, state.params

    def objective(params, xt, yt):
        return krr_loss(params, xt, yt, None, kernel=kernel, loss=loss, reg=REG, dtype=dtype)

    def frozen_labels(params, xt, yt):
        return objective(params._replace(y=jax.lax.stop_gradient(params.y)), xt, yt)

    tx = make_optimizer(Optimizer(optax.adam(LR)), {})
    opt = tx.init(p)
    grads = jax.jit(jax.grad(frozen_labels))(p, targets.x, targets.y)
    xt = targets.x.reshape(len(targets.x), -1).astype(dtype)
    xs = p.x.reshape(len(p.x), -1).astype(dtype)
    g = jnp.ones((len(xt), len(xs)), dtype)
    step = pipeline.compiled_step(built.distiller, state, train, step_key)
    fns = {
        "sample": (jax.jit(sampler.sample), (table, train, step_key)),
        "kernels": (jax.jit(lambda x, t: (kernel.kernel_fn(x, x), kernel.kernel_fn(t, x))),
                    (p.x.astype(dtype), targets.x.astype(dtype))),
        "loss": (jax.jit(objective), (p, targets.x, targets.y)),
        "value+grad": (jax.jit(jax.value_and_grad(frozen_labels)), (p, targets.x, targets.y)),
        "value+grad x,y": (jax.jit(jax.value_and_grad(objective)), (p, targets.x, targets.y)),
        "adam": (jax.jit(lambda gr, o, pr: optax.apply_updates(pr, tx.update(gr, o, pr)[0])), (grads, opt, p)),
        "dots": (jax.jit(lambda a, b, c: (a @ b.T, c.T @ a)), (xt, xs, g)),
    }
    thunks = {"step": lambda: step(pipeline._own_buffers(state), train, step_key, np.int32(1))}
    thunks.update({name: (lambda f=f, a=a: f(*a)) for name, (f, a) in fns.items()})
    return thunks, step


def hlo_summary(compiled) -> list[str]:
    """The compiled step's ops by kind, and the dots / sorts / gathers / LAPACK calls with shapes."""
    text = compiled.as_text()
    entry = text[text.index("\nENTRY"):]
    kinds = collections.Counter(re.findall(r"= \S+ ([a-z][\w-]*)\(", text))
    lines = ["ops in the module: " + ", ".join(f"{k} {n}" for k, n in kinds.most_common(12))]
    for line in text.splitlines():
        m = re.search(r"= (\S+) (dot|sort|gather|custom-call)\(", line)
        if m:
            target = re.search(r'custom_call_target="(\w+)"', line)
            lines.append(f"  {m.group(2)} -> {m.group(1)}" + (f" ({target.group(1)})" if target else ""))
    lines.append(f"entry computation: {entry.count(chr(10))} lines")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--setting", default="fc1-f64-10", choices=[s.name for s in SETTINGS])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--malloc", choices=("kept", "default"), default="kept",
                        help="kept: pipeline.keep_freed_memory() as a run sets it; default: glibc's own")
    args = parser.parse_args()
    banner("KIP step breakdown: the compiled step and its parts, interleaved")
    import jax

    from bench_kip_vs_reference import reference_parts
    from distillbench.registry import load_registry
    from distillbench.compat import conv_lowering
    from distillbench.runner.pipeline import enable_float64

    if args.malloc == "kept":
        enable_float64()  # keep_freed_memory() first, before JAX starts its threads, as a run does
    else:
        jax.config.update("jax_enable_x64", True)
        conv_lowering.install()
    setting = next(s for s in SETTINGS if s.name == args.setting)
    data, train, built, state, step_key = build(setting, load_registry())
    thunks, step = parts(setting, data, train, built, state, step_key)
    thunks.update(reference_parts(setting, data, state.params.x, state.params.y))
    for thunk in thunks.values():
        jax.block_until_ready(thunk())
    times, faults = {name: [] for name in thunks}, {name: 0 for name in thunks}
    for r in range(args.repeats):
        for name, thunk in (thunks.items() if r % 2 == 0 else reversed(thunks.items())):
            f, t = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
            jax.block_until_ready(thunk())
            times[name].append(time.perf_counter() - t)
            faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f
    full = median(times["step"])
    print(f"{setting.name}: {len(data.y_train)} train images {data.x_train.shape[1:]}, {setting.ipc} ipc, "
          f"{setting.targets} targets, {setting.dtype}; malloc {args.malloc}; {args.repeats} repeats, medians (min)")
    for name, values in times.items():
        print(f"  {name:24} {1e3 * median(values):8.1f} ms ({1e3 * min(values):6.1f})  "
              f"{100 * median(values) / full:5.0f}% of the step, {faults[name] / args.repeats:7.0f} page faults")
    print("\n".join(hlo_summary(step)))


if __name__ == "__main__":
    main()
