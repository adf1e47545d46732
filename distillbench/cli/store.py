"""``distillbench store copy|move|check``: a store's file and its artifacts folder as one unit."""

from __future__ import annotations

import sys

import click

from distillbench.cli.common import PathArg, fail


@click.group("store")
def store_group() -> None:
    """Copy, move or check a results store (its SQLite file and its <store>.artifacts/ folder).

    \b
    Examples:
      distillbench store copy distillbench_results/results.sqlite backup/2024-05.sqlite
      distillbench store move results.sqlite archive/kip.sqlite
      distillbench store check                     # files no row names, rows whose set is missing
    """


def _run(action, *args):
    """``action(*args)``, its bad inputs as one line and exit 2, an I/O failure as one line and exit 1."""
    from distillbench.errors import ConfigError
    from distillbench.store.database import NotAStoreError
    from distillbench.store.failures import StoreUnavailableError

    try:
        return action(*args)
    except (ConfigError, NotAStoreError, FileNotFoundError, StoreUnavailableError) as exc:
        fail(str(exc))
    except OSError as exc:  # a full disk half-way: nothing is left at the target
        click.echo(f"error: {exc}; nothing was written at the target", err=True)
        sys.exit(1)


def _summary(verb: str, src: str, dst: str, report) -> None:
    click.echo(f"{verb} {src} -> {dst}: {report.rows} runs, {report.artifacts} artifacts")
    if report.missing:
        click.echo(f"warning: {len(report.missing)} artifacts the rows name were not in the source (first: "
                   f"{report.missing[0]})", err=True)
    if report.kept:
        click.echo(f"note: kept {len(report.kept)} files in the source's artifacts folder that no row names "
                   f"(first: {report.kept[0]})", err=True)


@store_group.command("copy")
@click.argument("src", type=PathArg(dir_okay=False))
@click.argument("dst", type=PathArg(dir_okay=False))
def copy_command(src: str, dst: str) -> None:
    """Copy the store SRC (with its artifacts) to the new file DST; runs on it may write to SRC meanwhile."""
    from distillbench.store.copying import copy_store

    _summary("copied", src, dst, _run(copy_store, src, dst))


@store_group.command("move")
@click.argument("src", type=PathArg(dir_okay=False))
@click.argument("dst", type=PathArg(dir_okay=False))
def move_command(src: str, dst: str) -> None:
    """Move the store SRC (with its artifacts) to the new file DST; stop runs writing to SRC first."""
    from distillbench.store.copying import move_store

    _summary("moved", src, dst, _run(move_store, src, dst))


@store_group.command("check")
@click.argument("path", required=False, type=PathArg(dir_okay=False))
def check_command(path: str | None) -> None:
    """List the files in the artifacts folder no row names and the rows whose artifact is missing
    (exit 1 when there are any); changes nothing. PATH defaults to $DISTILLBENCH_STORE or
    ./distillbench_results/results.sqlite."""
    from distillbench.store.database import default_store_path
    from distillbench.store.inventory import inventory

    path = path or str(default_store_path())
    found = _run(inventory, path)
    for file in found.unnamed:
        click.echo(f"unnamed file (no row names it; delete it if it is not yours): {file}")
    for run_id in found.missing:
        click.echo(f"missing artifact: run {run_id}")
    for run_id in found.unsafe:
        click.echo(f"refused artifact path (outside the store's folder): run {run_id}")
    click.echo(f"{path}: {found.rows} runs, {found.artifacts} artifacts, {len(found.unnamed)} unnamed files, "
               f"{len(found.missing)} missing, {len(found.unsafe)} refused")
    if not found.clean:
        sys.exit(1)
