"""Drive a planned sweep: skip cells already done on the same data, execute the rest, store each as it ends.

A cached ``done`` row is reused only when the data loaded now has the fingerprint the row
recorded; otherwise the cell re-runs and the reporter gets one line saying why. A cell whose row
cannot be saved (a full disk, a value the store cannot hold) is reported in one line and the
sweep goes on. With ``handle_signals``, SIGINT and SIGTERM stop the sweep between Python
bytecodes: the running cell is stored as ``interrupted`` (re-running retries it), the summary of
what finished is reported, and :class:`Interrupted` is raised. A signal that arrives while a row
is being saved waits until the save is over.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

from distillbench.registry import Registry
from distillbench.runner.execute import DataCache, Outcome, execute
from distillbench.runner.plan import Plan
from distillbench.runner.reporter import Reporter
from distillbench.store.database import ResultStore

_SIGNAL_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


class Interrupted(KeyboardInterrupt):
    """The sweep was stopped by a signal (``signum``: SIGINT or SIGTERM)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(_SIGNAL_NAMES.get(signum, str(signum)))
        self.signum = signum


class _Signals:
    """SIGINT/SIGTERM -> :class:`Interrupted`, held back while ``deferred()`` is active."""

    def __init__(self):
        self._deferring = False
        self._pending: int | None = None

    def handler(self, signum, frame) -> None:
        if self._deferring:
            self._pending = self._pending or signum
            return
        raise Interrupted(signum)

    @contextmanager
    def deferred(self):
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
            pending, self._pending = self._pending, None
            if pending is not None:
                raise Interrupted(pending)


@contextmanager
def _installed(signals: _Signals | None):
    if signals is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signals.handler) for s in _SIGNAL_NAMES}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _signum(exc: KeyboardInterrupt) -> int:
    return getattr(exc, "signum", signal.SIGINT)


def run_sweep(plan: Plan, registry: Registry, store: ResultStore, reporter: Reporter | None = None,
              force: bool = False, handle_signals: bool = False, launcher=None, compile_cache=None,
              view=None, retry_crashed: bool = False) -> list[Outcome]:
    """Run the plan's cells not yet done; ``launcher``: a non-``in_process`` one sends them to workers.

    ``compile_cache``: a folder for JAX's persistent compilation cache (in this process for the
    local launcher, in every worker otherwise). ``view``: a live view the launched path ticks.
    ``retry_crashed``: run again the cells that killed the process of an earlier run
    (:mod:`distillbench.runner.crashes`); without it they are skipped with their error.
    """
    reporter = reporter or Reporter()
    signals = _Signals() if handle_signals else None
    outcomes: list[Outcome] = []
    with _installed(signals):
        try:
            if launcher is None or launcher.in_process:
                if compile_cache is not None:
                    from distillbench.runner.cell import enable_compile_cache

                    enable_compile_cache(compile_cache)
                _run(plan, registry, store, reporter, _Policy(force, retry_crashed), signals, outcomes)
            else:
                _run_launched(plan, registry, store, reporter, force, signals, outcomes, launcher, compile_cache,
                              view)
        except KeyboardInterrupt as exc:  # Interrupted, or a KeyboardInterrupt outside our handler
            reporter.sweep_finished(outcomes)
            raise exc if isinstance(exc, Interrupted) else Interrupted(_signum(exc)) from None
    reporter.sweep_finished(outcomes)
    return outcomes


@dataclasses.dataclass(frozen=True)
class _Policy:
    """Which earlier outcomes a local sweep runs again: done cells (``force``), crashed ones."""

    force: bool = False
    retry_crashed: bool = False


def _run(plan, registry, store, reporter, policy: _Policy, signals, outcomes) -> None:
    from distillbench.runner import crashes
    from distillbench.runner.environment import collect_environment

    total = len(plan.configs)
    reporter.sweep_started(total)
    environment = None
    datasets = DataCache()
    deferred = signals.deferred if signals is not None else _nothing
    for index, config in enumerate(plan.configs, start=1):
        if _reuse(store, config, registry, datasets, reporter, index, total, policy.force, outcomes):
            continue
        if environment is None:
            environment = collect_environment()
        if _skip_crashed(store, config, environment, reporter, index, total, policy, outcomes):
            continue
        try:
            with crashes.watching(store.path, config.run_id):
                outcome = execute(config, registry, reporter, plan.options.get("timeout"), index, total, datasets)
        except KeyboardInterrupt as exc:
            message = f"interrupted by {_SIGNAL_NAMES.get(_signum(exc), 'a signal')}; re-run to retry"
            outcome = Outcome(config, "interrupted", message, plain=message)
            with deferred():
                if not store.is_done(config.run_id):  # a --force re-run never replaces a done result
                    outcome = _save(store, config, outcome, environment)
                reporter.run_finished(index, total, config.label(), outcome)
                outcomes.append(outcome)
            raise
        with deferred():  # a signal now is raised once the row is saved and the cell reported
            outcome = _save(store, config, outcome, environment)
            crashes.clear(store.path, config.run_id)  # it ended: earlier deaths no longer count
            reporter.run_finished(index, total, config.label(), outcome)
            outcomes.append(outcome)


def _reuse(store, config, registry, datasets, reporter, index, total, force, outcomes) -> bool:
    """Reports and keeps a cached ``done`` row still valid for ``config`` (True), else False."""
    record = None if force else store.get(config.run_id)
    if record is None or record.status != "done":
        return False
    reason = _stale(record, config, registry, datasets)
    if reason is not None:
        reporter.notice(f"re-running {config.label()}: {reason}")
        return False
    reporter.run_cached(index, total, config.label(), record)
    outcomes.append(Outcome(config, record.status, record.message, record.metrics, record.timings, cached=True,
                            data_fingerprint=record.data_fingerprint))
    return True


def _skip_crashed(store, config, environment, reporter, index, total, policy, outcomes) -> bool:
    """A cell that killed an earlier run's process: stored as ``error`` and skipped (True), unless
    ``--retry-crashed`` (its markers cleared, it runs)."""
    from distillbench.runner import crashes

    if policy.retry_crashed:
        crashes.clear(store.path, config.run_id)
        return False
    why = crashes.crash_report(store.path, config.run_id)
    if why is None:
        return False
    outcome = Outcome(config, "error", why, plain=why)
    if not store.is_done(config.run_id):  # a --force re-run never replaces a done result
        outcome = _save(store, config, outcome, environment)
    reporter.run_finished(index, total, config.label(), outcome)
    outcomes.append(outcome)
    return True


def _run_launched(plan, registry, store, reporter, force, signals, outcomes, launcher, compile_cache, view) -> None:
    """Send the cells not done to ``launcher``'s workers; ingest each finished cell's file (one writer).

    First the files that workers of an earlier driver finished (that driver was killed) are
    ingested, so those cells are not run again. Cells an earlier driver had submitted and that
    are still running are not waited for: they are submitted again (a Ray job dies with its
    driver; a SLURM job of a killed driver may still finish, and then its file is dropped at
    ingest, because the cell is already done).
    """
    from distillbench.runner.cell import cells_folder

    reporter.sweep_started(len(plan.configs))
    cells = cells_folder(store.path).resolve()  # absolute: a worker's working folder is not the driver's
    compile_cache = Path(compile_cache).resolve() if compile_cache is not None else None
    _ingest_earlier(plan, store, cells, reporter)
    replace_done: set[str] = set()  # --force, or a done row on stale data: this run's file replaces it
    tasks = _tasks(plan, registry, store, reporter, force, outcomes, launcher, cells, compile_cache, replace_done)
    if not tasks:
        return
    if view is not None:
        view.start([t.config for t in tasks], cells)
    finished = _finisher(plan, store, reporter, signals, outcomes, launcher, cells, replace_done, view)

    def tick() -> None:
        if view is not None:
            view.refresh()

    folder = store.path.parent / (store.path.name + f".{launcher.name}")
    try:
        launcher.run(tasks, finished, tick, folder)
    finally:
        if view is not None:
            view.stop()


def _ingest_earlier(plan, store, cells, reporter) -> None:
    """Store the cells that workers of an earlier (killed) driver finished; forget its progress files."""
    from distillbench.runner.cell import PROGRESS_SUFFIX, ingest

    by_id = {config.run_id: config for config in plan.configs}
    for outcome in ingest(store, cells, configs=by_id, notice=reporter.notice):
        reporter.notice(f"stored {outcome.config.label()} ({outcome.status}), finished after an earlier driver stopped")
    for stale in cells.glob(f"*{PROGRESS_SUFFIX}") if cells.is_dir() else []:
        stale.unlink(missing_ok=True)  # an earlier driver's running cells: not ours to show


def _tasks(plan, registry, store, reporter, force, outcomes, launcher, cells, compile_cache, replace_done) -> list:
    """The ``CellTask`` of every cell not done (cached ones reported and added to ``outcomes``)."""
    from distillbench.runner.cell import CellTask

    total = len(plan.configs)
    datasets = DataCache()
    tasks = []
    for index, config in enumerate(plan.configs, start=1):
        record = store.get(config.run_id)
        if record is not None and record.status == "done" and force:
            replace_done.add(config.run_id)
        elif record is not None and record.status == "done":
            reason = _stale(record, config, registry, datasets)
            if reason is None:
                reporter.run_cached(index, total, config.label(), record)
                outcomes.append(Outcome(config, record.status, record.message, record.metrics, record.timings,
                                        cached=True, data_fingerprint=record.data_fingerprint))
                continue
            reporter.notice(f"re-running {config.label()}: {reason}")
            replace_done.add(config.run_id)
        tasks.append(CellTask(config, str(cells), plan.options.get("timeout"),
                              str(compile_cache) if compile_cache is not None else None,
                              launcher.memory_fraction, index, total))
    return tasks


def _finisher(plan, store, reporter, signals, outcomes, launcher, cells, replace_done, view):
    """The launcher's ``finished(task, error)``: ingest the cell's file (the driver is the one
    writer) or store why the worker gave up; then report it."""
    from distillbench.runner.cell import ingest

    by_id = {config.run_id: config for config in plan.configs}
    index_of = {config.run_id: i for i, config in enumerate(plan.configs, start=1)}
    deferred = signals.deferred if signals is not None else _nothing

    def finished(task, error) -> None:
        with deferred():
            got = ingest(store, cells, run_ids={task.run_id}, configs=by_id, replace_done=replace_done,
                         notice=reporter.notice)
            replace_done.discard(task.run_id)  # replaced once: a second, late file of it is dropped
            if not got and error is None and store.is_done(task.run_id):
                return  # already stored (an earlier driver's file)
            if not got:
                got = [_worker_failed(store, task, error, launcher, replace_done)]
            for outcome in got:
                if outcome.config.run_id in index_of:
                    outcomes.append(outcome)
                    if view is not None:
                        view.finished(outcome)
                    i = index_of[outcome.config.run_id]
                    reporter.run_finished(i, len(plan.configs), outcome.config.label(), outcome)

    return finished


def _worker_failed(store, task, error, launcher, replace_done):
    """The cell's ``error`` outcome when its worker left no file; stored unless a done row stays."""
    from distillbench.launchers import reason

    why = reason(error) if error is not None else "the worker returned without writing its cell"
    message = f"worker failed ({launcher.name}): {why}"
    outcome = Outcome(task.config, "error", message, plain=message)
    if not store.is_done(task.run_id) or task.run_id in replace_done:
        outcome = _save(store, task.config, outcome, {})
    return outcome


def _save(store, config, outcome, environment):
    """Store one outcome and return it; a failure to save becomes this cell's error (the outcome
    returned says so) and never stops the sweep."""
    try:
        store.save(run_id=config.run_id, status=outcome.status, message=outcome.message,
                   config=config.to_dict(), metrics=outcome.metrics, timings=outcome.timings,
                   environment=environment or {}, arrays=outcome.arrays,
                   data_fingerprint=outcome.data_fingerprint, traceback=outcome.traceback)
    except Exception as exc:  # a full disk, a value SQLite cannot hold, a locked store, ...
        text = str(exc).strip().splitlines()
        reason = text[0] if text else type(exc).__name__
        was = "" if outcome.status == "done" else f" (it ended {outcome.status})"
        message = f"not saved{was}: {reason}"
        return dataclasses.replace(outcome, status="error", message=message, plain=message, arrays={})
    return outcome


def _stale(record, config, registry, datasets: DataCache) -> str | None:
    """Why a done row may not be reused for this config now (None: reuse it)."""
    from distillbench.components.datasets import check_datasplit
    from distillbench.runner.execute import enable_float64

    if record.data_fingerprint is None:
        return "the cached run recorded no data fingerprint (stored by an older distillbench)"
    enable_float64()
    try:
        _, now, _ = datasets.load(config, lambda: check_datasplit(
            registry.instantiate("dataset", config.dataset.name, config.dataset.as_dict()), config.dataset.name))
    except Exception as exc:
        text = str(exc).strip().splitlines()
        return f"the data no longer loads ({text[0] if text else type(exc).__name__})"
    if now != record.data_fingerprint:
        return f"data changed since the cached run (fingerprint {record.data_fingerprint[:12]} -> {now[:12]})"
    return None


@contextmanager
def _nothing():
    yield
