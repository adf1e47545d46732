"""FRePo's step against the reference's own code (``yongchao97/FRePo``), same machine, same run
(issue 29 item 8).

Get the reference (benchmark only; never commit it)::

    git clone https://github.com/yongchao97/FRePo /tmp/frepo-ref    # checked at 9b98c65

Run::

    python benchmarks/bench_frepo_vs_reference.py --reference /tmp/frepo-ref [--width 128]
        [--rounds 5] [--steps 3] [--memory-steps 5] [--reference-x64]

Bar: distillbench's step takes <= 1.0x the reference's time (aim 0.7x), and its peak memory is
<= the reference's.

What is timed, per side, is one distillation step of ``proto_train_and_evaluate``'s loop: the
targets' features, ``proto_train_step`` (nfr + label margin, LAMB), then the current network's
reset or its online ``train_step`` on the new support, then the next network drawn.

* Reference: its own functions, imported from ``--reference`` (``lib.datadistillation.frepo``:
  ``ProtoHolder``, ``create_proto_state``, ``jit_fn``, ``nn_feat_fn``, ``get_sample_proto``;
  ``lib.training.utils``: ``create_train_state``, ``train_step``; ``lib.models.utils.create_model``)
  and driven by a transcription of the loop body, fed arrays directly (its tf.data pipeline is
  replaced by pre-gathered numpy batches of 1024 targets, cycled: tf.data prefetches in threads).
  The harness stubs what the reference imports but never calls here when it is not installed
  (tensorflow, clu, tqdm, ml_collections, pandas), shims ``jax.scipy.linalg.solve`` to accept
  ``sym_pos`` (``assume_a="pos"``, what it meant), and gives ``create_proto_state`` a FrozenDict
  from ``init`` (flax >= 0.7 returns dicts; it calls ``.unfreeze()``). Settings of
  ``script/distill.py`` for MNIST: ``arch=conv``, depth 3, ``normalization=batch``, ``feat_fc``,
  learned labels, no flips, LAMB 3e-4 cosine (alpha 0.1), online Adam 3e-4, 1024 targets, pool of
  10 reset after 100 updates (staggered ages), sample batch 1000. It runs in a child process with
  its own JAX configuration (x64 off, as the reference runs; ``--reference-x64`` gives it
  distillbench's) and glibc's default malloc.
* distillbench: the step ``distillbench run objective=frepo kernel.width=W ...`` compiles
  (``runner.pipeline``: AOT compiled, state donated, its steady loop), in this process with a
  run's configuration (``enable_float64``: x64 on for the float64 solve, malloc reuse).

Both start from the same support (distillbench's initial one) and the same targets' data
(``mnist-t10k``: 8000 train images 28x28x1, from ``DISTILLBENCH_DATA_DIR``; else synthetic
arrays of that size, which time the same). Blocks of ``--steps`` steps alternate (one side at a
time, order swapped every round), each side carrying its state across blocks; figures are
medians over ``--rounds`` blocks; compilation (the first step) is timed apart, and ``--warmup``
steps per side follow it untimed.

Memory: each side alone in a fresh subprocess (``--side``), which builds, compiles and runs
``--memory-steps`` steps, then reports its peak resident set (``VmHWM`` of /proc/self/status, the
process's high-water mark; Linux only) and that after imports and data (the baseline), and, when
the CPU backend reports them, JAX's ``memory_stats()`` peak bytes (jaxlib 0.10's CPU client
reports none).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import types
from typing import NamedTuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common import banner, finish, median, prepared_run  # noqa: E402

IPC, NUM_CLASSES, TARGETS, POOL, MAX_UPDATES, SAMPLE_BATCH = 10, 10, 1024, 10, 100, 1000
LR, ONLINE_LR, REG = 3e-4, 3e-4, 1e-6
SYNTHETIC = (8000, 28, 28, 1)


class Data(NamedTuple):
    """What both sides need: training images and integer labels, and the initial support."""

    x_train: object
    y_train: object
    x0: object
    y0: object


# --- distillbench ----------------------------------------------------------------------------

def _dataset_args() -> list[str]:
    root = os.environ.get("DISTILLBENCH_DATA_DIR", "")
    if os.path.exists(os.path.join(root, "mnist", "t10k-images-idx3-ubyte.gz")):
        return ["dataset=mnist-t10k"]
    n, h, w, c = SYNTHETIC
    return ["dataset=synthetic", f"dataset.n_train={n}", "dataset.n_test=100", f"dataset.height={h}",
            f"dataset.width={w}", f"dataset.channels={c}", f"dataset.num_classes={NUM_CLASSES}"]


def distillbench_side(width: int, total_steps: int):
    """The run's compiled step and state; ``(data, compile seconds, block(steps) -> s/step)``."""
    import numpy as np

    from distillbench.runner import pipeline
    from distillbench.runner.reporter import Reporter

    args = ["objective=frepo", "kernel=frepo-pool", "kernel.arch=frepo-conv", f"kernel.width={width}",
            "kernel.normalization=batch", f"kernel.num_networks={POOL}", f"kernel.max_updates={MAX_UPDATES}",
            f"kernel.lr={ONLINE_LR}", f"kernel.batch={SAMPLE_BATCH}", "loss=mse", f"ipc={IPC}",
            f"objective.lr={LR}", f"objective.target_batch={TARGETS}", f"objective.reg={REG}",
            "objective.dtype=float32", "objective.flip=false", "objective.learn_labels=true",
            f"objective.steps={total_steps}", *_dataset_args()]
    run = prepared_run(args)
    train, distiller, state0, step_key = run.train, run.distiller, run.state0, run.step_key
    data = Data(np.asarray(run.data.x_train), np.asarray(run.data.y_train),
                np.asarray(state0.params.x), np.asarray(state0.params.y))
    t = time.perf_counter()
    step = pipeline.compiled_step(distiller, state0, train, step_key)
    state = pipeline._own_buffers(state0)
    del run, state0  # as a run does: it keeps only the copy it donates (pipeline.distill)
    t_first = time.perf_counter()
    state, value = step(state, train, step_key, np.int32(0))  # donated
    first = float(value)  # blocks
    pipeline.place_temporaries(step, time.perf_counter() - t_first)  # as a run does after its first step
    compile_s = time.perf_counter() - t
    progress = pipeline.Progress(Reporter())
    held = {"state": state}

    def block(steps: int) -> float:
        end, seconds = pipeline._steady_loop(step, held["state"], train, step_key, steps + 1, first, progress, None)
        held["state"] = end.state
        return seconds / steps

    return data, compile_s, block


# --- the reference ---------------------------------------------------------------------------

_ABSENT_OK = ("tensorflow", "clu", "tqdm", "ml_collections", "pandas")


def _stub(name: str) -> types.ModuleType:
    """An empty module standing for ``name`` (with a spec: ``find_spec`` raises on a module without one)."""
    import importlib.machinery

    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    return module


def import_reference(path: str):
    """The reference's modules ``(frepo, training_utils, metrics, model_utils)``, with stubs for
    what it imports but this benchmark never calls, and the ``sym_pos`` shim."""
    import importlib
    import importlib.util
    import inspect

    import jax
    import jax.scipy.linalg

    # flax.io checks find_spec("tensorflow") when imported: import what the reference uses of flax first
    for name in ("flax.io", "flax.training.checkpoints", "flax.training.train_state"):
        importlib.import_module(name)

    for name in _ABSENT_OK:
        if importlib.util.find_spec(name) is None:
            sys.modules[name] = _stub(name)
            if name == "clu":
                sys.modules[name].metric_writers = sys.modules["clu.metric_writers"] = _stub("clu.metric_writers")
    solve = jax.scipy.linalg.solve
    try:
        takes_sym_pos = "sym_pos" in inspect.signature(solve).parameters
    except (TypeError, ValueError):
        takes_sym_pos = False
    if not takes_sym_pos:
        def solve_sym_pos(a, b, sym_pos=False, **kwargs):
            """``solve(..., sym_pos=True)`` as jax < 0.4.1 read it: ``assume_a="pos"``."""
            if sym_pos:
                kwargs.setdefault("assume_a", "pos")
            return solve(a, b, **kwargs)

        jax.scipy.linalg.solve = solve_sym_pos
    root = os.path.abspath(path)
    if not os.path.exists(os.path.join(root, "lib", "datadistillation", "frepo.py")):
        raise SystemExit(f"--reference {path}: no lib/datadistillation/frepo.py there "
                         f"(git clone https://github.com/yongchao97/FRePo {path})")
    sys.path.insert(0, root)
    from lib.datadistillation import frepo
    from lib.models import utils as model_utils
    from lib.training import metrics
    from lib.training import utils as training_utils

    return frepo, training_utils, metrics, model_utils


class _FrozenInit:
    """``ProtoHolder`` whose ``init`` returns a FrozenDict, as flax did when the reference was
    written (``create_proto_state`` calls ``.unfreeze()`` on it)."""

    def __init__(self, module):
        self.module = module
        self.apply = module.apply

    def init(self, *args, **kwargs):
        import flax

        return flax.core.freeze(self.module.init(*args, **kwargs))


def reference_steps(frepo, utils, metrics, has_bn: bool):
    """``(feat_fn, train_step, online_step)`` as ``frepo.py:proto_train_and_evaluate`` builds them
    (``nn_feat_fn`` without EMA, ``utils.train_step`` on the MSE, ``frepo.jit_fn`` without flips or pmap)."""
    import functools

    feat_fn = functools.partial(frepo.nn_feat_fn, has_bn=has_bn, use_ema=False)
    feat_fn_eval = functools.partial(frepo.nn_feat_fn, has_bn=False, use_ema=False)
    nn_train_step = functools.partial(utils.train_step, has_feat=True, has_bn=has_bn,
                                      loss_type=metrics.mean_squared_loss)
    nn_eval_step = functools.partial(utils.eval_step, has_feat=True, has_bn=has_bn, use_ema=True,
                                     loss_type=metrics.mean_squared_loss)
    train_step, _, _, _, online_step = frepo.jit_fn(nn_train_step, nn_eval_step, feat_fn=feat_fn,
                                                    feat_fn_eval=feat_fn_eval, use_flip=False, use_pmap=False)
    return feat_fn, train_step, online_step


def reference_side(path: str, width: int, data: Data, total_steps: int, seed: int = 0):
    """The reference's loop body, jitted as ``proto_train_and_evaluate`` jits it;
    ``(compile seconds, block(steps) -> s/step)``."""
    import dataclasses
    import functools

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    frepo, utils, metrics, model_utils = import_reference(path)
    x_train = np.asarray(data.x_train, np.float32)
    y_train = (np.eye(NUM_CLASSES) - 1.0 / NUM_CLASSES)[np.asarray(data.y_train)].astype(np.float32)
    h, w, c = x_train.shape[1:]
    rng_np = np.random.default_rng(seed)
    batches = []
    for _ in range(4):  # pre-gathered, cycled: the tf.data pipeline's work is not the step's
        idx = rng_np.choice(len(x_train), TARGETS, replace=False)
        batches.append((x_train[idx], y_train[idx]))

    has_bn = True
    config = types.SimpleNamespace(img_size=h, img_channels=c, optimizer="adam")
    online_model = model_utils.create_model("conv", NUM_CLASSES, width=width, depth=3, normalization="batch",
                                            output="feat_fc")
    create_online_state = functools.partial(utils.create_train_state, config=config, model=online_model,
                                            learning_rate_fn=lambda x: ONLINE_LR, has_bn=has_bn)
    ph = frepo.ProtoHolder(np.asarray(data.x0, np.float32), np.asarray(data.y0, np.float32), IPC * NUM_CLASSES,
                           learn_label=True)
    learning_rate_fn = optax.cosine_decay_schedule(init_value=LR, decay_steps=total_steps, alpha=0.1)
    rng = jax.random.PRNGKey(seed)
    rng, _ = jax.random.split(rng)
    state = frepo.create_proto_state(rng, _FrozenInit(ph), learning_rate_fn, optimizer="lamb")
    jit_create_online_state = jax.jit(create_online_state)
    jit_get_sample_proto = jax.jit(functools.partial(frepo.get_sample_proto, use_pmap=False, bs=SAMPLE_BATCH))

    pool = []
    for i in range(POOL):
        rng, init_rng = jax.random.split(rng)
        nn_state = jit_create_online_state(init_rng)
        pool.append(dataclasses.replace(nn_state, **{"step": (MAX_UPDATES // POOL) * i}))
    idx = int(rng_np.integers(0, POOL))
    nn_state = pool[idx]

    feat_fn, jit_train_step, jit_nn_train_step_online = reference_steps(frepo, utils, metrics, has_bn)
    jit_feat_fn = jax.jit(feat_fn)
    loop = {"state": state, "nn_state": nn_state, "idx": idx, "rng": rng, "i": 0, "metrics": None}

    def one_step():
        """``proto_train_and_evaluate``'s loop body, without its logging, evaluation and saving."""
        s = loop
        rng, _ = jax.random.split(s["rng"])  # the loop's train_rng (unused by the step)
        image, label = utils.process_batch(batches[s["i"] % len(batches)], use_pmap=False, dtype=jnp.float32)
        s["i"] += 1
        feat = jit_feat_fn(image, s["nn_state"])
        s["state"], s["metrics"] = jit_train_step(s["state"], s["nn_state"], {"image": feat, "label": label})
        nn_state = s["nn_state"]
        if nn_state.step > MAX_UPDATES:  # a device sync per step, as in the reference
            rng, init_rng = jax.random.split(rng)
            nn_state = jit_create_online_state(init_rng)
        else:
            rng, train_rng = jax.random.split(rng)
            img, lb = jit_get_sample_proto(s["state"], train_rng)
            nn_state, _ = jit_nn_train_step_online(nn_state, {"image": img, "label": lb}, train_rng)
        pool[s["idx"]] = nn_state
        s["idx"] = int(rng_np.integers(0, POOL))
        s["nn_state"], s["rng"] = pool[s["idx"]], rng

    t = time.perf_counter()
    one_step()
    jax.block_until_ready((loop["state"], loop["metrics"], pool))
    compile_s = time.perf_counter() - t

    def block(steps: int) -> float:
        t = time.perf_counter()
        for _ in range(steps):
            one_step()
        jax.block_until_ready((loop["state"], loop["metrics"], pool))
        return (time.perf_counter() - t) / steps

    return compile_s, block


def _reference_process(conn, path: str, width: int, data: Data, total_steps: int, x64: bool) -> None:
    """The reference's own process: its JAX configuration (x64 off unless ``x64``), default malloc."""
    import jax

    jax.config.update("jax_enable_x64", bool(x64))
    compile_s, block = reference_side(path, width, data, total_steps)
    conn.send(compile_s)
    while True:
        request = conn.recv()
        if request == "stop":
            break
        conn.send(block(int(request)))


# --- memory: each side alone in its own process ------------------------------------------------

_MEMORY_LINE = "memory: "


def _rss_mb() -> float:
    """This process's peak resident set, ``VmHWM`` (``getrusage``'s ``ru_maxrss`` would carry the
    parent's peak over the fork and exec that started this process)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise SystemExit("no VmHWM in /proc/self/status: peak memory is measured on Linux only")


def _jax_peak_mb():
    import jax

    stats = jax.devices()[0].memory_stats()
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return stats["peak_bytes_in_use"] / 2**20


def memory_side(side: str, args) -> dict:
    """Run one side alone (build, compile, ``--memory-steps`` steps) and report its peaks."""
    import numpy as np

    if side == "db":
        from distillbench.runner.pipeline import enable_float64

        enable_float64()
        import jax  # noqa: F401 (started after enable_float64, as in a run)

        baseline = _rss_mb()  # the data are loaded by the side itself (as a run loads them)
        _, _, block = distillbench_side(args.width, args.memory_steps + 2)
    else:
        import jax

        jax.config.update("jax_enable_x64", bool(args.reference_x64))
        with np.load(args.data) as f:
            data = Data(f["x_train"], f["y_train"], f["x0"], f["y0"])
        baseline = _rss_mb()
        _, block = reference_side(args.reference, args.width, data, args.memory_steps + 2)
    block(args.memory_steps)
    return {"side": side, "peak_rss_mb": _rss_mb(), "baseline_rss_mb": baseline, "jax_peak_mb": _jax_peak_mb()}


def measure_memory(args, data: Data) -> dict:
    """Each side in a fresh subprocess of this script, one after the other."""
    import tempfile

    import numpy as np

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data.npz")
        np.savez(path, **data._asdict())
        for side in ("ref", "db"):
            cmd = [sys.executable, os.path.abspath(__file__), "--side", side, "--reference", args.reference,
                   "--width", str(args.width), "--memory-steps", str(args.memory_steps), "--data", path]
            if args.reference_x64:
                cmd.append("--reference-x64")
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                raise SystemExit(f"memory run of {side} failed: {result.stderr.strip()[-2000:]}")
            line = [x for x in result.stdout.splitlines() if x.startswith(_MEMORY_LINE)][-1]
            out[side] = json.loads(line[len(_MEMORY_LINE):])
    return out


# --- the comparison --------------------------------------------------------------------------

def measure_time(args) -> tuple[dict, Data]:
    """Alternating blocks: the reference in a child process, distillbench here."""
    import multiprocessing

    total = args.rounds * args.steps + args.warmup + 2
    data, db_compile, db_block = distillbench_side(args.width, total)
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    proc = context.Process(target=_reference_process,
                           args=(child, args.reference, args.width, data, total, args.reference_x64), daemon=True)
    proc.start()

    def receive():
        while not parent.poll(1.0):
            if not proc.is_alive():
                raise SystemExit(f"the reference's process ended (exit code {proc.exitcode}): see its error above")
        return parent.recv()

    ref_compile = receive()

    def ref_block(steps: int) -> float:
        parent.send(steps)
        return receive()

    times = {"ref": [], "db": []}
    try:
        if args.warmup:  # untimed: a pool network's second call may retrace in the reference (int -> array step)
            db_block(args.warmup)
            ref_block(args.warmup)
        for r in range(args.rounds):
            order = (("ref", ref_block), ("db", db_block)) if r % 2 == 0 else (("db", db_block), ("ref", ref_block))
            for name, block in order:
                times[name].append(block(args.steps))
                print(f"  round {r + 1} {name}: {1e3 * times[name][-1]:.0f} ms/step", flush=True)
    finally:
        if proc.is_alive():
            parent.send("stop")
        proc.join(60)
    ref, db = median(times["ref"]), median(times["db"])
    ratios = [d / f for d, f in zip(times["db"], times["ref"])]
    return dict(ref=ref, db=db, ratio=db / ref, ratio_range=(min(ratios), max(ratios)), ref_compile=ref_compile,
                db_compile=db_compile, n=len(data.y_train), shape=tuple(data.x_train.shape[1:])), data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help="a checkout of github.com/yongchao97/FRePo")
    parser.add_argument("--width", type=int, default=128, help="frepo-conv / the reference Conv's width")
    parser.add_argument("--rounds", type=int, default=5, help="alternating blocks per side (>= 5 for the bar)")
    parser.add_argument("--steps", type=int, default=3, help="steps per block")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per side after the first")
    parser.add_argument("--memory-steps", type=int, default=5, help="steps run by each side's memory process")
    parser.add_argument("--reference-x64", action="store_true",
                        help="run the reference with x64 on (distillbench's configuration) instead of its own")
    parser.add_argument("--skip-memory", action="store_true", help="time only")
    parser.add_argument("--side", choices=("ref", "db"), help=argparse.SUPPRESS)  # a memory subprocess
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(_MEMORY_LINE + json.dumps(memory_side(args.side, args)), flush=True)
        return
    banner("FRePo step: distillbench vs the reference's own functions (same run, interleaved)")
    from distillbench.runner.pipeline import enable_float64

    enable_float64()
    print(f"{IPC} ipc, {TARGETS} targets, width {args.width}, batch norm, pool {POOL} (reset after {MAX_UPDATES}), "
          f"float32 features; reference x64 {'on' if args.reference_x64 else 'off (its own)'}; "
          f"{args.rounds} rounds x {args.steps} steps per side", flush=True)
    m, data = measure_time(args)
    ok = m["ratio"] <= 1.0
    print(f"  {m['n']} train images {m['shape']}: reference {1e3 * m['ref']:.0f} ms, distillbench "
          f"{1e3 * m['db']:.0f} ms, ratio {m['ratio']:.2f} (per round {m['ratio_range'][0]:.2f}-"
          f"{m['ratio_range'][1]:.2f}); compile + first step: reference {m['ref_compile']:.1f} s, distillbench "
          f"{m['db_compile']:.1f} s", flush=True)
    rows = [("step time, ms (median)", f"{1e3 * m['ref']:.0f}", f"{1e3 * m['db']:.0f}", f"{m['ratio']:.2f}",
             f"<= 1.0 (aim 0.7) {'PASS' if ok else 'FAIL'}"),
            ("compile + first step, s", f"{m['ref_compile']:.1f}", f"{m['db_compile']:.1f}",
             f"{m['db_compile'] / m['ref_compile']:.2f}", "-")]
    if not args.skip_memory:
        mem = measure_memory(args, data)
        ref, db = mem["ref"], mem["db"]
        mem_ok = db["peak_rss_mb"] <= ref["peak_rss_mb"]
        ok &= mem_ok
        rows.append(("peak RSS, MiB (own process)", f"{ref['peak_rss_mb']:.0f}", f"{db['peak_rss_mb']:.0f}",
                     f"{db['peak_rss_mb'] / ref['peak_rss_mb']:.2f}", f"<= 1.0 {'PASS' if mem_ok else 'FAIL'}"))
        rows.append(("peak RSS over baseline, MiB", f"{ref['peak_rss_mb'] - ref['baseline_rss_mb']:.0f}",
                     f"{db['peak_rss_mb'] - db['baseline_rss_mb']:.0f}", "-", "-"))
        if ref["jax_peak_mb"] is not None and db["jax_peak_mb"] is not None:
            rows.append(("JAX peak bytes in use, MiB", f"{ref['jax_peak_mb']:.0f}", f"{db['jax_peak_mb']:.0f}",
                         f"{db['jax_peak_mb'] / ref['jax_peak_mb']:.2f}", "-"))
        else:
            print("  JAX memory_stats(): not reported by this CPU backend (peak RSS only)")
    print("\n| measure | reference | distillbench | ratio | bar |\n|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    finish(ok)


if __name__ == "__main__":
    main()
