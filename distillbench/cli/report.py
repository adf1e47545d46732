"""``distillbench report``: a leaderboard from one or more results stores (SQLite only, no JAX)."""

from __future__ import annotations

from pathlib import Path

import click

from distillbench.cli import common
from distillbench.cli.common import PathArg, one_line, parse_ipcs
from distillbench.cli.common import split_values as _split
from distillbench.records import STATUSES as _STATUSES

_FORMATS = ("rich", "md", "csv", "json", "html")


def fail(message: str) -> None:
    """One line, exit 2; a huge option value or path it echoes is cut (``errors.clip_message``)."""
    from distillbench.errors import clip_message

    common.fail(clip_message(message))
_GROUP_FIELDS = ("dataset", "ipc", "objective", "kernel", "arch", "loss", "labels", "evaluator", "device", "host")


def _choices(option: str, values: tuple[str, ...], allowed: tuple[str, ...]) -> tuple[str, ...]:
    from distillbench.errors import did_you_mean

    for value in values:
        if value not in allowed:
            fail(f"{option}: unknown value {value!r}{did_you_mean(value, allowed)}")
    return values


@click.command()
@click.option("--store", "stores", multiple=True, type=PathArg(dir_okay=False),
              help="Results file to read; repeat to merge stores from several machines "
                   "[default: $DISTILLBENCH_STORE or ./distillbench_results/results.sqlite].")
@click.option("--dataset", "datasets", multiple=True, metavar="NAME[,NAME]", help="Only these datasets.")
@click.option("--ipc", "ipcs", multiple=True, metavar="N[,N]", help="Only these images-per-class values.")
@click.option("--objective", "objectives", multiple=True, metavar="NAME[,NAME]", help="Only these objectives.")
@click.option("--kernel", "kernels", multiple=True, metavar="NAME[,NAME]", help="Only these kernels.")
@click.option("--loss", "losses", multiple=True, metavar="NAME[,NAME]", help="Only these losses.")
@click.option("--status", "statuses", multiple=True, metavar="STATUS[,STATUS]",
              help="Only runs that ended so: done, error, diverged, timeout.")
@click.option("--since", metavar="DATE", help="Only runs finished at or after DATE (ISO, UTC: 2024-05-31[T14:00]).")
@click.option("--until", metavar="DATE", help="Only runs finished at or before DATE (a bare date: the whole day).")
@click.option("--group-by", "group_by", default="dataset,ipc", show_default=True, metavar="FIELD[,FIELD]",
              help=f"One table per value of these fields: {', '.join(_GROUP_FIELDS)}; 'none' for one table.")
@click.option("--format", "fmt", default="rich", show_default=True, metavar="|".join(_FORMATS),
              help="rich (terminal table), md, csv, json (schema distillbench.leaderboard v5), html (with plots).")
@click.option("-o", "--output", type=PathArg(dir_okay=False),
              help="Write to this file instead of the terminal (html: default ./leaderboard.html, PNG plots beside it).")
@click.option("--plots", "plots_dir", type=PathArg(file_okay=False),
              help="Also write the plots as PNG files into this folder (any format).")
@click.option("--transfer", is_flag=True,
              help="Per table, a matrix: distilled with (objective/kernel/arch) x evaluated with (evaluator, "
                   "kernel, arch), mean ± std (formats rich, md, csv, json).")
def report(stores, datasets, ipcs, objectives, kernels, losses, statuses, since, until, group_by, fmt, output,
           plots_dir, transfer) -> None:
    """Leaderboard of the results store(s): one table per dataset and images per class.

    \b
    Rows are method configurations (objective, kernel, arch, loss, labels, evaluator, and any other
    parameter that differs); seeds are aggregated (mean ± sample std, ddof=1). Failed, diverged and
    timed-out runs are shown with their reasons. A run_id present in several stores counts once
    (the latest finished_at wins).
    \b
    Examples:
      distillbench report
      distillbench report --format md --dataset digits
      distillbench report --store a.sqlite --store b.sqlite --format html -o board.html
      distillbench report --transfer --format md
    """
    from distillbench.registry import load_registry
    from distillbench.reports.declared import EvaluatorMetrics
    from distillbench.reports.filters import Filters, parse_when
    from distillbench.reports.leaderboard import build_leaderboard
    from distillbench.reports.merge import ReportError, load_runs
    from distillbench.store.database import default_store_path

    if fmt not in _FORMATS:
        _choices("--format", (fmt,), _FORMATS)
    if transfer and (fmt == "html" or plots_dir):
        fail("--transfer writes rich, md, csv or json (no html page or plots); e.g. --transfer --format md")
    group = () if group_by.strip().lower() == "none" else _choices("--group-by", _split((group_by,)), _GROUP_FIELDS)
    ipc_values = parse_ipcs(ipcs)
    try:
        filters = Filters(
            dataset=_split(datasets), ipc=tuple(ipc_values), objective=_split(objectives),
            kernel=_split(kernels), loss=_split(losses), status=_choices("--status", _split(statuses), _STATUSES),
            since=parse_when(since) if since else None, until=parse_when(until, end=True) if until else None,
        )
    except ValueError as exc:
        fail(f"--since/--until: {exc}")
    paths = list(stores) or [str(default_store_path())]
    _check_output(output, paths)

    registry = load_registry()  # what the evaluators declare, the objectives' plot markers (no JAX)
    metrics = EvaluatorMetrics.from_registry(registry)
    try:
        runs, merge = load_runs(paths, metrics)
        board = build_leaderboard(runs, group_by=group, filters=filters, merge=merge, metrics=metrics)
    except ReportError as exc:
        fail(str(exc))
    if merge.warning():
        click.echo(one_line(merge.warning()), err=True)
    merge_line = merge.line()
    if transfer:
        _transfer(board, fmt, output)
        return
    _write_board(board, fmt, output, plots_dir, merge_line, registry)


def _check_output(output: str | None, stores: list[str]) -> None:
    """``-o`` names a file to create or replace, and never one of the stores read."""
    if output is None:
        return
    if not output.strip():
        fail("-o/--output is empty: give the file to write, e.g. -o board.md")
    target = Path(output).resolve()
    if any(Path(store).resolve() == target for store in stores):
        fail(f"-o {output!r} is a results store this report reads; write the report to another file")


def _write_board(board, fmt: str, output: str | None, plots_dir: str | None, merge_line: str, registry) -> None:
    """The leaderboard in ``fmt`` to ``output`` (or stdout), and its plots where asked for: the plots
    first, so that a folder they cannot go to leaves the report unwritten too."""
    from distillbench.reports import formats
    from distillbench.reports.html_page import to_html

    plots = []
    if fmt == "html" or plots_dir:
        from distillbench.reports.plots import objective_markers, render_plots

        plots = render_plots(board, objective_markers(registry))
    if plots_dir:
        _write_plots(plots, Path(plots_dir), "leaderboard", f"cannot write plots to {plots_dir!r}")
    if fmt == "html":
        target = Path(output or "leaderboard.html")
        written = _write_plots(plots, target.parent, target.stem, f"cannot write plots next to {str(target)!r}")
        _write(target, to_html(board, plots, merge_line))
        click.echo(f"wrote {target} and {len(written)} plots: {', '.join(str(p) for p in written)}")
    elif fmt == "rich":
        _print_rich(board, merge_line, output)
    else:
        text = {"md": lambda: formats.to_markdown(board, merge_line), "csv": lambda: formats.to_csv(board),
                "json": lambda: formats.to_json(board)}[fmt]()
        if output:
            _write(Path(output), text)
            click.echo(f"wrote {output}")
        else:
            click.echo(text, nl=False)
    if plots_dir:
        click.echo(f"wrote {len(plots)} plots to {plots_dir}", err=fmt in ("csv", "json") and not output)


def _write_plots(plots, folder: Path, stem: str, what: str) -> list[Path]:
    from distillbench.reports.plots import write_plots

    try:
        return write_plots(plots, folder, stem)
    except OSError as exc:
        fail(f"{what}: {exc.strerror or exc}")


def _transfer(board, fmt: str, output: str | None) -> None:
    from distillbench.reports import transfer

    tables = transfer.build_transfer(board)
    if fmt == "rich":
        from rich.console import Console

        if output:
            _write(Path(output), _plain_text(lambda console: transfer.print_rich(tables, console)))
            click.echo(f"wrote {output}")
            return
        console = Console()
        transfer.print_rich(tables, console if console.is_terminal else Console(width=250))
        return
    text = {"md": transfer.to_markdown, "csv": transfer.to_csv, "json": transfer.to_json}[fmt](tables)
    if output:
        _write(Path(output), text)
        click.echo(f"wrote {output}")
    else:
        click.echo(text, nl=False)


def _write(path: Path, text: str) -> None:
    """Replace ``path`` whole (a temporary file renamed over it): a failure leaves the previous file."""
    from distillbench.reports.output import write_atomic

    try:
        write_atomic(path, text)
    except OSError as exc:
        import errno

        why = "a FIFO with no reader" if exc.errno == errno.ENXIO else exc.strerror or exc
        fail(f"cannot write {str(path)!r}: {why}; nothing was written")


def _plain_text(draw) -> str:
    """What ``draw(console)`` prints, as plain text 250 columns wide (a rich report written to a file)."""
    import io

    from rich.console import Console

    buffer = io.StringIO()
    draw(Console(file=buffer, width=250, no_color=True, highlight=False))
    return buffer.getvalue()


def _print_rich(board, merge_line: str, output: str | None) -> None:
    from rich.console import Console

    from distillbench.reports.formats import print_rich

    if output:
        _write(Path(output), _plain_text(lambda console: print_rich(board, console, merge_line)))
        click.echo(f"wrote {output}")
        return
    console = Console()
    if not console.is_terminal:  # logs and pipes: no wrapping at 80 columns
        console = Console(width=250)
    print_rich(board, console, merge_line)
