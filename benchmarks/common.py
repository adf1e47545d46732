"""Shared helpers for the benchmark scripts: machine/version banner, medians, CLI timing."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # for helpers shared with the tests (none needed yet)

from distillbench.compat import xla_flags  # noqa: E402

# The scripts import this module before JAX, so they time what the CLI runs: with its XLA flags.
xla_flags.apply()


def banner(title: str) -> None:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for name in ("distillbench", "jax", "jaxlib", "neural-tangents", "flax", "optax"):
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} -")
    print(f"== {title}")
    print(f"machine: {cpu}, {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}")
    print("versions: " + ", ".join(versions))
    print(f"XLA_FLAGS: {os.environ.get('XLA_FLAGS', '') or '(none)'}")


def median(values) -> float:
    return statistics.median(values)


def timed_ms(fn, *args, repeats: int) -> float:
    """Median ms of ``repeats`` synced calls of ``fn(*args)``, after a first call that compiles."""
    import time

    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * median(times)


def ab_rounds(script: str, sides: tuple[str, str], rounds: int, repeats: int) -> dict[str, list[dict]]:
    """An A/B of process-wide settings: per round one child process per side, the sides alternating
    (``script --child SIDE --repeats N`` prints one JSON object of part -> ms); exits on a failed child."""
    import json

    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for _ in range(rounds):
        for side in sides:
            out = subprocess.run([sys.executable, script, "--child", side, "--repeats", str(repeats)],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"{side}: exit {out.returncode}\n{out.stderr[-800:]}")
            runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
    return runs


def ab_main(doc: str, title: str, sides: tuple[str, str], parts, width: int = 40) -> None:
    """The command line of an A/B of distillbench's CPU lowering of convolutions: the first side runs
    with it (``enable_float64()``, as every run), the second with ``jax_enable_x64`` alone; ``parts(repeats)``
    returns part -> ms in a child process."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", choices=sides, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import jax

        if args.child == sides[0]:
            from distillbench.runner.pipeline import enable_float64

            enable_float64()
        else:
            jax.config.update("jax_enable_x64", True)
        print(json.dumps(parts(args.repeats)))
        return
    banner(title)
    print_ab(ab_rounds(sys.argv[0], sides, args.rounds, args.repeats), width=width)


def print_ab(runs: dict[str, list[dict]], width: int = 40) -> None:
    """Each part's median over rounds per side, and the median per-round ratio first side / second."""
    a_side, b_side = runs
    print(f"{'part':{width}s} {a_side + ' ms':>12s} {b_side + ' ms':>10s} {'ratio':>6s}")
    for part in runs[a_side][0]:
        a = median([r[part] for r in runs[a_side]])
        b = median([r[part] for r in runs[b_side]])
        ratio = median([r[part] / x[part] for r, x in zip(runs[a_side], runs[b_side])])
        print(f"{part:{width}s} {a:12.1f} {b:10.1f} {ratio:6.2f}")


def matmul_peak_gflops(size: int = 2048, repeats: int = 10) -> float:
    """This machine's float32 matrix-multiply throughput under XLA, all cores (median GFLOP/s).

    A large square product is the best case for the hardware, so ``flops / peak`` is the compute
    floor of any float32 workload, measured in the same run as the workload itself.
    """
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    product = jax.jit(jnp.matmul)
    product(a, a).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        product(a, a).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * size**3 / median(times) / 1e9


def time_command(argv: list[str], repeats: int, env: dict | None = None, cwd: str | None = None) -> list[float]:
    """Wall times of ``repeats`` runs of a command (each must exit 0)."""
    times = []
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    for _ in range(repeats):
        t = time.perf_counter()
        result = subprocess.run(argv, capture_output=True, text=True, env=full_env, cwd=cwd)
        times.append(time.perf_counter() - t)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    return times


def distillbench_cli() -> list[str]:
    exe = Path(sys.executable).with_name("distillbench")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "distillbench.cli"]


def save_benchmark(store_path, config, bench: str, metrics: dict, timings: dict) -> str:
    """Store one benchmark figure as a ``done`` run in a results store (``distillbench report``
    shows it: ``step_s`` in the timings is its time column).

    ``config``: a ``RunConfig`` from ``distillbench.runner.plan.plan`` describing the measured
    setting. The row's ``run_id`` is the config's hashed with ``bench`` (a benchmark figure never
    replaces a real run of the same config); ``metrics["benchmark"]`` names the script.
    """
    import hashlib

    from distillbench.records import Metrics, RunResult, Timings
    from distillbench.runner.environment import collect_environment
    from distillbench.store.database import ResultStore

    run_id = hashlib.sha256(f"{bench}:{config.run_id}".encode()).hexdigest()[:16]
    with ResultStore(store_path) as store:
        store.save(RunResult(config, metrics=Metrics.from_dict({"benchmark": bench, **metrics}),
                             timings=Timings.from_dict(timings), environment=collect_environment(), run_id=run_id))
    print(f"  stored in {store_path} (run {run_id})")
    return run_id


def finish(ok: bool) -> None:
    """Print the overall verdict and exit with it (non-zero on FAIL)."""
    print("\nPASS" if ok else "\nFAIL")
    sys.exit(0 if ok else 1)


class Prepared(NamedTuple):
    """A run of ``distillbench run ARGS`` made ready to step, as the runner makes it."""

    config: Any
    data: Any  # the dataset split
    train: Any  # TrainData on device
    distiller: Any
    state0: Any
    step_key: Any


def prepared_run(args: list[str]) -> Prepared:
    """Plan ``args`` (one cell), load its data, build its components and the distiller's first
    state, with the keys the runner derives from the run seed."""
    import jax

    from distillbench.registry import load_registry
    from distillbench.runner import pipeline
    from distillbench.runner.plan import plan

    registry = load_registry()
    (config,) = plan(args, registry).configs
    loaded = pipeline.load_data(config, registry, pipeline.DataCache())
    distiller = pipeline.build_components(config, registry, loaded.data).distiller
    init_key, step_key = jax.random.split(jax.random.PRNGKey(config.seed))
    return Prepared(config, loaded.data, pipeline.train_data(loaded.data), distiller, distiller.init(init_key), step_key)
