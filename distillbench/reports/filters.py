"""Which runs a leaderboard includes: the ``report`` options, and what the runs hold when none match."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, time, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distillbench.reports.merge import StoredRun

#: The value of a stored run each filter of a field compares.
_FIELDS = {
    "dataset": lambda r: r.config.dataset.name, "ipc": lambda r: r.config.ipc,
    "objective": lambda r: r.config.objective.name, "kernel": lambda r: r.config.kernel.name,
    "loss": lambda r: r.config.loss.name, "status": lambda r: r.status,
}


def parse_when(text: str, *, end: bool = False) -> datetime:
    """An ISO date or date-time, UTC when it has no zone; with ``end``, a bare date means its last instant."""
    try:
        if len(text) == 10:
            day = datetime.fromisoformat(text).date()
            return datetime.combine(day, time.max if end else time.min, tzinfo=timezone.utc)
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO date (2024-05-31) or date-time (2024-05-31T14:00)") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Filters:
    """Which runs a leaderboard includes (the ``report`` options); an empty tuple means any."""

    dataset: tuple[str, ...] = ()
    ipc: tuple[int, ...] = ()
    objective: tuple[str, ...] = ()
    kernel: tuple[str, ...] = ()
    loss: tuple[str, ...] = ()
    status: tuple[str, ...] = ()
    since: datetime | None = None  # finished_at >= since
    until: datetime | None = None  # finished_at <= until

    def accepts(self, record) -> bool:
        if any(getattr(self, name) and get(record) not in getattr(self, name) for name, get in _FIELDS.items()):
            return False
        if self.since or self.until:
            finished = parse_when(record.finished_at)
            if (self.since and finished < self.since) or (self.until and finished > self.until):
                return False
        return True

    def to_dict(self) -> dict[str, Any]:
        """The filters in force: ``{"dataset": ["digits"], "since": "2024-05-31T00:00:00+00:00"}``."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, datetime):
                out[f.name] = value.isoformat()
            elif value:
                out[f.name] = list(value)
        return out

    def describe(self) -> str:
        parts = [f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in self.to_dict().items()]
        return " ".join(parts) if parts else "none"


def sort_key(value: Any) -> tuple:
    """Numbers before text, each in its own order: how tables and the values of a field are ordered."""
    return (0, value, "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0, str(value))


def available(runs: list[StoredRun], filters: Filters) -> str:
    """What the runs hold for the filtered fields: ``the 20 runs have dataset digits; ipc 1``."""
    parts = []
    for name, get in _FIELDS.items():
        if getattr(filters, name):
            seen = sorted({get(r.record) for r in runs}, key=sort_key)
            parts.append(f"{name} {', '.join(map(str, seen))}")
    if filters.since or filters.until:
        finished = sorted(r.record.finished_at for r in runs)
        parts.append(f"finished {finished[0]} to {finished[-1]}" if finished else "no finish times")
    return f"the {len(runs)} run{'s' if len(runs) != 1 else ''} have " + "; ".join(parts)
