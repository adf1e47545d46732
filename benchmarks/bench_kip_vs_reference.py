"""KIP's step against the KIP reference notebook's, same run, same problem, same starting images.

The reference is a transcription of the step of ``kip/KIP.ipynb`` (google-research/google-research;
checked against the notebook's code cells at commit 077b0ff: ``make_loss_acc_fn``,
``get_update_functions``, ``class_balanced_sample``; the notebook gates the label gradient with
``lax.cond(LEARN_LABELS, ...)`` and passes ``params`` to its jitted ``update_fn``, which computes
the same thing; ``benchmarks/cross_reference.py --method kip`` runs the notebook's own cells end
to end): the architecture's neural-tangents stax ``kernel_fn`` (``get='ntk'``,
the very stax network distillbench's architecture defines: for fc1 Flatten, Dense, Relu, Dense,
NTK parameterisation, W_std sqrt(2), b_std 0.1), the KRR MSE loss ``½·mean((K_TS (K_SS + λI)^-1
y_S − y_T)²)`` with the ridge ``λ = reg · tr(K_SS)/n_S`` and ``scipy.linalg.solve(..., assume_a='pos')``,
labels stopped (not learned), one jitted ``value_and_grad`` + ``jax.example_libraries.optimizers``
``adam(lr)`` update per step, and the targets sampled on the host each step with numpy
(class-balanced, ``target_batch // C`` per class, without replacement) from float arrays in the
setting's dtype (the notebook's standardised numpy data).

distillbench's side is the step ``distillbench run objective=kip kernel=ntk ...`` compiles
(``runner.pipeline.distill``: AOT compiled, state donated, run by the pipeline's own steady loop,
which syncs at its fixed check points only, with the allocator setting ``distill`` makes). The
reference runs in a child process with the same JAX configuration and glibc's default malloc, as
a user's notebook would. Both sides run ``--steps`` steps per block and block at the end; blocks
alternate (one side at a time; order swapped every round); the per-step figure is the median of
the blocks. Compilation (first call) is timed apart.

Data: ``mnist-t10k`` when ``DISTILLBENCH_DATA_DIR`` holds it (MNIST test set, 8000 train images),
else the embedded ``digits``. Settings: see ``SETTINGS`` (bar: ratio distillbench / reference).

Usage: python benchmarks/bench_kip_vs_reference.py [--rounds 7] [--steps 10] [--only fc1-f64-10]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import NamedTuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common import banner, finish, median, prepared_run  # noqa: E402

LR, REG = 0.04, 1e-6


class Setting(NamedTuple):
    name: str
    arch: str
    dtype: str
    ipc: int
    targets: int
    bar: float
    small: bool = False  # on digits (8x8) whatever the data dir holds


SETTINGS = (
    Setting("fc1-f64-10", "fc1", "float64", 10, 5000, 0.7),
    Setting("fc1-f32-10", "fc1", "float32", 10, 5000, 1.0),
    Setting("fc1-f64-1", "fc1", "float64", 1, 5000, 1.0),
    Setting("fc1-f64-50", "fc1", "float64", 50, 5000, 1.0),
    Setting("convnet3-f64-1", "convnet3", "float64", 1, 200, 1.0, small=True),
    Setting("convnet3-f32-1", "convnet3", "float32", 1, 200, 1.0, small=True),
)


def dataset_args(small: bool) -> list[str]:
    root = os.environ.get("DISTILLBENCH_DATA_DIR", "")
    if not small and os.path.exists(os.path.join(root, "mnist", "t10k-images-idx3-ubyte.gz")):
        return ["dataset=mnist-t10k"]
    return ["dataset=digits"]


def distillbench_side(setting: Setting, steps: int):
    """The run's data, its compiled step and first state, and ``block()`` timing ``steps`` steps
    through the pipeline's steady loop (seconds per step)."""
    import numpy as np

    from distillbench.runner import pipeline
    from distillbench.runner.reporter import Reporter

    args = ["objective=kip", "kernel=ntk", f"kernel.arch={setting.arch}", f"ipc={setting.ipc}", "loss=mse",
            f"objective.target_batch={setting.targets}", f"objective.lr={LR}", f"objective.reg={REG}",
            f"objective.dtype={setting.dtype}", f"objective.steps={steps + 1}", *dataset_args(setting.small)]
    run = prepared_run(args)
    train, distiller, state0, step_key = run.train, run.distiller, run.state0, run.step_key
    t = time.perf_counter()
    step = pipeline.compiled_step(distiller, state0, train, step_key)
    compile_s = time.perf_counter() - t
    state, value = step(pipeline._own_buffers(state0), train, step_key, np.int32(0))  # donated
    first = float(value)
    progress = pipeline.Progress(Reporter())

    def block() -> float:
        start = pipeline._own_buffers(state)  # each block donates its own copy
        end, seconds = pipeline._steady_loop(step, start, train, step_key, steps + 1, first, progress,
                                             distiller.stopped)
        return seconds / steps

    return run.data, state0, compile_s, block


def reference_step(setting: Setting, data, x0, y0):
    """The transcribed notebook step: ``(update_fn, opt_state, sample)``; ``sample()`` draws the
    step's targets on the host with numpy, ``update_fn(i, opt_state, x_T, y_T)`` is the jitted step."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.example_libraries import optimizers

    from distillbench_builtin.architectures.networks import stax_network

    dtype = np.float64 if setting.dtype == "float64" else np.float32
    _, _, kernel_fn = stax_network(setting.arch)
    kernel = jax.jit(lambda a, b: kernel_fn(a, b, "ntk"))
    c = data.num_classes
    x_train = np.asarray(data.x_train, dtype)
    y_train = (np.eye(c) - 1.0 / c)[data.y_train].astype(dtype)
    members = [np.flatnonzero(data.y_train == k) for k in range(c)]
    per_class = min(max(1, setting.targets // c), min(len(m) for m in members))
    rng = np.random.default_rng(0)

    def sample():
        idx = np.concatenate([rng.choice(m, per_class, replace=False) for m in members])
        return x_train[idx], y_train[idx]

    def loss_fn(params, x_target, y_target):
        x_support, y_support = params["x"], jax.lax.stop_gradient(params["y"])
        k_ss, k_ts = kernel(x_support, x_support), kernel(x_target, x_support)
        k_ss_reg = k_ss + REG * jnp.trace(k_ss) * jnp.eye(k_ss.shape[0], dtype=k_ss.dtype) / k_ss.shape[0]
        pred = jnp.dot(k_ts, jax.scipy.linalg.solve(k_ss_reg, y_support, assume_a="pos"))
        return 0.5 * jnp.mean((pred - y_target) ** 2), jnp.mean(jnp.argmax(pred, 1) == jnp.argmax(y_target, 1))

    opt_init, opt_update, get_params = optimizers.adam(LR)

    @jax.jit
    def update_fn(i, opt_state, x_target, y_target):
        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(get_params(opt_state), x_target, y_target)
        return opt_update(i, grads, opt_state), loss, acc

    opt_state = opt_init({"x": jnp.asarray(np.asarray(x0, dtype)), "y": jnp.asarray(np.asarray(y0, dtype))})
    return update_fn, opt_state, sample


def reference_side(setting: Setting, data, x0, y0, steps: int):
    """The notebook's loop: ``(compile seconds, block() -> seconds per step)``, targets drawn each step."""
    import jax

    update_fn, opt_state, sample = reference_step(setting, data, x0, y0)
    t = time.perf_counter()
    jax.block_until_ready(update_fn(0, opt_state, *sample()))
    compile_s = time.perf_counter() - t

    def block() -> float:
        state, loss = opt_state, None
        t = time.perf_counter()
        for i in range(steps):
            state, loss, _ = update_fn(i, state, *sample())
        jax.block_until_ready((state, loss))
        return (time.perf_counter() - t) / steps

    return compile_s, block


def reference_parts(setting: Setting, data, x0, y0) -> dict:
    """Thunks for ``breakdown_kip_step.py``: the reference step on device targets, its host draw."""
    import jax.numpy as jnp

    update_fn, opt_state, sample = reference_step(setting, data, x0, y0)
    xt, yt = (jnp.asarray(a) for a in sample())
    return {"reference step": lambda: update_fn(0, opt_state, xt, yt), "reference host draw": sample}


class Data(NamedTuple):
    """What the reference needs of the dataset (sent to its process)."""

    x_train: object
    y_train: object
    num_classes: int


def _reference_process(conn, setting: Setting, data: Data, x0, y0, steps: int) -> None:
    """The reference's own process: same JAX configuration as distillbench's (x64, float64
    convolutions routed, XLA flags), glibc's default malloc; runs a block per request."""
    import jax

    from distillbench.compat import conv_lowering

    jax.config.update("jax_enable_x64", True)
    conv_lowering.install()
    compile_s, block = reference_side(setting, data, x0, y0, steps)
    conn.send(compile_s)
    while conn.recv() == "block":
        conn.send(block())


def measure(setting: Setting, rounds: int, steps: int) -> dict:
    """Medians of alternating blocks: the reference in a child process (so that distillbench's
    process-wide allocator setting, ``pipeline.keep_freed_memory``, does not reach it), distillbench
    here (``enable_float64`` set it before JAX started, as in a run)."""
    import multiprocessing

    import numpy as np

    data, state0, db_compile, db_block = distillbench_side(setting, steps)
    parent, child = multiprocessing.get_context("spawn").Pipe()
    sent = Data(np.asarray(data.x_train), np.asarray(data.y_train), int(data.num_classes))
    proc = multiprocessing.get_context("spawn").Process(
        target=_reference_process, args=(child, setting, sent, np.asarray(state0.params.x),
                                         np.asarray(state0.params.y), steps), daemon=True)
    proc.start()
    ref_compile = parent.recv()

    def ref_block() -> float:
        parent.send("block")
        return parent.recv()

    times = {"ref": [], "db": []}
    try:
        for r in range(rounds):
            order = (("ref", ref_block), ("db", db_block)) if r % 2 == 0 else (("db", db_block), ("ref", ref_block))
            for name, block in order:
                times[name].append(block())
    finally:
        parent.send("stop")
        proc.join(60)
    ref, db = median(times["ref"]), median(times["db"])
    ratios = [d / f for d, f in zip(times["db"], times["ref"])]
    return dict(ref=ref, db=db, ratio=db / ref, ratio_range=(min(ratios), max(ratios)), ref_compile=ref_compile,
                db_compile=db_compile, n=len(data.y_train), shape=tuple(data.x_train.shape[1:]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7, help="alternating blocks per side")
    parser.add_argument("--steps", type=int, default=10, help="steps per block")
    parser.add_argument("--only", default="", help="comma-separated setting names (default: all)")
    args = parser.parse_args()
    banner("KIP step: distillbench vs the transcribed KIP notebook step (same run, interleaved)")
    from distillbench.runner.pipeline import enable_float64

    enable_float64()
    chosen = [s for s in SETTINGS if not args.only or s.name in args.only.split(",")]
    print(f"rounds {args.rounds} x {args.steps} steps per side, medians of the per-block step times; "
          f"Adam lr {LR}, reg {REG}, labels fixed", flush=True)
    rows, ok = [], True
    for s in chosen:
        m = measure(s, args.rounds, args.steps)
        passed = m["ratio"] <= s.bar
        ok &= passed
        rows.append((s, m, passed))
        print(f"  {s.name}: {m['n']} train images {m['shape']}, {s.ipc} ipc, {s.targets} targets, {s.dtype}: "
              f"reference {1e3 * m['ref']:.1f} ms, distillbench {1e3 * m['db']:.1f} ms, ratio {m['ratio']:.2f} "
              f"(per round {m['ratio_range'][0]:.2f}-{m['ratio_range'][1]:.2f}); compile: reference "
              f"{m['ref_compile']:.1f} s, distillbench {m['db_compile']:.1f} s", flush=True)
    print("\n| setting | reference ms | distillbench ms | ratio | bar |\n|---|---|---|---|---|")
    for s, m, passed in rows:
        print(f"| {s.arch} {s.dtype} {s.ipc} ipc, {s.targets} targets | {1e3 * m['ref']:.1f} | "
              f"{1e3 * m['db']:.1f} | {m['ratio']:.2f} | <= {s.bar} {'PASS' if passed else 'FAIL'} |")
    finish(ok)


if __name__ == "__main__":
    main()
