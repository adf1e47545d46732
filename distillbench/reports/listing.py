"""``distillbench list``: every component by kind, its provider, parameters and docs."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from distillbench.components.spec import KINDS
from distillbench.params import format_value
from distillbench.registry import Registry


_PLURAL = {"loss": "losses"}


def print_components(registry: Registry, console: Console, kinds: tuple[str, ...] = KINDS) -> None:
    for kind in kinds:
        table = Table(title=_PLURAL.get(kind, f"{kind}s"), title_justify="left", show_lines=False, expand=False)
        table.add_column("name / parameter", no_wrap=True)
        table.add_column("type")
        table.add_column("default")
        table.add_column("description")
        for entry in registry.entries(kind):
            c = entry.component
            table.add_row(f"[bold cyan]{c.name}[/]", "", "", f"{c.summary} [dim]({entry.source})[/]")
            if c.defaults:
                prefs = ", ".join(f"{k}={v}" for k, v in sorted(c.defaults.items()))
                table.add_row("", "", "", f"[dim]defaults: {prefs}[/]")
            for p in c.params:
                table.add_row(f"  {kind}.{p.name}", p.describe_type(), format_value(p.default), p.doc)
        console.print(table)
