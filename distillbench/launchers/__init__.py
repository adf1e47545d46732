"""Launchers: how a sweep's cells are executed (the ``launcher`` component kind).

A launcher is a component like any other, declared through the ``distillbench_components`` hook
with ``kind="launcher"``; its ``build`` returns a :class:`Launcher`. The choice and its
parameters (``launcher=ray launcher.retries=3``) are execution options, never part of a run's
identity: the same cell has the same ``run_id`` whichever launcher runs it.

The contract is small on purpose. The driver hands :meth:`Launcher.run` the cells to compute as
picklable :class:`~distillbench.runner.cell.CellTask` values; the launcher gets
:func:`~distillbench.runner.cell.run_cell` called on each of them somewhere (a Ray task, a SLURM
job, ...), calls ``finished(task, error)`` on the driver as each one ends (``error``: why the
worker gave up, after the launcher's own retries; ``None`` when ``run_cell`` returned), and calls
``tick()`` at least every second while it waits. Workers never write the store: they leave a
per-cell file that the driver ingests (``distillbench.runner.cell``). No module imported here
needs JAX, Ray or submitit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from distillbench.errors import ConfigError

#: How often a launcher's wait loop returns to the driver (live view, signals).
TICK_S = 0.5


class MissingExtra(ConfigError):
    """The launcher's engine is not installed: one line naming what to install."""

    def __init__(self, launcher: str, module: str, install: str):
        super().__init__(f"launcher={launcher} needs the {module!r} package, which is not installed: "
                         f"pip install \"{install}\"")


class LauncherError(ConfigError):
    """The launcher cannot start where it was pointed (no cluster at that address, no SLURM here):
    one line saying what to change; raised by :meth:`Launcher.prepare`, before the store is touched."""


def require(module: str, launcher: str, extra: str | None = None, *, install: str | None = None):
    """Import ``module`` or raise :class:`MissingExtra` (also when an import of it is blocked).

    The line names what to install: ``install``, the requirement ``pip install`` takes (a third-party
    launcher's own distribution, ``"distillbench-dask"``, or its engine, ``"dask[distributed]"``);
    else ``extra``, an extra of distillbench itself (the built-ins: ``"distillbench[ray]"``); else
    the module's own name.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        hint = install or (f"distillbench[{extra}]" if extra else module)
        raise MissingExtra(launcher, module, hint) from None


class Launcher:
    """Runs cells; subclasses implement :meth:`run` (``in_process`` ones are run by the driver itself)."""

    name = "launcher"
    #: ``True`` for the ``local`` launcher: the driver runs cells itself, one after another
    in_process = False
    #: JAX's share of a GPU's memory per cell (fractional GPUs); ``None``: JAX's default
    memory_fraction: float | None = None

    def prepare(self) -> None:
        """Connect to the engine before the store is opened; :class:`LauncherError` if it is not there."""

    def run(self, tasks: Sequence, finished: Callable[[object, BaseException | None], None],
            tick: Callable[[], None], folder: Path) -> None:
        """Get ``run_cell(task)`` called for every task; ``folder``: for the launcher's own logs."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line for the driver's output: the launcher and where its workers are."""
        return self.name


def reason(exc: BaseException) -> str:
    """A worker failure in one line (the last line of a remote traceback says what happened)."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[-1].strip() if lines else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
