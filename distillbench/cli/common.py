"""Helpers shared by the CLI commands: the one-line bad-input exit, and loading the registry."""

from __future__ import annotations

import sys

import click

EXIT_BAD_INPUT = 2


def fail(message: str) -> None:
    """Print one line and exit with code 2 (bad input)."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def load_registry_or_fail():
    """The registry, with one warning line per broken plugin; a plugin conflict exits 2."""
    from distillbench.errors import PluginError
    from distillbench.registry import load_registry

    try:
        registry = load_registry()
    except PluginError as exc:
        fail(str(exc))
    for failure in registry.failures:
        click.echo(f"warning: {failure.line()}", err=True)
    return registry
