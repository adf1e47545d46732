"""What the runner tells the outside world while it works.

The runner never prints: it calls a ``Reporter`` passed down to it. ``Reporter`` itself is the
silent one (tests, library use); ``distillbench.reports.console.ConsoleReporter`` draws rich
progress bars and the summary table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distillbench.records import RunRecord, RunResult


class Reporter:
    def sweep_started(self, total: int) -> None: ...

    def run_started(self, index: int, total: int, label: str, num_steps: int) -> None: ...

    def run_progress(self, step: int, num_steps: int, loss: float, steps_per_s: float) -> None: ...

    def run_cached(self, index: int, total: int, label: str, record: RunRecord) -> None: ...

    def run_finished(self, index: int, total: int, label: str, outcome: RunResult) -> None: ...

    def sweep_finished(self, outcomes: list[RunResult]) -> None: ...

    def notice(self, line: str) -> None:
        """One line the user should see even in quiet mode (e.g. why a cached cell re-runs)."""
