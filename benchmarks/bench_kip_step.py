"""One KIP step with the exact convnet3 NTK (float64, 28x28x1): distillbench's fast kernel
(custom VJP with respect to the support) against the same step through neural-tangents, same
inputs, same process, repeats alternating.

The step is the one ``objective=kip`` runs: ``K_SS`` and ``K_TS`` in float64, the KRR prediction
with the float64 Cholesky solve and the trace-scaled ridge, the MSE loss, its value and gradient
with respect to the support images and labels (``objectives.common.krr_loss``), one Adam update.

Issue #16's setting is 10 classes x 10 images per class (100 support images) and 1000 targets:
100,000 + 5,050 kernel pairs per step, hours per step through neural-tangents on a 2-core CPU.
``--ipc`` and ``--targets`` choose the timed step (both sides time the same step); the full
setting is then extrapolated from the kernel pair count, K_TS pairs plus the K_SS upper triangle
with its diagonal, and printed as extrapolated. ``--ipc 10 --targets 1000`` times it in full.
Bar: fast >= 10x neural-tangents per step (measured at the timed setting).

The fast kernels keep every block's residuals for reverse mode when they fit in the device's
allowance (``distillbench.devices.residual_memory_mb``) and recompute each block otherwise. When
the timed step keeps them but the full setting could not (~87 GiB of residuals), a third variant,
``fast, recomputed`` (allowance 0), is timed too and the extrapolation uses it.

Usage: python benchmarks/bench_kip_step.py [--ipc 1] [--targets 20] [--repeats 3] [--store PATH]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common import banner, finish, median, save_benchmark  # noqa: E402

CLASSES, SHAPE = 10, (28, 28, 1)
FULL_IPC, FULL_TARGETS = 10, 1000


def kip_pairs(targets: int, support: int) -> int:
    """Kernel image pairs of one KIP step: K_TS, and the upper triangle + diagonal of K_SS."""
    return targets * support + support * (support + 1) // 2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ipc", type=int, default=1, help="support images per class (10 classes)")
    parser.add_argument("--targets", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--store", default="distillbench_results/benchmarks.sqlite")
    args = parser.parse_args()
    banner("KIP step, exact convnet3 NTK, float64, 28x28x1: fast kernel vs neural-tangents")
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    import optax

    from distillbench import devices
    from distillbench.krr import centered_one_hot
    from distillbench.registry import load_registry
    from distillbench.runner.plan import plan
    from distillbench_builtin.kernels import blocking
    from distillbench_builtin.kernels.exact import build_ntk
    from distillbench_builtin.kernels.fast_exact import build_fast_kernel_fn
    from distillbench_builtin.losses.mse import build_mse
    from distillbench_builtin.objectives.common import SupportParams, krr_loss

    m, n_t = args.ipc * CLASSES, args.targets
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    params = SupportParams(x=jax.random.normal(keys[0], (m, *SHAPE), jnp.float32),
                           y=centered_one_hot(jnp.repeat(jnp.arange(CLASSES), args.ipc), CLASSES, dtype=jnp.float32),
                           loss={})
    xt = jax.random.normal(keys[1], (n_t, *SHAPE), jnp.float64)
    yt = centered_one_hot(jax.random.randint(keys[2], (n_t,), 0, CLASSES), CLASSES, dtype=jnp.float64)
    opt = optax.adam(0.01)
    loss = build_mse()

    def residuals_mb(targets: int, support: int) -> float:
        """The blocking model's residuals of the step's K_TS (the larger kernel), MiB."""
        per_pair = blocking.residual_bytes("convnet3", SHAPE, 8, "pairs")
        per_image = blocking.residual_bytes("convnet3", SHAPE, 8, "images")
        return (targets * support * per_pair + (targets + support) * per_image) / 2**20

    allowance = devices.residual_memory_mb(devices.current())
    keeps = residuals_mb(n_t, m) <= allowance
    full_keeps = residuals_mb(FULL_TARGETS, FULL_IPC * CLASSES) <= allowance

    def make_step(implementation, recompute=False):
        kernel = build_ntk(arch=load_registry().architecture("convnet3"), implementation=implementation)
        if recompute:
            kernel = kernel._replace(kernel_fn=build_fast_kernel_fn("convnet3", "ntk", 2**0.5, 0.1,
                                                                    residual_memory_mb=0))

        @jax.jit
        def step(params, opt_state, xt, yt):
            value, grads = jax.value_and_grad(
                lambda p: krr_loss(p, xt, yt, None, kernel=kernel, loss=loss, reg=1e-6, dtype=jnp.float64))(params)
            updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, value, grads

        return step

    opt_state = opt.init(params)
    steps = {"neural-tangents": make_step("neural-tangents"), "fast": make_step("fast")}
    if keeps and not full_keeps:
        steps["fast, recomputed"] = make_step("fast", recompute=True)
    print(f"residual allowance {allowance:.0f} MiB: the timed step's K_TS residuals "
          f"{residuals_mb(n_t, m):.0f} MiB ({'kept' if keeps else 'recomputed'}), the full setting's "
          f"{residuals_mb(FULL_TARGETS, FULL_IPC * CLASSES):.0f} MiB "
          f"({'kept' if full_keeps else 'recomputed'})")
    print(f"backend: {jax.default_backend()}, devices: {len(jax.local_devices())}; support {m} "
          f"({args.ipc} per class x {CLASSES}), {n_t} targets: {kip_pairs(n_t, m)} kernel pairs per step; "
          f"repeats: {args.repeats} (alternating; first call with compilation excluded)", flush=True)
    out, wall, cpu = {}, {k: [] for k in steps}, {k: [] for k in steps}
    for name, step in steps.items():
        t = time.perf_counter()
        out[name] = jax.block_until_ready(step(params, opt_state, xt, yt))
        print(f"  {name}: first call (compilation included) {time.perf_counter() - t:.1f} s", flush=True)
    for _ in range(args.repeats):
        for name, step in steps.items():
            t, c = time.perf_counter(), time.process_time()
            jax.block_until_ready(step(params, opt_state, xt, yt))
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    g_fast, g_nt = (np.asarray(out[k][3].x, np.float64) for k in ("fast", "neural-tangents"))
    diff = float(np.max(np.abs(g_fast - g_nt)) / np.max(np.abs(g_nt)))
    loss_diff = abs(float(out["fast"][2]) - float(out["neural-tangents"][2])) / abs(float(out["neural-tangents"][2]))
    t_nt, t_fast = median(wall["neural-tangents"]), median(wall["fast"])
    ratio, cpu_ratio = t_nt / t_fast, median(cpu["neural-tangents"]) / median(cpu["fast"])
    for name in steps:
        print(f"  {name:17} {median(wall[name]):9.3f} s/step (wall: {', '.join(f'{v:.3f}' for v in wall[name])};"
              f" CPU {median(cpu[name]):.3f} s)")
    print(f"ratio neural-tangents / fast: {ratio:.1f}x wall, {cpu_ratio:.1f}x CPU time; support gradient "
          f"max rel diff {diff:.1e}, loss rel diff {loss_diff:.1e}")
    full_pairs, pairs = kip_pairs(FULL_TARGETS, FULL_IPC * CLASSES), kip_pairs(n_t, m)
    if (args.ipc, n_t) != (FULL_IPC, FULL_TARGETS):
        scale = full_pairs / pairs
        name = "fast, recomputed" if "fast, recomputed" in steps else "fast"
        t_full = median(wall[name])
        print(f"extrapolated to the issue's setting ({FULL_IPC} ipc, {FULL_TARGETS} targets, {full_pairs} pairs; "
              f"x{scale:.1f} the timed pairs): {name} {t_full * scale:.0f} s/step, neural-tangents "
              f"{t_nt * scale:.0f} s/step, {t_nt / t_full:.1f}x (EXTRAPOLATED, not timed)")
    ok = diff <= 1e-5
    if not ok:
        print(f"  FAIL: support gradients differ by {diff:.1e} (> 1e-5)")
    passed = ratio >= 10
    ok &= passed
    print(f"bar: KIP step, exact convnet3 NTK, fast >= 10x neural-tangents: {ratio:.1f}x "
          f"{'PASS' if passed else 'FAIL'}")
    (config,) = plan(["objective=kip", "kernel=ntk", "kernel.arch=convnet3", "loss=mse", f"ipc={args.ipc}",
                      f"objective.target_batch={n_t}", "dataset=synthetic", f"dataset.height={SHAPE[0]}",
                      f"dataset.width={SHAPE[1]}", f"dataset.channels={SHAPE[2]}",
                      f"dataset.num_classes={CLASSES}"], load_registry()).configs
    save_benchmark(args.store, config, "bench_kip_step",
                   metrics={"speedup_vs_neural_tangents": ratio, "cpu_speedup_vs_neural_tangents": cpu_ratio,
                            "max_rel_diff": diff},
                   timings={"step_s": t_fast, "neural_tangents_step_s": t_nt,
                            **({"recomputed_step_s": median(wall["fast, recomputed"])}
                               if "fast, recomputed" in steps else {})})
    finish(ok)


if __name__ == "__main__":
    main()
