"""Helpers shared by the CLI commands: the one-line bad-input exit, and loading the registry."""

from __future__ import annotations

import sys

import click

EXIT_BAD_INPUT = 2


def one_line(message: str) -> str:
    """``message`` on one printable line: a newline or escape code in user input is shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def fail(message: str) -> None:
    """Print one line and exit with code 2 (bad input)."""
    click.echo(f"Error: {one_line(message)}", err=True)
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


def single_value(option: str, values: tuple[str, ...], once: str, example: str) -> str | None:
    """The one value of a repeatable ``option``: none, or exactly one non-empty value; ``once``
    says why there is one, ``example`` shows a good value."""
    if len(values) > 1:
        fail(f"{option} is given {len(values)} times; {once}")
    if values and not values[0].strip():
        fail(f"{option} is empty: give {example}")
    return values[0] if values else None


def single_store_path(values: tuple[str, ...]) -> str | None:
    """The one ``--store`` of a command that writes: none, or exactly one non-empty path."""
    return single_value("--store", values, "a run writes to one store (pass it once; only `distillbench report` "
                        "merges several)", "the results file, e.g. --store results.sqlite")


def refuse_foreign_store(path) -> None:
    """Exit 2, touching nothing, when ``path`` is an existing file that is not a distillbench store.

    Opening it for writing would add distillbench's tables to someone else's database. An empty
    file is an empty database and may become a store.
    """
    from pathlib import Path

    from distillbench.store.database import NotAStoreError, open_existing

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        open_existing(path).close()
    except NotAStoreError as exc:
        fail(f"{exc}; pass --store PATH to a distillbench store or to a new file")
    except Exception as exc:  # unreadable (permissions), locked beyond the timeout, ...
        fail(f"cannot open results store {str(path)!r}: {exc}")


def load_registry_or_fail():
    """The registry, with one warning line per broken plugin and per name two plugins register.

    A clashing name is blocked, not the whole registry: a run that uses it exits 2 naming both
    providers, and every other run goes on.
    """
    from distillbench.registry import load_registry

    registry = load_registry()
    for failure in registry.failures:
        click.echo(f"warning: {failure.line()}", err=True)
    for message in registry.conflicts:
        click.echo(f"warning: {message}; only runs that use that name are stopped", err=True)
    return registry


def split_values(values) -> tuple[str, ...]:
    """``("kip,ls", "rfad")`` -> ``("kip", "ls", "rfad")``, without empty items or repeats."""
    items = [item.strip() for value in values for item in value.split(",")]
    return tuple(dict.fromkeys(item for item in items if item))


def parse_ipcs(values) -> tuple[int, ...]:
    """The ``--ipc`` filter values as positive integers; exit 2 on anything else."""
    out = []
    for text in split_values(values):
        if not text.isdigit() or int(text) < 1:
            fail(f"--ipc: {text!r} is not a positive integer")
        out.append(int(text))
    return tuple(out)


class PathArg(click.Path):
    """``click.Path`` whose own checks turn a NUL in the name into a usage error (one line), not a traceback
    (``click.Path`` calls ``os.stat``, which raises ``ValueError`` on a NUL)."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and "\x00" in value:
            self.fail(f"{value!r} holds a NUL character; a file name cannot", param, ctx)
        return super().convert(value, param, ctx)
