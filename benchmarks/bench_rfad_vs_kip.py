"""Time per iteration of RFAD and of KIP with the exact NTK, convnet3 on 28x28x1 (MNIST-shaped
random data), against the support size and the number of random networks: the RFAD paper's
Figure 2 measurement, with the speed-up ratio.

* RFAD (``objective=rfad kernel=rf-nngp``), ``--networks`` random networks of ``--width``
  channels, ``--targets`` targets per step: time per step vs images per class (``--ipcs``) at the
  largest network count, and vs the number of networks at 10 images per class.
* KIP with the exact NTK (``objective=kip kernel=ntk``, float64 as in the paper, the fast exact
  kernel): at 28x28 an image pair costs milliseconds, so KIP runs with ``--kip-targets`` targets
  (feasible on this CPU) at ``--kip-ipcs``. Its cost is (targets x support + support^2/2) kernel
  pairs per step, so it is also extrapolated to RFAD's ``--targets`` (stated as such).
* The bar (issue #6): RFAD vs KIP at 10 per class, same targets, >= 100x (paper: 191.6x on
  GPUs, KIP with neural-tangents). Printed three ways: both at ``--kip-targets`` targets
  (measured); KIP with distillbench's fast exact NTK extrapolated to ``--targets``; KIP with
  neural-tangents' NTK (per-pair cost with the support gradient measured on a small block)
  extrapolated to ``--targets``. The verdict uses the last (the paper's comparison); the fast
  kernel's own ratio is lower because it makes KIP itself ~10-50x faster.

Every time is the steady-state step of ``distillbench.runner.execute`` (first step excluded),
median over ``--repeats``. Defaults are the paper's setting and take a while (an RFAD step is
about a minute); ``--quick`` uses 64 channels and 1280 targets.

Usage: python benchmarks/bench_rfad_vs_kip.py [--quick] [--repeats 1] [--store PATH]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common import banner, finish, median, save_benchmark  # noqa: E402

N_TRAIN, N_TEST, SHAPE, CLASSES = 6000, 50, (28, 28, 1), 10
DATA = ["dataset=synthetic", f"dataset.n_train={N_TRAIN}", f"dataset.n_test={N_TEST}",
        f"dataset.height={SHAPE[0]}", f"dataset.width={SHAPE[1]}", f"dataset.channels={SHAPE[2]}",
        f"dataset.num_classes={CLASSES}",
        # The evaluation after distillation is not timed here; the fc1 NNGP keeps it short (the
        # default convnet3 NNGP would score 50 x 500 + 500^2/2 exact pairs at 50 per class).
        "evaluator.arch=fc1"]


def rfad_args(ipc: int, networks: int, width: int, targets: int, steps: int) -> list[str]:
    return ["objective=rfad", "kernel=rf-nngp", "kernel.arch=convnet3", "loss=platt", f"ipc={ipc}",
            f"kernel.num_networks={networks}", f"kernel.width={width}",
            f"objective.target_batch={targets}", f"objective.steps={steps}", *DATA]


def kip_args(ipc: int, targets: int, steps: int) -> list[str]:
    return ["objective=kip", "kernel=ntk", "kernel.arch=convnet3", "loss=mse", f"ipc={ipc}",
            f"objective.target_batch={targets}", f"objective.steps={steps}", *DATA]


def kip_pairs(targets: int, support: int) -> int:
    """Kernel image pairs of one KIP step: K_TS, and the upper triangle + diagonal of K_SS."""
    return targets * support + support * (support + 1) // 2


def nt_seconds_per_pair(repeats: int) -> float:
    """Seconds per (target, support) pair of neural-tangents' exact convnet3 NTK at 28x28x1 with
    the gradient with respect to the support (what a KIP step needs), float64, steady state.

    A whole KIP step with it takes hours here, so it is timed on a 4 x 5 block and the step is
    extrapolated from the pair count (the paper's KIP used neural-tangents)."""
    import time

    import jax
    import jax.numpy as jnp

    from distillbench.registry import load_registry
    from distillbench_builtin.kernels.exact import build_ntk

    ntk = build_ntk(arch=load_registry().architecture("convnet3"), implementation="neural-tangents").kernel_fn
    xt = jax.random.normal(jax.random.PRNGKey(0), (4, *SHAPE), jnp.float64)
    xs = jax.random.normal(jax.random.PRNGKey(1), (5, *SHAPE), jnp.float64)
    fn = jax.jit(jax.value_and_grad(lambda s: jnp.sum(jnp.sin(ntk(xt, s, None)))))
    jax.block_until_ready(fn(xs))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(xs))
        times.append(time.perf_counter() - t)
    return median(times) / (4 * 5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="64 channels, 1280 targets")
    parser.add_argument("--ipcs", default="1,5,10,20,50")
    parser.add_argument("--networks", default="1,2,4,8")
    parser.add_argument("--width", type=int, default=None, help="channels (default 256; --quick 64)")
    parser.add_argument("--targets", type=int, default=None, help="RFAD targets (default 5120; --quick 1280)")
    parser.add_argument("--kip-targets", type=int, default=20)
    parser.add_argument("--kip-ipcs", default="1,5,10")
    parser.add_argument("--steps", type=int, default=2, help="steps per run (the first is not timed)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--store", default="distillbench_results/benchmarks.sqlite")
    args = parser.parse_args()
    width = args.width or (64 if args.quick else 256)
    targets = args.targets or (1280 if args.quick else 5120)
    banner("RFAD vs KIP (exact NTK): time per iteration, convnet3 28x28x1")
    import jax

    jax.config.update("jax_enable_x64", True)
    from distillbench.registry import load_registry
    from distillbench.runner.execute import execute
    from distillbench.runner.plan import plan

    registry = load_registry()
    networks = [int(v) for v in args.networks.split(",")]
    ipcs = [int(v) for v in args.ipcs.split(",")]

    def run(overrides: list[str], label: str) -> float:
        (config,) = plan(overrides, registry).configs
        times = []
        for _ in range(args.repeats):
            outcome = execute(config, registry)
            assert outcome.status == "done", f"{label}: {outcome.status} {outcome.message}"
            times.append(outcome.timings["step_s"])
        t = median(times)
        print(f"  {label:52} {t:10.3f} s/step  ({', '.join(f'{v:.3f}' for v in times)})", flush=True)
        save_benchmark(args.store, config, "bench_rfad_vs_kip", metrics={},
                       timings={"step_s": t, "compile_s": outcome.timings["compile_s"]})
        return t

    print(f"backend: {jax.default_backend()}, RFAD: {max(networks)} networks x {width} channels, {targets} targets;"
          f" KIP: exact NTK (fast kernel, float64), {args.kip_targets} targets")
    print("RFAD, time per step vs images per class:")
    rfad_ipc = {ipc: run(rfad_args(ipc, max(networks), width, targets, args.steps),
                         f"rfad ipc={ipc} N={max(networks)}") for ipc in ipcs}
    print("RFAD, time per step vs number of networks (ipc=10):")
    rfad_n = {n: (rfad_ipc[10] if n == max(networks) and 10 in rfad_ipc else
                  run(rfad_args(10, n, width, targets, args.steps), f"rfad ipc=10 N={n}")) for n in networks}
    print("KIP (exact NTK), time per step vs images per class:")
    kip = {ipc: run(kip_args(ipc, args.kip_targets, args.steps), f"kip ipc={ipc} targets={args.kip_targets}")
           for ipc in [int(v) for v in args.kip_ipcs.split(",")]}
    rfad_same = run(rfad_args(10, max(networks), width, args.kip_targets, args.steps),
                    f"rfad ipc=10 N={max(networks)} targets={args.kip_targets}")

    print("\nlinearity: RFAD s/step per image per class "
          + ", ".join(f"ipc {i}: {rfad_ipc[i] / i:.3f}" for i in ipcs))
    print("           RFAD s/step per network " + ", ".join(f"N {n}: {rfad_n[n] / n:.3f}" for n in networks))
    ok = True
    if 10 in kip:
        support = 10 * CLASSES
        per_pair = kip[10] / kip_pairs(args.kip_targets, support)
        kip_full = per_pair * kip_pairs(targets, support)
        direct = kip[10] / rfad_same
        extrapolated = kip_full / rfad_n[max(networks)]
        print(f"KIP at ipc=10: {1e3 * per_pair:.2f} ms per kernel pair (forward + gradient) -> "
              f"{kip_full:.0f} s/step extrapolated to {targets} targets ({kip_pairs(targets, support)} pairs)")
        print(f"ratio KIP / RFAD, ipc=10, same {args.kip_targets} targets (measured): {direct:.1f}x")
        print(f"ratio KIP / RFAD, ipc=10, same {targets} targets (KIP with distillbench's fast NTK, "
              f"extrapolated): {extrapolated:.1f}x")
        nt_pair = nt_seconds_per_pair(max(3, args.repeats))
        nt_full = nt_pair * kip_pairs(targets, support)
        nt_ratio = nt_full / rfad_n[max(networks)]
        print(f"neural-tangents NTK + support gradient: {1e3 * nt_pair:.1f} ms per pair "
              f"({nt_pair / per_pair:.1f}x the fast kernel's) -> KIP {nt_full:.0f} s/step at {targets} targets")
        passed = nt_ratio >= 100
        ok &= passed
        print(f"ratio KIP (neural-tangents NTK, as in the paper) / RFAD, ipc=10, same {targets} targets "
              f"(extrapolated): {nt_ratio:.1f}x (bar >= 100, paper 191.6x) {'PASS' if passed else 'FAIL'}")
    finish(ok)


if __name__ == "__main__":
    main()
