"""Helpers shared by the CLI commands: the one-line bad-input exit, and loading the registry."""

from __future__ import annotations

import sys

import click

EXIT_BAD_INPUT = 2


def fail(message: str) -> None:
    """Print one line and exit with code 2 (bad input)."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(EXIT_BAD_INPUT)


class OneLineErrors(click.Group):
    """A click group whose own usage errors (unknown option, missing argument) are one line too."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError" and exc.ctx is not None:  # bare `distillbench`
                click.echo(exc.ctx.get_help())
                sys.exit(0)
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            fail(f"{exc.format_message()}{where}")
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


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
