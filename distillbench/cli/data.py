"""``distillbench data``: see which real datasets are present, and download them."""

from __future__ import annotations

import click

from distillbench.cli.common import fail


@click.group(name="data")
def data() -> None:
    """Real datasets in the data directory (--data-dir, $DISTILLBENCH_DATA_DIR, ~/.cache/distillbench/data)."""


@data.command(name="list")
@click.option("--data-dir", default=None, help="Data directory to inspect.")
def list_data(data_dir: str | None) -> None:
    """Every downloadable dataset, its folder and whether its files are present."""
    from distillbench_builtin.datasets.catalog import CATALOG, data_dir as resolve, missing_files

    for name, spec in CATALOG.items():
        missing = missing_files(name, data_dir)
        state = "present" if not missing else f"missing {len(missing)} file(s)"
        click.echo(f"{name:<14} {resolve(data_dir) / spec.folder}  {state}")


@data.command(name="download")
@click.argument("name")
@click.option("--data-dir", default=None, help="Data directory to fill.")
@click.option("--mirror", default=None, help="Base URL serving the same file names as the official host.")
def download(name: str, data_dir: str | None, mirror: str | None) -> None:
    """Fetch the official files of NAME, verify their md5, resume partial downloads."""
    from distillbench.errors import did_you_mean
    from distillbench_builtin.datasets.catalog import CATALOG
    from distillbench_builtin.datasets.download import DownloadError, download as fetch

    if name not in CATALOG:
        fail(f"no downloadable dataset {name!r}{did_you_mean(name, CATALOG)}")
    try:
        folder = fetch(name, data_dir, mirror, log=click.echo)
    except DownloadError as exc:
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(1) from None
    click.echo(f"{name}: ready in {folder}")
