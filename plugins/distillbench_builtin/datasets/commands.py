"""The built-in ``distillbench data`` commands: see which real datasets are present, download them.

Registered through the ``distillbench_data_commands`` hook; the core's ``data`` group knows none
of them by name.
"""

from __future__ import annotations

import difflib

import click

from distillbench import ConfigError


@click.command(name="list")
@click.option("--data-dir", default=None, help="Data directory to inspect.")
def list_data(data_dir: str | None) -> None:
    """Every downloadable dataset, its folder and whether its files are present."""
    from distillbench_builtin.datasets.catalog import CATALOG, data_dir as resolve, missing_files

    for name, spec in CATALOG.items():
        missing = missing_files(name, data_dir)
        state = "present" if not missing else f"missing {len(missing)} file(s)"
        click.echo(f"{name:<14} {resolve(data_dir) / spec.folder}  {state}")


@click.command(name="download")
@click.argument("name")
@click.option("--data-dir", default=None, help="Data directory to fill.")
@click.option("--mirror", default=None, help="Base URL serving the same file names as the official host.")
def download(name: str, data_dir: str | None, mirror: str | None) -> None:
    """Fetch the official files of NAME, verify their md5, resume partial downloads."""
    from distillbench_builtin.datasets.catalog import CATALOG
    from distillbench_builtin.datasets.download import DownloadError, download as fetch

    if name not in CATALOG:
        close = difflib.get_close_matches(name, list(CATALOG), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (choose from: {', '.join(sorted(CATALOG))})"
        raise ConfigError(f"no downloadable dataset {name!r}{hint}")
    try:
        folder = fetch(name, data_dir, mirror, log=click.echo)
    except DownloadError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{name}: ready in {folder}")


COMMANDS = (list_data, download)
