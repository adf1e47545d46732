"""``distillbench list``: every component by kind, with its parameters, docs and provider."""

from __future__ import annotations

import click

from distillbench.cli.common import fail, load_registry_or_fail


@click.command(name="list")
@click.argument("kinds", nargs=-1, metavar="[KIND]...")
def list_components(kinds: tuple[str, ...]) -> None:
    """List every component by kind, with parameters, defaults, docs and provider."""
    from rich.console import Console

    from distillbench.components.spec import ALL_KINDS
    from distillbench.errors import did_you_mean
    from distillbench.reports.listing import print_components

    wanted = tuple(k.rstrip("s") if k.rstrip("s") in ALL_KINDS else k for k in kinds) or ALL_KINDS
    for kind in wanted:
        if kind not in ALL_KINDS:
            fail(f"unknown kind {kind!r}{did_you_mean(kind, ALL_KINDS)}")
    print_components(load_registry_or_fail(), Console(), wanted)
