"""RCIG's step against the reference's own code (``yolky/RCIG``), same machine, same run (issue 31
item 6).

Get the reference and an environment for it (benchmark only; never commit them)::

    git clone https://github.com/yolky/RCIG /tmp/rcig-ref                      # checked at a9fb1fa
    python3 -m venv /tmp/rcig-env && /tmp/rcig-env/bin/pip install jax==0.4.30 jaxlib==0.4.30 \\
        flax optax ml_collections absl-py einops numpy

Run::

    python benchmarks/bench_rcig_vs_reference.py --reference /tmp/rcig-ref --reference-python /tmp/rcig-env/bin/python
        [--width 32] [--rounds 5] [--steps 3] [--passes 2]

Bar: distillbench's step takes <= 1.0x the reference's time (aim 0.7x), and its peak memory is
<= the reference's.

What is timed, per side, is one distillation step of ``run_rcig``'s loop at its ``depth_3_no_flip``
settings but the width and the number of steps: a pool of 30 ``Conv`` networks (softplus 60, no
normalization, width ``--width``), 10 images (1 per class), 1024 targets, 20 inner steps, 20
Hessian-inverse steps, l2 = 5e-4 x 10, AdaBelief 3e-3, learned labels, no flips; the learning rates
fixed (inner 1e-3, Hessian 1e-2: tuning is done once, before the loop, and not timed):

* reference: its own functions (``algorithms.get_new_train_state``, ``do_training_steps``,
  ``do_meta_train_step``, ``ProtoHolder``, ``CoresetTrainState``; ``models.Conv``), imported from
  ``--reference``, driven by a transcription of the loop body (the model drawn, its inner steps,
  the meta step, the pool model's 1..15 steps and its reset, the losses' checks on the host), fed
  arrays directly (its tf.data loader is replaced by pre-gathered batches of 1024 targets, cycled).
  It runs in ``--reference-python`` (its own jax; x64 off, as it runs). Shims: ``jax.jit`` drops
  static argument names a function does not take; ``init`` results are frozen for its
  ``.unfreeze()`` calls; ``torch`` and, when absent, ``ml_collections`` and ``einops`` (imported, unused here) are stubbed; ``jax.devices('gpu')`` is the CPU.
* distillbench: ``distillbench run objective=rcig kernel=rcig-pool ...`` at the same settings, its
  compiled step (``runner.pipeline``: AOT compiled, state donated, its steady loop).

Both start from the same support and targets' data (``mnist-t10k`` from ``DISTILLBENCH_DATA_DIR``,
else synthetic arrays of its size). Each side runs in its own process, ``--passes`` times in
alternation (distillbench, reference, distillbench, ...); each process compiles (timed apart), takes
one untimed step, then ``--rounds`` blocks of ``--steps`` steps; the figures are medians over all
blocks of a side. Memory: each process's peak resident set (``VmHWM``) after its blocks.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

WIDTH, IPC, CLASSES, TARGETS, POOL = 32, 1, 10, 1024, 30
INNER_STEPS, HINV_STEPS, L2_RATE, LR, INNER_LR, HVP_LR = 20, 20, 5e-4, 3e-3, 1e-3, 1e-2
POOL_LR, MAX_ONLINE, MAX_POOL_STEPS, SOFTPLUS = 5e-5, 100, 16, 60.0


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def distillbench_side(args) -> dict:
    import numpy as np

    from common import prepared_run
    from distillbench.runner import pipeline
    from distillbench.runner.reporter import Reporter

    steps = 1 + args.rounds * args.steps + 1
    run = prepared_run(["objective=rcig", "kernel=rcig-pool", f"kernel.width={args.width}",
                        f"kernel.num_networks={POOL}", "loss=platt", f"ipc={IPC}", f"objective.lr={LR}",
                        f"objective.target_batch={TARGETS}", "objective.tune=false",
                        f"objective.inner_lr={INNER_LR}", f"objective.hvp_lr={HVP_LR}",
                        f"objective.steps={steps}", *_dataset_args()])
    np.savez(args.data, x_train=np.asarray(run.data.x_train), y_train=np.asarray(run.data.y_train),
             x0=np.asarray(run.state0.params.x), y0=np.asarray(run.state0.params.y))
    train, distiller, state0, step_key = run.train, run.distiller, run.state0, run.step_key
    t = time.perf_counter()
    step = pipeline.compiled_step(distiller, state0, train, step_key)
    state = pipeline._own_buffers(state0)
    del run, state0
    t_first = time.perf_counter()
    state, value = step(state, train, step_key, np.int32(0))
    first = float(value)
    pipeline.place_temporaries(step, time.perf_counter() - t_first)  # as a run does after its first step
    compile_s = time.perf_counter() - t
    progress = pipeline.Progress(Reporter())
    end, _ = pipeline._steady_loop(step, state, train, step_key, 2, first, progress, None)  # one untimed step
    state, blocks = end.state, []
    for _ in range(args.rounds):
        end, seconds = pipeline._steady_loop(step, state, train, step_key, args.steps + 1, first, progress, None)
        state = end.state
        blocks.append(seconds / args.steps)
    return {"compile_s": compile_s, "blocks": blocks, "peak_rss_mb": _rss_mb()}


def _dataset_args() -> list[str]:
    import os

    root = os.environ.get("DISTILLBENCH_DATA_DIR")
    if root and (Path(root) / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
        return ["dataset=mnist-t10k"]
    return ["dataset=synthetic", "dataset.n_train=8000", "dataset.n_test=2000", "dataset.height=28",
            "dataset.width=28"]


def _shim(jax) -> None:
    """Run the reference on a newer jax, on CPU (the golden-file maker's ``jax.jit`` shim, and more)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "golden"))
    from make_rcig_reference import _shim_jit

    _shim_jit()
    devices = jax.devices
    jax.devices = lambda backend=None: devices("cpu") if backend == "gpu" else devices(backend)
    if not hasattr(jax, "tree_map"):
        jax.tree_map = jax.tree.map


def reference_side(args) -> dict:
    import numpy as np

    sys.modules.setdefault("torch", types.ModuleType("torch"))
    for name in ("ml_collections", "einops"):  # imported by the reference (einops by its augmax); unused here
        try:
            __import__(name)
        except ImportError:
            stub = types.ModuleType(name)
            stub.rearrange = None
            sys.modules[name] = stub
    import jax

    _shim(jax)
    sys.path.insert(0, str(Path(args.reference).resolve()))
    import algorithms
    import flax
    import jax.numpy as jnp
    import models

    class Config(tuple):
        """A hashable stand-in for the reference's FrozenConfigDict (a static jit argument)."""

        def __new__(cls, **kw):
            obj = super().__new__(cls, tuple(sorted(kw.items())))
            obj.__dict__.update(kw)
            return obj

    cfg = Config(naive_loss=False, use_x64=False, max_forward_batch_size=None, model_depth=3,
                 pool_learning_rate=POOL_LR)
    with np.load(args.data) as f:
        x_train, y_train, x0, y0 = (f[k] for k in ("x_train", "y_train", "x0", "y0"))
    net = models.Conv(use_softplus=True, beta=SOFTPLUS, num_classes=CLASSES, width=args.width, depth=3,
                      normalization="identity")

    def init_frozen(key, x):
        return flax.core.freeze(net.init(key, x))

    key = jax.random.PRNGKey(0)
    pool = []
    for _ in range(POOL):
        state, key = algorithms.get_new_train_state(key, POOL_LR, 3, False, True, net.apply, init_frozen, x0.shape)
        pool.append(state)
    holder = algorithms.ProtoHolder(jnp.asarray(x0), jnp.asarray(y0), 0.0, x0.shape[0], learn_label=True,
                                    use_flip=False)
    import optax

    opt = optax.chain(
        optax.masked(optax.adabelief(learning_rate=LR), {"x_proto": True, "y_proto": True, "log_temp": False}),
        optax.masked(optax.adabelief(learning_rate=0.03), {"x_proto": False, "y_proto": False, "log_temp": True}))
    params = dict(holder.init({"params": key})["params"])
    coreset = algorithms.CoresetTrainState.create(apply_fn=holder.apply, tx=opt, params=params, train_it=0,
                                                  ema_average=params, ema_hidden=jax.tree.map(jnp.zeros_like, params))
    rng = np.random.default_rng(0)
    eye = np.eye(CLASSES, dtype=np.float32) - 1.0 / CLASSES
    batches = []
    for _ in range(8):
        idx = rng.choice(len(y_train), TARGETS, replace=False)
        batches.append((jnp.asarray(x_train[idx], jnp.float32), jnp.asarray(eye[y_train[idx]])))
    l2 = L2_RATE * x0.shape[0]
    held = {"coreset": coreset, "key": key, "i": 0}

    def one_step():
        key, coreset = held["key"], held["coreset"]
        xt, yt = batches[held["i"] % len(batches)]
        held["i"] += 1
        index = int(jax.random.randint(key, (), 0, POOL))
        key = jax.random.split(key)[0]
        selected = pool[index]
        key, train_key = jax.random.split(key)
        x_proto, y_proto, _ = coreset.apply_fn({"params": coreset.params})
        new_state, losses = algorithms.do_training_steps(
            selected, {"images": x_proto, "labels": y_proto}, train_key, n_steps=INNER_STEPS, l2=l2, has_bn=False,
            train=False, aug=algorithms.identity, do_krr=True, batch_size=None, inject_lr=INNER_LR, alg_config=cfg)
        diff = losses[:INNER_STEPS] - jnp.roll(losses[:INNER_STEPS], -1)
        bool(jnp.all(diff[:-1] > 0)), float(losses[0])  # the reference's checks and logging, on the host
        key, meta_key = jax.random.split(key)
        coreset, out = algorithms.do_meta_train_step(
            new_state, coreset, xt, yt, has_bn=False, l2=l2, n_hinv_steps=HINV_STEPS, do_krr=True,
            aug=algorithms.identity, aug_repeats=0, aug_key=meta_key, lr=HVP_LR, normal_repeats=1,
            direct_batch_sizes=(None, None), implicit_batch_size=None, do_precompute=False, hinv_batch_size=None,
            max_forward_batch_size=None, alg_config=cfg)
        float(out[0])
        key, pool_key = jax.random.split(key)
        n = jax.random.randint(key, (), 1, MAX_POOL_STEPS)
        x_proto, y_proto, _ = coreset.apply_fn({"params": coreset.params})
        pool[index], _ = algorithms.do_training_steps(
            selected, {"images": x_proto, "labels": y_proto}, pool_key, n_steps=n, has_bn=False, use_base_params=True,
            aug=algorithms.identity, batch_size=None, max_batch_size=x0.shape[0], train=True)
        if pool[index].train_it >= MAX_ONLINE:
            pool[index], key = algorithms.get_new_train_state(key, POOL_LR, 3, False, True, net.apply, init_frozen,
                                                              x0.shape)
        jax.block_until_ready(coreset.params)
        held["key"], held["coreset"] = key, coreset

    t = time.perf_counter()
    one_step()
    compile_s = time.perf_counter() - t
    one_step()
    blocks = []
    for _ in range(args.rounds):
        t = time.perf_counter()
        for _ in range(args.steps):
            one_step()
        blocks.append((time.perf_counter() - t) / args.steps)
    return {"compile_s": compile_s, "blocks": blocks, "peak_rss_mb": _rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help="a yolky/RCIG checkout")
    parser.add_argument("--reference-python", default=sys.executable, help="the Python of the reference's environment")
    parser.add_argument("--width", type=int, default=WIDTH)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--side", choices=("db", "ref"), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        if args.side == "db":
            from distillbench.runner.pipeline import enable_float64

            enable_float64()
        result = distillbench_side(args) if args.side == "db" else reference_side(args)
        print("RESULT " + json.dumps(result), flush=True)
        return
    import statistics

    results = {"db": [], "ref": []}
    with tempfile.TemporaryDirectory() as tmp:
        data = str(Path(tmp) / "data.npz")
        common = [__file__, "--reference", args.reference, "--width", str(args.width), "--rounds", str(args.rounds),
                  "--steps", str(args.steps), "--data", data]
        for _ in range(args.passes):
            for side, python in (("db", sys.executable), ("ref", args.reference_python)):
                out = subprocess.run([python, *common, "--side", side], capture_output=True, text=True)
                lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
                if out.returncode != 0 or not lines:
                    sys.exit(f"{side} side failed:\n{out.stderr[-3000:]}")
                results[side].append(json.loads(lines[-1][len("RESULT "):]))
    print(f"RCIG step, width {args.width}, {IPC} ipc x {CLASSES} classes, {TARGETS} targets, pool {POOL}, "
          f"{INNER_STEPS} inner + {HINV_STEPS} Hessian steps ({args.passes} passes x {args.rounds} blocks of "
          f"{args.steps} steps per side)")
    step = {}
    for side, name in (("ref", "reference (yolky/RCIG)"), ("db", "distillbench")):
        blocks = [b for r in results[side] for b in r["blocks"]]
        step[side] = statistics.median(blocks)
        print(f"  {name:24s} step {step[side] * 1e3:8.1f} ms (median of {len(blocks)}; min {min(blocks) * 1e3:.1f}, "
              f"max {max(blocks) * 1e3:.1f})   compile {statistics.median(r['compile_s'] for r in results[side]):6.1f} s"
              f"   peak RSS {max(r['peak_rss_mb'] for r in results[side]):7.0f} MB")
    peak = {s: max(r["peak_rss_mb"] for r in results[s]) for s in results}
    print(f"  ratio distillbench / reference: step {step['db'] / step['ref']:.2f}x, peak RSS "
          f"{peak['db'] / peak['ref']:.2f}x")


if __name__ == "__main__":
    main()
