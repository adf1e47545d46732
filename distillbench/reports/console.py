"""Rich terminal output: a progress bar per run, a line per finished run, a summary table.

Failures also get one plain line on stderr each (``error: <run>: <what went wrong>``, no exception
class names); with ``debug`` the full traceback follows it. A done run that scores below its
random subset is flagged in its line and in the table. Beside the accuracy, a run's line shows the
metrics its evaluator declares (reports/declared.py), never a name of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from distillbench.components.spec import Metric
from distillbench.reports.declared import EvaluatorMetrics, line_value, random_name, with_random
from distillbench.runner.reporter import Reporter

if TYPE_CHECKING:
    from distillbench.records import RunConfig, RunRecord, RunResult

_STATUS_STYLE = {"done": "green", "error": "red", "diverged": "magenta", "timeout": "yellow",
                 "interrupted": "yellow"}
BELOW_RANDOM = "below the random subset"


def pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def points(value: Any) -> str:
    return "-" if value is None else f"{100 * value:+.2f}"


def seconds(value: Any, scale: float = 1.0, unit: str = "s") -> str:
    """``5.55 ms``, ``1.93 s`` (not ``1.93e+03 ms``), ``4120 s``: a duration never in e-notation.

    ``value`` is in seconds when ``scale`` is 1, else ``value * scale`` is in ``unit``.
    """
    if value is None:
        return "-"
    if unit == "ms" and scale == 1e3 and value >= 1.0:
        return seconds(value)
    shown = value * scale
    return f"{shown:.3g} {unit}" if abs(shown) < 1000 else f"{shown:.0f} {unit}"


def refused_lines(refused: list[tuple[str, str]]) -> list[str]:
    """One ``skipping`` line per reason, however many cells of the sweep it refuses."""
    by_reason: dict[str, list[str]] = {}
    for label, reason in refused:
        by_reason.setdefault(reason, []).append(label)
    lines = []
    for reason, labels in by_reason.items():
        more = f" and {len(labels) - 1} more cell{'s' if len(labels) != 2 else ''}" if len(labels) > 1 else ""
        lines.append(f"skipping {labels[0]}{more}: {reason}")
    return lines


def evaluation(metrics: Mapping[str, Any], evaluator: str) -> str | None:
    """What evaluated the run, as stored by the evaluator: ``krr nngp(fc1)``, ``nn convnet3 on learned labels``."""
    kernel, arch = metrics.get("eval_kernel"), metrics.get("eval_arch")
    if kernel is None and arch is None:
        return None
    if kernel is None:
        targets = metrics.get("eval_targets")
        return f"{evaluator} {arch}" + (f" on {targets} labels" if targets else "")
    return f"{evaluator} {kernel}({arch})" if arch else f"{evaluator} {kernel}"


def substitute_note(kernel: str, has_arch: bool, metrics: Mapping[str, Any]) -> str | None:
    """When a run kernel without an architecture (``has_arch``: it declares a parameter naming one)
    was not the one evaluating, say which one was."""
    eval_kernel = metrics.get("eval_kernel")
    if has_arch or eval_kernel is None or eval_kernel == kernel:
        return None
    arch = metrics.get("eval_arch")
    return (f"note: kernel {kernel!r} has no arch, so it was evaluated with {eval_kernel}"
            f"{f'({arch})' if arch else ''}, not with itself")


def below_random(metrics: Mapping[str, Any]) -> bool:
    gain = metrics.get("gain")
    return gain is not None and gain < 0


def declared_text(metrics: Mapping[str, Any], evaluator: str, declared: Sequence[Metric]) -> str | None:
    """The numbers the evaluator declares, next to the accuracy: ``privacy: nearest train 1.23× (random 0.00×), ...``."""
    held = [m for m in declared if m.name in metrics or random_name(m.name) in metrics]
    if not held:
        return None
    return f"{evaluator}: " + ", ".join(f"{m.label} {with_random(m, metrics, line_value)}" for m in held)


def _done_detail(metrics: Mapping[str, Any], evaluator: str, declared: Sequence[Metric], kernel: str,
                 has_arch: bool) -> str:
    text = f"acc {pct(metrics.get('acc'))} (random {pct(metrics.get('random_acc'))}, gain {points(metrics.get('gain'))})"
    extra = declared_text(metrics, evaluator, declared)
    if extra:
        text += f"; {extra}"
    if below_random(metrics):
        text += f" [bold red]WARNING: {BELOW_RANDOM}[/]"
    ran = evaluation(metrics, evaluator)
    if ran:
        text += f"; eval {ran}"
    note = substitute_note(kernel, has_arch, metrics)
    if note:
        text += f" ({note})"
    return text


def make_progress(index: int, total: int, label: str, num_steps: int, console: Console) -> Progress:
    """The bar of one run: the label gives way (ellipsis) before the step counter does, so ``0/300``
    stays whole at 80 columns; the status says ``compiling`` until the first step is done."""
    from rich.table import Column

    counter = len(f"{max(num_steps, 1)}/{max(num_steps, 1)}")
    return Progress(
        TextColumn(escape(f"[{index}/{total}] {label}"),
                   table_column=Column(no_wrap=True, overflow="ellipsis", min_width=12, ratio=1)),
        BarColumn(bar_width=16),
        MofNCompleteColumn(table_column=Column(no_wrap=True, min_width=counter, justify="right")),
        TextColumn("{task.fields[status]}", table_column=Column(no_wrap=True, overflow="ellipsis")),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        expand=True,
    )


class ConsoleReporter(Reporter):
    def __init__(self, console: Console | None = None, err_console: Console | None = None, quiet: bool = False,
                 debug: bool = False, metrics: EvaluatorMetrics | None = None):
        """``metrics``: what the evaluators declare (the run's registry); by default the installed plugins'."""
        if console is None:
            console = Console()
            if not console.is_terminal:  # logs and pipes: no 80-column wrapping of the table
                console = Console(width=200)
        self.console = console
        self.err = err_console or Console(stderr=True)
        self.quiet = quiet
        self.debug = debug
        self._progress: Progress | None = None
        self._task = None
        self._metrics = metrics

    def _detail(self, config: RunConfig, metrics: Mapping[str, Any]) -> str:
        if self._metrics is None:
            self._metrics = EvaluatorMetrics.installed()
        evaluator = config.evaluator.name
        has_arch = any(p.component == "architecture" for p in self._metrics.params(config.kernel))
        return _done_detail(metrics, evaluator, self._metrics.of(evaluator, [metrics]), config.kernel.name, has_arch)

    def sweep_started(self, total: int) -> None:
        if not self.quiet:
            self.console.print(f"[bold]distillbench[/]: {total} run{'s' if total != 1 else ''}")

    def run_started(self, index: int, total: int, label: str, num_steps: int) -> None:
        if self.quiet:
            return
        self._progress = make_progress(index, total, label, num_steps, self.console)
        self._progress.start()
        self._task = self._progress.add_task("distill", total=max(num_steps, 1), status="compiling")

    def run_progress(self, step: int, num_steps: int, loss: float, steps_per_s: float) -> None:
        if self._progress is not None:
            rate = f" {steps_per_s:.1f} steps/s" if steps_per_s else ""
            self._progress.update(self._task, completed=step, status=f"loss {loss:.4g}{rate}")

    def _stop_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def run_cached(self, index: int, total: int, label: str, record: RunRecord) -> None:
        if not self.quiet:
            detail = self._detail(record.config, record.metrics)
            self.console.print(f"\\[{index}/{total}] [cyan]cached[/] {escape(label)}: {escape(detail)}", highlight=False)

    def run_finished(self, index: int, total: int, label: str, outcome: RunResult) -> None:
        self._stop_progress()
        if outcome.status != "done":
            self._error_line(f"{outcome.status}: {label}: {outcome.plain or outcome.message or 'no message'}")
            if self.debug and getattr(outcome, "traceback", None):
                self.err.print(outcome.traceback.rstrip("\n"), markup=False, highlight=False, soft_wrap=True)
        if self.quiet:
            return
        style = _STATUS_STYLE.get(outcome.status, "white")
        m, t = outcome.metrics, outcome.timings
        if outcome.status == "done":
            detail = (self._detail(outcome.config, m) + "; "
                      f"compile {seconds(t.get('compile_s'))}, step {seconds(t.get('step_s'), 1e3, 'ms')}, "
                      f"wall {seconds(t.get('wall_s'))}")
        else:
            detail = escape(outcome.message or "")
        self.console.print(f"\\[{index}/{total}] [{style}]{outcome.status}[/] {escape(label)}: {detail}",
                           highlight=False)

    def _error_line(self, line: str) -> None:
        self.err.print(" ".join(line.split()), markup=False, highlight=False, soft_wrap=True)

    def sweep_finished(self, outcomes: list[RunResult]) -> None:
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
            gain = points(m.get("gain"))
            if o.status == "done" and below_random(m):
                status += f", {BELOW_RANDOM}"
                gain += " !"
            style = _STATUS_STYLE.get(o.status, "white")
            table.add_row(escape(o.config.label()), f"[{style}]{escape(status)}[/]", pct(m.get("acc")),
                          pct(m.get("random_acc")), gain, seconds(t.get("compile_s")),
                          seconds(t.get("step_s"), 1e3, "ms"), seconds(t.get("wall_s")))
        self.console.print(table)

    def notice(self, line: str) -> None:
        self._error_line(line)
