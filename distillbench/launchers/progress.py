"""The live view of a launched campaign on a terminal: counts, throughput, ETA, the running cells.

Queued, running, done and failed counts; cells per minute and the ETA from the cells finished so
far; per running cell its host, device and step, read from the progress files the workers keep
(``distillbench.runner.cell``). Off a terminal the driver prints one line per finished cell
instead (the console reporter), and this view is not used.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text


class CampaignView:
    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self._live: Live | None = None
        self._labels: dict[str, str] = {}
        self._cells: Path | None = None
        self.done = self.failed = 0
        self._t0 = time.monotonic()

    def start(self, configs, cells: Path) -> None:
        self._labels = {c.run_id: c.label() for c in configs}
        self._cells, self._t0 = cells, time.monotonic()
        self._live = Live(self._render(), console=self.console, refresh_per_second=2, transient=True)
        self._live.start()

    def finished(self, outcome) -> None:
        if outcome.status == "done":
            self.done += 1
        else:
            self.failed += 1

    def refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _render(self):
        from distillbench.runner.cell import read_progress

        running = [p for p in (read_progress(self._cells) if self._cells else []) if p.get("run_id") in self._labels]
        total = len(self._labels)
        ended = self.done + self.failed
        queued = max(total - ended - len(running), 0)
        elapsed = time.monotonic() - self._t0
        rate = ended / elapsed * 60 if elapsed > 0 and ended else None
        eta = f"{(total - ended) / (rate / 60):.0f} s" if rate else "-"
        head = Text(f"queued {queued}  running {len(running)}  done {self.done}  failed {self.failed}  "
                    f"throughput {f'{rate:.1f} cells/min' if rate else '-'}  ETA {eta}")
        table = Table(box=None, pad_edge=False)
        for column in ("cell", "host", "device", "step"):
            table.add_column(column)
        for p in sorted(running, key=lambda p: p.get("label", "")):
            step = f"{p.get('step', 0)}/{p.get('steps', 0)}" if p.get("steps") else "starting"
            table.add_row(self._labels.get(p["run_id"], p["run_id"]), str(p.get("host")), str(p.get("device") or "-"),
                          step)
        return Group(head, table)
