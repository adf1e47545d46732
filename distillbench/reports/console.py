"""Rich terminal output: a progress bar per run, a line per finished run, a summary table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from distillbench.runner.reporter import Reporter

_STATUS_STYLE = {"done": "green", "error": "red", "diverged": "magenta", "timeout": "yellow"}


def pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def points(value: Any) -> str:
    return "-" if value is None else f"{100 * value:+.2f}"


def seconds(value: Any, scale: float = 1.0, unit: str = "s") -> str:
    return "-" if value is None else f"{value * scale:.3g} {unit}"


class ConsoleReporter(Reporter):
    def __init__(self, console: Console | None = None, err_console: Console | None = None, quiet: bool = False):
        if console is None:
            console = Console()
            if not console.is_terminal:  # logs and pipes: no 80-column wrapping of the table
                console = Console(width=200)
        self.console = console
        self.err = err_console or Console(stderr=True)
        self.quiet = quiet
        self._progress: Progress | None = None
        self._task = None

    def sweep_started(self, total: int) -> None:
        if not self.quiet:
            self.console.print(f"[bold]distillbench[/]: {total} run{'s' if total != 1 else ''}")

    def run_started(self, index: int, total: int, label: str, num_steps: int) -> None:
        if self.quiet:
            return
        self._progress = Progress(
            TextColumn(f"[{index}/{total}] {label}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[rate]} steps/s"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("distill", total=max(num_steps, 1), loss="-", rate="-")

    def run_progress(self, step: int, num_steps: int, loss: float, steps_per_s: float) -> None:
        if self._progress is not None:
            rate = f"{steps_per_s:.1f}" if steps_per_s else "-"
            self._progress.update(self._task, completed=step, loss=f"{loss:.4g}", rate=rate)

    def _stop_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def run_cached(self, index: int, total: int, label: str, record: Any) -> None:
        if not self.quiet:
            m = record.metrics
            self.console.print(f"[{index}/{total}] [cyan]cached[/] {label}: acc {pct(m.get('acc'))} "
                               f"(random {pct(m.get('random_acc'))}, gain {points(m.get('gain'))})")

    def run_finished(self, index: int, total: int, label: str, outcome: Any) -> None:
        self._stop_progress()
        if self.quiet:
            return
        style = _STATUS_STYLE.get(outcome.status, "white")
        m, t = outcome.metrics, outcome.timings
        if outcome.status == "done":
            detail = (f"acc {pct(m.get('acc'))} (random {pct(m.get('random_acc'))}, gain {points(m.get('gain'))}); "
                      f"compile {seconds(t.get('compile_s'))}, step {seconds(t.get('step_s'), 1e3, 'ms')}, "
                      f"wall {seconds(t.get('wall_s'))}")
        else:
            detail = outcome.message or ""
        self.console.print(f"[{index}/{total}] [{style}]{outcome.status}[/] {label}: {detail}", highlight=False)

    def sweep_finished(self, outcomes: list[Any]) -> None:
        self._stop_progress()
        if not outcomes:
            return
        table = Table(title="distillbench results", title_justify="left")
        for column, justify in [("run", "left"), ("status", "left"), ("acc", "right"), ("random", "right"),
                                ("gain", "right"), ("compile", "right"), ("step", "right"), ("wall", "right")]:
            table.add_column(column, justify=justify)
        for o in outcomes:
            m, t = o.metrics, o.timings
            status = "done (cached)" if o.cached else o.status
            if o.status != "done" and o.message:
                status += f": {o.message}"
            style = _STATUS_STYLE.get(o.status, "white")
            table.add_row(o.config.label(), f"[{style}]{status}[/]", pct(m.get("acc")), pct(m.get("random_acc")),
                          points(m.get("gain")), seconds(t.get("compile_s")), seconds(t.get("step_s"), 1e3, "ms"),
                          seconds(t.get("wall_s")))
        self.console.print(table)

    def warn(self, line: str) -> None:
        self.err.print(f"[yellow]warning:[/] {line}", highlight=False)
