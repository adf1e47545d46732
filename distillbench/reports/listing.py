"""``distillbench list``: every component by kind, its provider, parameters and docs."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from distillbench.components.spec import ALL_KINDS
from distillbench.params import format_value
from distillbench.registry import Registry


_PLURAL = {"loss": "losses"}


#: Below this many columns the four-column table squeezes descriptions to a word per line, so each
#: parameter gets its own line with its description indented under it instead.
WIDE = 110


def metrics_text(metrics) -> str:
    """``shows: MIA (mia_acc, percent, lower is better), ...``: what an evaluator declares it reports."""
    better = {True: ", higher is better", False: ", lower is better", None: ""}
    return "shows: " + ", ".join(f"{m.label} ({m.name}, {m.format}{better[m.higher_is_better]})" for m in metrics)


def print_components(registry: Registry, console: Console, kinds: tuple[str, ...] = ALL_KINDS) -> None:
    if console.width < WIDE:
        _print_narrow(registry, console, kinds)
        return
    for kind in kinds:
        table = Table(title=_PLURAL.get(kind, f"{kind}s"), title_justify="left", show_lines=False, expand=False)
        table.add_column("name / parameter", no_wrap=True)
        table.add_column("type")
        table.add_column("default")
        table.add_column("description")
        for entry in registry.entries(kind):
            c = entry.component  # every text a plugin provides is escaped: "distillbench[ray]" is not markup
            table.add_row(f"[bold cyan]{escape(c.name)}[/]", "", "", f"{escape(c.summary)} [dim]({escape(entry.source)})[/]")
            if c.defaults:
                prefs = ", ".join(f"{k}={v}" for k, v in sorted(c.defaults.items()))
                table.add_row("", "", "", f"[dim]defaults: {escape(prefs)}[/]")
            if c.metrics:
                table.add_row("", "", "", f"[dim]{escape(metrics_text(c.metrics))}[/]")
            for p in c.params:
                table.add_row(escape(f"  {kind}.{p.name}"), escape(p.describe_type()), escape(format_value(p.default)),
                              escape(p.doc))
        console.print(table)


def _print_narrow(registry: Registry, console: Console, kinds: tuple[str, ...]) -> None:
    """One line per component and per parameter (``kind.param = default  type``), docs indented below."""
    from rich.padding import Padding

    for kind in kinds:
        console.print(f"[bold]{_PLURAL.get(kind, f'{kind}s')}[/]")
        for entry in registry.entries(kind):
            c = entry.component
            console.print(Padding(f"[bold cyan]{escape(c.name)}[/]: {escape(c.summary)} [dim]({escape(entry.source)})[/]",
                                  (0, 0, 0, 2)), highlight=False)
            if c.defaults:
                prefs = ", ".join(f"{k}={v}" for k, v in sorted(c.defaults.items()))
                console.print(Padding(f"[dim]defaults: {escape(prefs)}[/]", (0, 0, 0, 4)), highlight=False)
            if c.metrics:
                console.print(Padding(f"[dim]{escape(metrics_text(c.metrics))}[/]", (0, 0, 0, 4)), highlight=False)
            for p in c.params:
                console.print(Padding(f"{escape(f'{kind}.{p.name}')} = {escape(format_value(p.default))}  "
                                      f"[dim]{escape(p.describe_type())}[/]", (0, 0, 0, 4)), highlight=False)
                console.print(Padding(escape(p.doc), (0, 0, 0, 8)), highlight=False)
