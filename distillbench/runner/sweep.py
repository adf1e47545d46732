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
from collections.abc import Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillbench.records import RunConfig, RunRecord, RunResult
from distillbench.registry import Registry
from distillbench.runner.execute import DataCache, execute
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
              view=None, retry_crashed: bool = False) -> list[RunResult]:
    """Run the plan's cells not yet done; ``launcher``: a non-``in_process`` one sends them to workers.

    ``compile_cache``: a folder for JAX's persistent compilation cache (in this process for the
    local launcher, in every worker otherwise). ``view``: a live view the launched path ticks.
    ``retry_crashed``: run again the cells that killed the process of an earlier run
    (:mod:`distillbench.runner.crashes`); without it they are skipped with their error.
    """
    sweep = Sweep(store, registry, reporter or Reporter(), len(plan.configs),
                  _Signals() if handle_signals else None, force=force)
    with _installed(sweep.signals):
        try:
            if launcher is None or launcher.in_process:
                if compile_cache is not None:
                    from distillbench.runner.cell import enable_compile_cache

                    enable_compile_cache(compile_cache)
                _run_here(sweep, plan, retry_crashed)
            else:
                _Launched.start(sweep, plan, launcher, compile_cache, view)
        except KeyboardInterrupt as exc:  # Interrupted, or a KeyboardInterrupt outside our handler
            sweep.reporter.sweep_finished(sweep.results)
            raise exc if isinstance(exc, Interrupted) else Interrupted(_signum(exc)) from None
    sweep.reporter.sweep_finished(sweep.results)
    return sweep.results


@dataclass
class Sweep:
    """One sweep's context, ``run``'s and ``evaluate``'s alike: where its jobs' results are stored
    and reported, and ``results``, in the order they ended. ``force``: done rows are run again."""

    store: ResultStore
    registry: Registry
    reporter: Reporter
    total: int
    signals: _Signals | None = None
    force: bool = False
    datasets: DataCache = field(default_factory=DataCache)
    results: list[RunResult] = field(default_factory=list)
    _environment: Mapping[str, Any] | None = field(default=None, init=False, repr=False)

    def deferred(self):
        """A signal arriving inside is raised once the block is over (a row is never half reported)."""
        return self.signals.deferred() if self.signals is not None else nullcontext()

    def environment(self) -> Mapping[str, Any]:
        """Where this process runs (collected once, at the first job it runs)."""
        if self._environment is None:
            from distillbench.runner.environment import collect_environment

            self._environment = collect_environment()
        return self._environment

    def reuse(self, index: int, record: RunRecord, config: RunConfig) -> None:
        """A done row kept: reported as cached, its cached result added."""
        self.reporter.run_cached(index, self.total, config.label(), record)
        self.results.append(record.result(config))

    def finish(self, index: int, result: RunResult, *, save: bool = True) -> RunResult:
        """Store a result this process made (with its environment), report it and keep it;
        ``save=False``: one already stored (a worker's file the driver ingested)."""
        with self.deferred():
            if save:
                result = self.save(dataclasses.replace(result, environment=self.environment()))
            self.reporter.run_finished(index, self.total, result.config.label(), result)
            self.results.append(result)
        return result

    def save(self, result: RunResult) -> RunResult:
        """Store ``result`` and return it; a failure to save becomes its error (the result returned
        says so) and never stops the sweep. The store keeps a done row over any later failure."""
        try:
            self.store.save(result)
        except Exception as exc:  # a full disk, a value SQLite cannot hold, a locked store, ...
            text = str(exc).strip().splitlines()
            reason = text[0] if text else type(exc).__name__
            was = "" if result.status == "done" else f" (it ended {result.status})"
            message = f"not saved{was}: {reason}"
            return dataclasses.replace(result, status="error", message=message, plain=message, artifact=None)
        return result

    def cached(self, index: int, config: RunConfig) -> bool:
        """Reuse the done row of ``config`` when it is still valid (True); a stale one is run again,
        with one line saying why, and so is every row under ``force``."""
        record = None if self.force else self.store.get(config.run_id)
        if record is None or record.status != "done":
            return False
        reason = _stale(record, config, self.registry, self.datasets)
        if reason is not None:
            self.reporter.notice(f"re-running {config.label()}: {reason}")
            return False
        self.reuse(index, record, config)
        return True


def _run_here(sweep: Sweep, plan: Plan, retry_crashed: bool) -> None:
    """Run the plan's cells in this process, one after another."""
    from distillbench.runner import crashes

    sweep.reporter.sweep_started(sweep.total)
    for index, config in enumerate(plan.configs, start=1):
        if sweep.cached(index, config) or _skip_crashed(sweep, index, config, retry_crashed):
            continue
        try:
            with crashes.watching(sweep.store.path, config.run_id):
                result = execute(config, sweep.registry, reporter=sweep.reporter, timeout=plan.options.timeout,
                                 position=(index, sweep.total), datasets=sweep.datasets)
        except KeyboardInterrupt as exc:
            message = f"interrupted by {_SIGNAL_NAMES.get(_signum(exc), 'a signal')}; re-run to retry"
            sweep.finish(index, RunResult(config, "interrupted", message, plain=message))
            raise
        with sweep.deferred():  # a signal now is raised once the row is saved and the cell reported
            sweep.finish(index, result)
            crashes.clear(sweep.store.path, config.run_id)  # it ended: earlier deaths no longer count


def _skip_crashed(sweep: Sweep, index: int, config: RunConfig, retry_crashed: bool) -> bool:
    """A cell that killed an earlier run's process: stored as ``error`` and skipped (True), unless
    ``--retry-crashed`` (its markers cleared, it runs)."""
    from distillbench.runner import crashes

    if retry_crashed:
        crashes.clear(sweep.store.path, config.run_id)
        return False
    why = crashes.crash_report(sweep.store.path, config.run_id)
    if why is None:
        return False
    sweep.finish(index, RunResult(config, "error", why, plain=why))
    return True


@dataclass
class _Launched:
    """A sweep whose cells a launcher's workers run: the driver ingests each finished cell's file
    (one writer). ``replace_done``: cells whose done row this run's file replaces (``--force``, or
    a done row on stale data)."""

    sweep: Sweep
    plan: Plan
    launcher: Any
    cells: Path
    replace_done: set[str] = field(default_factory=set)
    by_id: dict[str, RunConfig] = field(init=False)
    index_of: dict[str, int] = field(init=False)

    def __post_init__(self):
        self.by_id = {config.run_id: config for config in self.plan.configs}
        self.index_of = {config.run_id: i for i, config in enumerate(self.plan.configs, start=1)}

    @classmethod
    def start(cls, sweep: Sweep, plan: Plan, launcher, compile_cache, view) -> None:
        """Send the cells not done to ``launcher``'s workers, ingesting each as it ends.

        First the files that workers of an earlier driver finished (that driver was killed) are
        ingested, so those cells are not run again. Cells an earlier driver had submitted and that
        are still running are not waited for: they are submitted again (a Ray job dies with its
        driver; a SLURM job of a killed driver may still finish, and then its file is dropped at
        ingest, because the cell is already done).
        """
        from distillbench.runner.cell import cells_folder

        sweep.reporter.sweep_started(sweep.total)
        # absolute: a worker's working folder is not the driver's
        launched = cls(sweep, plan, launcher, cells_folder(sweep.store.path).resolve())
        launched.ingest_earlier()
        cache = str(Path(compile_cache).resolve()) if compile_cache is not None else None
        tasks = launched.tasks(cache)
        if not tasks:
            return
        if view is not None:
            view.start([t.config for t in tasks], launched.cells)
        folder = sweep.store.path.parent / (sweep.store.path.name + f".{launcher.name}")
        try:
            launcher.run(tasks, lambda task, error: launched.finished(task, error, view),
                         view.refresh if view is not None else _nothing_to_do, folder)
        finally:
            if view is not None:
                view.stop()

    def ingest_earlier(self) -> None:
        """Store the cells that workers of an earlier (killed) driver finished; forget its progress files."""
        from distillbench.runner.cell import PROGRESS_SUFFIX, ingest

        notice = self.sweep.reporter.notice
        for result in ingest(self.sweep.store, self.cells, configs=self.by_id, notice=notice):
            notice(f"stored {result.config.label()} ({result.status}), finished after an earlier driver stopped")
        for stale in self.cells.glob(f"*{PROGRESS_SUFFIX}") if self.cells.is_dir() else []:
            stale.unlink(missing_ok=True)  # an earlier driver's running cells: not ours to show

    def tasks(self, compile_cache: str | None) -> list:
        """The ``CellTask`` of every cell not done (cached ones reported and kept)."""
        from distillbench.runner.cell import CellTask

        tasks = []
        for index, config in enumerate(self.plan.configs, start=1):
            if self.sweep.cached(index, config):
                continue
            if self.sweep.store.is_done(config.run_id):  # --force, or stale data: this run's file replaces it
                self.replace_done.add(config.run_id)
            tasks.append(CellTask(config, str(self.cells), self.plan.options.timeout, compile_cache,
                                  self.launcher.memory_fraction, index, self.sweep.total))
        return tasks

    def finished(self, task, error: BaseException | None, view) -> None:
        """The launcher's ``finished(task, error)``: ingest the cell's file or store why the worker
        gave up; then report it."""
        from distillbench.runner.cell import ingest

        sweep = self.sweep
        with sweep.deferred():
            got = ingest(sweep.store, self.cells, run_ids={task.run_id}, configs=self.by_id,
                         replace_done=self.replace_done, notice=sweep.reporter.notice)
            self.replace_done.discard(task.run_id)  # replaced once: a second, late file of it is dropped
            if not got and error is None and sweep.store.is_done(task.run_id):
                return  # already stored (an earlier driver's file)
            if not got:
                got = [sweep.save(self.worker_failed(task, error))]
            for result in got:
                if result.run_id in self.index_of:
                    if view is not None:
                        view.finished(result)
                    sweep.finish(self.index_of[result.run_id], result, save=False)

    def worker_failed(self, task, error: BaseException | None) -> RunResult:
        """The cell's ``error`` result when its worker left no file."""
        from distillbench.launchers import reason

        why = reason(error) if error is not None else "the worker returned without writing its cell"
        message = f"worker failed ({self.launcher.name}): {why}"
        return RunResult(task.config, "error", message, plain=message)


def _stale(record, config, registry, datasets: DataCache) -> str | None:
    """Why a done row may not be reused for this config now (None: reuse it)."""
    from distillbench.runner.pipeline import enable_float64, load_data

    if record.data_fingerprint is None:
        return "the cached run recorded no data fingerprint (stored by an older distillbench)"
    enable_float64()
    try:
        now = load_data(config, registry, datasets).fingerprint
    except Exception as exc:
        text = str(exc).strip().splitlines()
        return f"the data no longer loads ({text[0] if text else type(exc).__name__})"
    if now != record.data_fingerprint:
        return f"data changed since the cached run (fingerprint {record.data_fingerprint[:12]} -> {now[:12]})"
    return None


def _nothing_to_do() -> None:
    pass
