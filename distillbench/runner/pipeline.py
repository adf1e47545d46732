"""The stages of one run, each a function that returns a value: build, distill, evaluate, record.

The pieces are public so that the conformance suite (``distillbench.testing``) runs components
exactly as a run does: :func:`enable_float64`, :func:`train_data`, :func:`make_kernel`.

Blame: each stage runs inside :func:`running`, which names the components whose code runs there.
An exception leaving it carries those names (:func:`involved_in`), so ``Registry.describe_failure``
can name the failing third-party component without a list threaded through every call.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import hashlib
import json
import math
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from distillbench.registry import Registry
from distillbench.params import RIDGE
from distillbench.records import Artifact, ComponentChoice, LabeledSet, Metrics, RunConfig, RunResult, Timings
from distillbench.runner.reporter import Reporter

PROGRESS_INTERVAL_S = 0.25  # the progress display only
#: Loss history, divergence and early stopping: every ``max(MIN_CHECK_EVERY, ceil(steps / HISTORY_POINTS))``
#: steps. A sync stalls the dispatch queue once, so never every step.
MIN_CHECK_EVERY = 10
HISTORY_POINTS = 100

#: (kind, name) of the components whose code runs now; a tuple, replaced, never mutated.
#: ``None`` outside any :func:`running` stage.
_RUNNING: contextvars.ContextVar[tuple[tuple[str, str], ...] | None] = contextvars.ContextVar(
    "distillbench_running", default=None)
_BLAME_ATTR = "_distillbench_involved"


def enable_float64() -> None:
    """Runs compute in float64 where a component asks for it (KRR solves, exact kernels), with
    convolutions lowered as distillbench lowers them on the CPU (:mod:`distillbench.compat.conv_lowering`:
    float64 ones routed around XLA:CPU's, others in its canonical layout), and
    malloc set to reuse the steps' large temporaries (:func:`keep_freed_memory`)."""
    import jax

    from distillbench.compat import conv_lowering

    keep_freed_memory()
    jax.config.update("jax_enable_x64", True)
    conv_lowering.install()


def train_data(data) -> Any:
    """The ``TrainData`` a run hands ``Distiller.step``: device arrays, mean-centered one-hot ``y``."""
    import jax.numpy as jnp

    from distillbench.components.objectives import TrainData
    from distillbench.krr import centered_one_hot

    return TrainData(
        x=jnp.asarray(data.x_train),
        y=centered_one_hot(jnp.asarray(data.y_train), data.num_classes),
        labels=jnp.asarray(data.y_train, dtype=jnp.int32),
    )


def make_kernel(registry: Registry, name: str, params: Mapping[str, Any]):
    """Build kernel ``name`` with its defaults overridden by ``params`` (validated by its ``Param``s).

    Parameters the kernel does not declare are ignored (e.g. an ``arch`` handed to a kernel that has
    none). Inside a :func:`running` stage the kernel joins the components blamed for a failure.
    """
    now = _RUNNING.get()
    if now is not None and ("kernel", name) not in now:
        _RUNNING.set(now + (("kernel", name),))
    component = registry.get("kernel", name)
    resolved = component.default_params()
    for key, value in params.items():
        param = component.param(key)
        if param is not None:
            resolved[key] = param.validate(value, owner="kernel")
    return registry.instantiate("kernel", name, resolved)


@contextlib.contextmanager
def running(*components: tuple[str, str]) -> Iterator[None]:
    """Run a stage with ``components`` ((kind, name) pairs) named as the code that runs in it.

    An exception leaving the stage is annotated with them (and any kernel :func:`make_kernel` built
    inside it), unless an inner stage already did.
    """
    token = _RUNNING.set(tuple(components))
    try:
        yield
    except BaseException as exc:
        if not hasattr(exc, _BLAME_ATTR):
            try:
                setattr(exc, _BLAME_ATTR, _RUNNING.get() or ())
            except AttributeError:
                pass  # an exception type without attributes: blamed on nothing
        raise
    finally:
        _RUNNING.reset(token)


def involved_in(exc: BaseException) -> tuple[tuple[str, str], ...]:
    """The (kind, name) components that ran when ``exc`` was raised (empty outside any stage)."""
    return getattr(exc, _BLAME_ATTR, ())


def data_fingerprint(data) -> str:
    """A content hash of a ``DataSplit``: every array's dtype, shape and bytes, and the class count.

    blake2b runs at about 1 GB/s, so even CIFAR-10 costs well under a second.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(f"num_classes={int(data.num_classes)};".encode())
    for name in ("x_train", "y_train", "x_test", "y_test"):
        arr = np.ascontiguousarray(getattr(data, name))
        h.update(f"{name}:{arr.dtype.str}:{arr.shape};".encode())
        h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


class DataCache:
    """The last dataset a sweep loaded, with its fingerprint: cells of one dataset load it once."""

    def __init__(self):
        self._key: str | None = None
        self._value = None

    def load(self, config: RunConfig, build) -> tuple[Any, str, float]:
        """``(DataSplit, fingerprint, seconds spent loading)``; ``build()`` loads it (exceptions propagate)."""
        key = json.dumps(config.to_dict()["dataset"], sort_keys=True, default=str)
        if key != self._key:
            self._key, self._value = None, None  # free the previous split before loading the next
            t = time.perf_counter()
            data = build()
            fingerprint = data_fingerprint(data)
            self._key, self._value = key, (data, fingerprint, time.perf_counter() - t)
            return self._value
        data, fingerprint, _ = self._value
        return data, fingerprint, 0.0


class Loaded(NamedTuple):
    """The run's data, its content hash and the seconds spent loading it (0 when cached)."""

    data: Any
    fingerprint: str
    data_s: float


class Built(NamedTuple):
    """The run's components, built and checked against their contracts."""

    kernel: Any
    loss: Any
    evaluator: Any
    distiller: Any


class Progress(NamedTuple):
    """Where a run reports its progress, and when it must stop (``timeout`` seconds after ``start``)."""

    reporter: Reporter
    index: int = 1
    total: int = 1
    timeout: float | None = None
    start: float = 0.0


class Distilled(NamedTuple):
    """The end of the loop: ``status`` is ``done``, ``diverged`` or ``timeout``."""

    status: str
    message: str | None
    state: Any
    history: tuple[tuple[int, float], ...]  # (step, loss) at the loop's sync points
    num_steps: int  # the steps the objective asked for
    stopped_early_at: int | None
    timings: dict[str, float]
    settings: Mapping[str, Any] | None = None  # what the objective resolved (``Distiller.settings``)


class Evaluation(NamedTuple):
    """The distilled set (a ``Support``) and its random real baseline (host arrays), and their scores."""

    support: Any
    baseline: LabeledSet
    metrics: dict[str, Any]
    eval_s: float


def check_interval(num_steps: int) -> int:
    """Steps between the loop's sync points: a function of the step count only."""
    return max(MIN_CHECK_EVERY, math.ceil(num_steps / HISTORY_POINTS))


def load_data(config: RunConfig, registry: Registry, datasets: DataCache) -> Loaded:
    """Stage 0: the dataset, through the sweep's cache (cells of one dataset load it once)."""
    choice = config.dataset
    with running(("dataset", choice.name)):  # instantiate checks the split against the dataset contract
        return Loaded(*datasets.load(config, lambda: registry.instantiate("dataset", choice.name, choice.as_dict())))


def build_components(config: RunConfig, registry: Registry, data) -> Built:
    """Stage 1: kernel, loss, evaluator and the objective's ``Distiller`` for this problem."""
    from distillbench.components.objectives import Problem

    from distillbench.runner.plan import builder_params

    def build(kind):
        choice = config.choice(kind)
        with running((kind, choice.name)):
            return registry.instantiate(kind, choice.name, builder_params(choice, config, registry))

    kernel, loss, evaluator, make = build("kernel"), build("loss"), build("evaluator"), build("objective")
    with running(*_names(config, "objective", "kernel", "loss")):
        distiller = make(Problem(data, config.ipc, kernel, loss, config.seed))
    return Built(kernel, loss, evaluator, distiller)


def distill(config: RunConfig, built: Built, train, progress: Progress) -> Distilled:
    """Stage 2: compile ``step`` ahead of time (``compile_s``), time the first step, then loop."""
    import jax

    distiller = built.distiller
    n = distiller.num_steps
    with running(*_names(config, "objective", "kernel", "loss")):
        init_key, step_key = jax.random.split(jax.random.PRNGKey(config.seed))
        state = distiller.init(init_key)
        progress.reporter.run_started(progress.index, progress.total, config.label(), n)
        if n == 0:
            return Distilled("done", None, state, (), 0, None, {}, distiller.settings)

        t = time.perf_counter()
        step = compiled_step(distiller, state, train, step_key)
        compile_s = time.perf_counter() - t
        state = _own_buffers(state)
        t = time.perf_counter()
        state, loss_value = step(state, train, step_key, np.int32(0))
        first = float(loss_value)  # blocks
        timings = {"compile_s": compile_s, "first_step_s": time.perf_counter() - t}
        place_temporaries(step, timings["first_step_s"])
        progress.reporter.run_progress(1, n, first, 0.0)
        if not math.isfinite(first):
            return Distilled("diverged", f"loss became {first} at step 1", state, ((1, first),), n, None, timings,
                             distiller.settings)
        end, steady_s = _steady_loop(step, state, train, step_key, n, first, progress, distiller.stopped)
    timings.update(end.timings, distill_s=steady_s + timings["first_step_s"])
    return end._replace(history=((1, first), *end.history), timings=timings, settings=distiller.settings)


def compiled_step(distiller, state, train, step_key):
    """``distiller.step`` compiled ahead of time for ``(state, train, step_key, i)``, with step
    ``i``'s key ``fold_in(step_key, i)``.

    The state is donated: each step writes the next state into the buffers of the one it read
    (no fresh allocation and no copy of pass-through leaves per step). Callers keep only the
    state a step returned (:func:`_own_buffers` for the first one).
    """
    import jax

    def one_step(state, train, key, i):
        return distiller.step(state, train, jax.random.fold_in(key, i))

    return jax.jit(one_step, donate_argnums=0).lower(state, train, step_key, np.int32(0)).compile()


#: Freed blocks up to this size stay in the process for reuse (``keep_freed_memory``).
MALLOC_KEEP_BYTES = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # glibc's mallopt parameters
_MALLOC_KEPT: bool | None = None


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep and reuse freed blocks of up to :data:`MALLOC_KEEP_BYTES`, from one
    arena for all threads (once per process; True when set). Allocator only: no number changes.

    XLA:CPU allocates a step's temporaries, one block, at every execution. With glibc's defaults a
    block that large (KIP fc1, 5000 float64 targets: ~76 MB) is mmapped, unmapped when freed and
    page-faulted back in at the next step (~19,500 faults, ~25 ms of system time a step on the
    reference VM); a thread's own arena cannot hold a block over 64 MB, hence one arena. It must
    run before JAX starts its CPU threads: :func:`enable_float64` calls it. Elsewhere (other C
    libraries, other systems) it does nothing. ``benchmarks/breakdown_kip_step.py`` measures it.
    Each compiled step then says whether its own block is reused (:func:`place_temporaries`).
    """
    global _MALLOC_KEPT
    if _MALLOC_KEPT is None:
        _MALLOC_KEPT = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL("libc.so.6")
                _MALLOC_KEPT = all([libc.mallopt(_M_ARENA_MAX, 1), libc.mallopt(_M_MMAP_THRESHOLD, MALLOC_KEEP_BYTES),
                                    libc.mallopt(_M_TRIM_THRESHOLD, MALLOC_KEEP_BYTES)])
            except (OSError, AttributeError):
                pass
    return _MALLOC_KEPT


#: Page faults of a freshly mapped block: seconds per byte (1.3 us per 4 KiB page, the reference VM).
FAULT_SECONDS_PER_BYTE = 1.3e-6 / 4096
#: A step's temporary block this large or larger is mapped afresh at every step ...
MAP_AFRESH_FROM_BYTES = 128 << 20  # 256 MiB before RCIG's 217 MiB block was seen held twice
#: ... unless faulting it would cost more than this share of the step's first call.
REUSE_ABOVE_FAULT_SHARE = 0.10


def place_temporaries(compiled, step_seconds: float) -> bool | None:
    """After a compiled step's first call (``step_seconds``): keep its temporary block in the heap
    for reuse (True) or let malloc map it afresh at every step (False); None where malloc is not
    managed here or the backend reports no temporaries.

    Reuse saves the block's page faults each step (KIP's short steps: 20-40% of the step), but a
    block freed inside the heap can be split by a small allocation before the next step, which then
    takes a second block, and the process holds the block twice from then on: 4 of 15 FRePo runs
    did (446 MiB; peak RSS 1975 against 1535 MiB), and 3 of 7 RCIG runs at width 32 (217 MiB; 1565
    against 1345 MiB). So a block of :data:`MAP_AFRESH_FROM_BYTES` or more is mapped afresh unless its
    faults would cost more than :data:`REUSE_ABOVE_FAULT_SHARE` of the step (FRePo width 128: 370 MiB,
    ~2%; RCIG: ~1.6%); smaller blocks risk little and are kept (KIP fc1, the reduced RFAD step). When mapping
    afresh, the heap's free memory is handed back once, so the first call's block is not held too.
    """
    if not _MALLOC_KEPT:
        return None
    temp = _temporaries(compiled)
    if not temp or not step_seconds > 0:
        return None
    reuse = temp < MAP_AFRESH_FROM_BYTES or temp * FAULT_SECONDS_PER_BYTE > REUSE_ABOVE_FAULT_SHARE * step_seconds
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(_M_MMAP_THRESHOLD, MALLOC_KEEP_BYTES if reuse else max(temp // 2, 1))
    if not reuse:
        libc.malloc_trim(0)
    return reuse


def _temporaries(compiled) -> int | None:
    """The compiled program's temporary bytes, where the backend reports them."""
    try:
        return getattr(compiled.memory_analysis(), "temp_size_in_bytes", None)
    except Exception:  # noqa: BLE001 (a backend without the analysis: keep malloc as it is)
        return None


def _own_buffers(state):
    """``state`` with every array leaf copied once, so that donating it to the compiled step never
    invalidates an array the objective also holds elsewhere (or holds twice in the state)."""
    import jax

    return jax.tree_util.tree_map(lambda a: a.copy() if isinstance(a, jax.Array) else a, state)


def _steady_loop(step, state, train, step_key, n, first, progress: Progress, stopped) -> tuple[Distilled, float]:
    """Steps 2..n, and the seconds they took.

    Syncs (loss history, divergence, ``stopped``) happen at steps that are multiples of
    :func:`check_interval` and at the last step, never at wall-clock points.
    """
    every = check_interval(n)
    t_steady = last_report = time.perf_counter()
    last_value, history, end = first, [], ("done", None, None)
    done, loss_value = 1, None
    for i in range(1, n):
        state, loss_value = step(state, train, step_key, np.int32(i))
        done = i + 1
        last = done == n
        if last or done % every == 0:
            last_value = float(loss_value)  # blocks: the loop's sync points, at fixed step indices
            history.append((done, last_value))
            if not math.isfinite(last_value):
                end = ("diverged", f"loss became {last_value} by step {done}", None)
                break
            if stopped is not None and not last and bool(stopped(state)):
                end = ("done", None, done)
                break
        now = time.perf_counter()
        if last or now - last_report >= PROGRESS_INTERVAL_S:  # display only: the last synced loss
            progress.reporter.run_progress(done, n, last_value, (done - 1) / max(now - t_steady, 1e-12))
            last_report = now
        if progress.timeout is not None and now - progress.start > progress.timeout and not last:
            if (history[-1][0] if history else 1) != done:
                history.append((done, float(loss_value)))  # blocks
            end = ("timeout", f"stopped after {done} of {n} steps: timeout={progress.timeout:g}s exceeded", None)
            break
    if loss_value is not None:
        loss_value.block_until_ready()
    steady = time.perf_counter() - t_steady
    timings = {"step_s": steady / (done - 1), "steps_per_s": (done - 1) / steady if steady > 0 else None} \
        if done > 1 else {}
    return Distilled(end[0], end[1], state, tuple(history), n, end[2], timings), steady


def evaluate(config: RunConfig, registry: Registry, data, built: Built, distilled: Distilled) -> Evaluation:
    """Stage 3: score the distilled set and the class-balanced random real subset of its size."""
    import jax

    from distillbench.components.objectives import Support

    with running(*_names(config, "objective", "kernel", "loss")):
        support = built.distiller.support(distilled.state)
        support = Support(np.asarray(support.x), np.asarray(support.y),
                          jax.tree_util.tree_map(np.asarray, support.loss_params))
    baseline = random_baseline(data, config.ipc, config.seed)
    ctx = eval_context(registry, data, built.loss, built.kernel.arch, config.objective, config.seed)
    with running(*_names(config, "evaluator", "loss")):
        metrics, eval_s = score_sets(built.evaluator, support, baseline, ctx)
    return Evaluation(support, baseline, metrics, eval_s)


def random_baseline(data, ipc: int, seed: int) -> LabeledSet:
    """The class-balanced random real subset a set of ``ipc`` images per class is scored against
    (``run``'s fixed labels: centered one-hot rows); the same draw for ``run`` and an external set."""
    from distillbench.krr import centered_one_hot
    from distillbench.sampling import balanced_subset

    idx = balanced_subset(data.y_train, ipc, data.num_classes, seed)
    return LabeledSet(data.x_train[idx], np.asarray(centered_one_hot(data.y_train[idx], data.num_classes)))


def eval_context(registry: Registry, data, loss, run_kernel_arch, objective: ComponentChoice | None, seed: int):
    """The ``EvalContext`` of a distilled set: shared by ``run`` and ``distillbench evaluate``.
    ``objective``: the run's (``None``: a set made elsewhere); its ridge is the parameter it declares so."""
    from distillbench.components.evaluators import EvalContext

    params = objective.as_dict() if objective is not None else {}
    return EvalContext(data=data, loss=loss, run_kernel_arch=run_kernel_arch, objective_params=params,
                       make_kernel=lambda name, **kw: make_kernel(registry, name, kw), seed=seed,
                       ridge=declared_ridge(registry, objective))


def declared_ridge(registry: Registry, objective: ComponentChoice | None) -> float | None:
    """The value of ``objective``'s parameter declared ``Param(role="ridge")``; ``None`` when it
    declares none or is not installed."""
    if objective is None or objective.name not in registry.names("objective"):
        return None
    params = objective.as_dict()
    return next((params.get(p.name) for p in registry.get("objective", objective.name).params if p.role == RIDGE),
                None)


def score_sets(evaluator, support, baseline: LabeledSet, ctx) -> tuple[dict[str, Any], float]:
    """Score the distilled set (a ``Support``) and its random baseline (:func:`random_baseline`, scored
    with the loss's initial parameters) with one evaluator: ``(metrics, eval_s)``.

    The one scoring path of ``run`` and ``distillbench evaluate``, so a set re-scored later gets
    the numbers it would have got in its run.
    """
    from distillbench.components.objectives import Support

    t = time.perf_counter()
    distilled = evaluator.evaluate(support, ctx)
    random = evaluator.evaluate(Support(baseline.x, baseline.y, ctx.loss.init()), ctx)
    eval_s = time.perf_counter() - t
    # numbers are metrics; text values say what ran (eval_kernel, eval_arch), the same for both sets
    metrics = {k: v if v is None or isinstance(v, str) else float(v) for k, v in distilled.items()}
    metrics.update({f"random_{k}": float(v) for k, v in random.items() if not (v is None or isinstance(v, str))})
    if "acc" in distilled and "acc" in random:
        metrics["gain"] = float(distilled["acc"]) - float(random["acc"])
    return metrics, eval_s


def record(config: RunConfig, loaded: Loaded, distilled: Distilled, evaluation: Evaluation | None) -> RunResult:
    """Stage 4: the run's result, from the values the stages returned (``evaluation`` only when done)."""
    history = np.asarray(distilled.history, dtype=np.float64).reshape(-1, 2)
    timings = {"data_s": loaded.data_s, **distilled.timings}
    metrics: dict[str, Any] = {}
    if distilled.stopped_early_at is not None:
        metrics["stopped_early_at"] = distilled.stopped_early_at
    metrics.update(objective_settings(distilled.settings))
    if evaluation is None:
        metrics["steps_run"] = max((step for step, _ in distilled.history), default=0)
        return RunResult(config, distilled.status, distilled.message, Metrics.from_dict(metrics),
                         Timings.from_dict(timings), Artifact(loss_history=history),
                         data_fingerprint=loaded.fingerprint)
    timings["eval_s"] = evaluation.eval_s
    metrics.update(evaluation.metrics)
    if distilled.history:
        metrics["loss_first"], metrics["loss_final"] = distilled.history[0][1], distilled.history[-1][1]
    metrics["steps_run"] = distilled.stopped_early_at or distilled.num_steps
    loss_params = _flat_loss_params(evaluation.support.loss_params)
    metrics.update({f"loss_param_{name}": value for name, value in loss_params.items()})
    artifact = Artifact(LabeledSet(evaluation.support.x, evaluation.support.y), evaluation.baseline, history,
                        {name: np.asarray(value) for name, value in loss_params.items()})
    return RunResult(config, "done", None, Metrics.from_dict(metrics), Timings.from_dict(timings), artifact,
                     data_fingerprint=loaded.fingerprint)


def objective_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """``Distiller.settings`` as metrics: ``objective_<name>``, numpy scalars as Python values."""
    return {f"objective_{key}": value.item() if isinstance(value, np.generic) else value
            for key, value in (settings or {}).items()}


def _flat_loss_params(params) -> dict[str, float]:
    out = {}
    if isinstance(params, dict):
        for key, value in params.items():
            arr = np.asarray(value)
            if arr.size == 1:
                out[key] = float(arr.reshape(()))
    return out


def _names(config: RunConfig, *kinds: str) -> tuple[tuple[str, str], ...]:
    return tuple((kind, config.choice(kind).name) for kind in kinds)
