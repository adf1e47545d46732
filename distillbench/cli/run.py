"""``distillbench run``: plan, then distill and evaluate every configuration of a sweep."""

from __future__ import annotations

import os
import sys

import click

from distillbench.cli.common import (PathArg, fail, load_registry_or_fail, refuse_foreign_store, single_store_path,
                                     single_value)


@click.command(context_settings={"ignore_unknown_options": False})
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--config", "config_files", type=str, multiple=True, metavar="FILE.toml",
              help="Campaign file: named grids of KEY=VALUE settings (docs/user-guide.md, campaigns/); "
                   "KEY=VALUE arguments replace that key in every grid.")
@click.option("--dry-run", is_flag=True, help="Print the resolved configuration(s) and exit.")
@click.option("--force", is_flag=True, help="Re-run cells already done in the store.")
@click.option("--retry-crashed", "retry_crashed", is_flag=True,
              help="Run again the cells that killed an earlier run's process (a segfault, the OOM killer); "
                   "without it they are skipped with their error.")
@click.option("--store", "store_paths", type=PathArg(dir_okay=False), multiple=True,
              help="SQLite results file [env DISTILLBENCH_STORE; default ./distillbench_results/results.sqlite].")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or per-run lines; summary table only.")
@click.option("--debug", is_flag=True, envvar="DISTILLBENCH_DEBUG",
              help="Print the full traceback of any failure to stderr [env DISTILLBENCH_DEBUG=1].")
@click.option("--compile-cache", "compile_cache", type=PathArg(file_okay=False),
              help="JAX's persistent compilation cache, shared by the workers [default with launcher=ray or "
                   "slurm: <store>.compile-cache next to the store; local: off].")
def run(overrides: tuple[str, ...], config_files: tuple[str, ...], dry_run: bool, force: bool, retry_crashed: bool,
        store_paths: tuple[str, ...], quiet: bool, debug: bool, compile_cache: str | None) -> None:
    """Distill and evaluate every configuration the KEY=VALUE overrides describe.

    \b
    Keys:  dataset= kernel= loss= objective= evaluator=   (component choice)
           <kind>.<param>=VALUE                          (e.g. kernel.arch=convnet3 objective.steps=300)
           ipc=  seed=                                   (run parameters)
           timeout=SECONDS                               (per run)
           launcher=local|ray|slurm launcher.<param>=V   (where cells run; never part of a run_id)
    A comma list sweeps the cartesian product:  loss=mse,platt seed=0,1,2
    """
    store_path = single_store_path(store_paths)
    config_file = _config_file(config_files)
    registry = load_registry_or_fail()
    plan, choice = _plan(registry, overrides, config_file, dry_run)
    if dry_run:
        _print_plan(plan)
        shown = " ".join(f"{k}={v}" for k, v in choice.params
                         if v != registry.get("launcher", choice.name).param(k).default)
        click.echo(f"launcher: {choice.name}{' ' + shown if shown else ''}")
        return
    launcher = _launcher(registry, choice)
    from distillbench.store.database import default_store_path

    path = store_path or default_store_path()
    store = _open_store(path)
    view = None
    if not launcher.in_process:
        if compile_cache is None:
            from distillbench.runner.cell import default_compile_cache

            compile_cache = str(default_compile_cache(path))
        click.echo(launcher.describe(), err=True)
        if not quiet and sys.stderr.isatty():
            from distillbench.launchers.progress import CampaignView

            view = CampaignView()
    outcomes = _sweep(plan, registry, store, launcher, view, compile_cache, (force, retry_crashed), quiet, debug)
    click.echo(f"results: {store.path}")
    if any(o.status != "done" for o in outcomes):
        sys.exit(1)


def _config_file(values: tuple[str, ...]) -> str | None:
    """The one ``--config``: none, or exactly one non-empty path (like ``--store``)."""
    return single_value("--config", values, "a run reads one campaign file (pass it once, with every grid in "
                        "that file)", "a campaign file, e.g. --config campaigns/kip-table1.toml")


def _plan(registry, overrides, config_file, dry_run):
    """``(plan, launcher choice)``; bad input is one line, exit 2. Prints the notes."""
    from distillbench.errors import ConfigError
    from distillbench.reports.console import refused_lines
    from distillbench.runner.campaign import plan_campaign
    from distillbench.runner.plan import parse_overrides, plan_launcher, plan_parsed

    try:
        launcher, overrides = plan_launcher(parse_overrides(overrides), registry)
        checked = not dry_run  # a dry run lists cells whose data is not on this machine, with a note
        plan = (plan_campaign(config_file, overrides, registry, check_data=checked) if config_file is not None
                else plan_parsed(overrides, registry, check_data=checked))
    except ConfigError as exc:
        fail(str(exc))
    for line in refused_lines(plan.refused):  # one line per reason, not per refused cell
        click.echo(line, err=True)
    for note in plan.notes:
        click.echo(f"note: {note}", err=True)
    return plan, launcher


def _launcher(registry, choice):
    """The launcher built by the registry (its contract checked, as for every kind) and prepared:
    before the store is touched, so a missing extra (ray, submitit), a Ray cluster not there, no
    SLURM here or a launcher plugin breaking its contract is one line, exit 2, nothing written."""
    from distillbench.errors import ConfigError, ContractError

    try:
        launcher = registry.instantiate("launcher", choice.name, choice.as_dict())
        launcher.prepare()
    except (ConfigError, ContractError) as exc:
        fail(str(exc))
    return launcher


def _open_store(path):
    from distillbench.store.database import ResultStore

    refuse_foreign_store(path)
    try:
        return ResultStore(path)
    except Exception as exc:  # unwritable location, not a database, ...
        fail(f"cannot open results store {str(path)!r}: {exc}; pass --store PATH to a writable file")


def _sweep(plan, registry, store, launcher, view, compile_cache, rerun, quiet, debug):
    """Every cell of the plan; an interrupt (SIGINT/SIGTERM) exits 128+signal with the store closed."""
    from distillbench.launchers import LauncherError
    from distillbench.reports.console import ConsoleReporter
    from distillbench.reports.declared import EvaluatorMetrics
    from distillbench.runner.sweep import run_sweep

    reporter = ConsoleReporter(quiet=quiet, debug=debug, metrics=EvaluatorMetrics.from_registry(registry))
    try:
        with store:
            force, retry_crashed = rerun
            return run_sweep(plan, registry, store, reporter, force=force, retry_crashed=retry_crashed,
                             handle_signals=True, launcher=launcher, compile_cache=compile_cache, view=view)
    except LauncherError as exc:  # the engine failed to start once the store was open
        fail(str(exc))
    except KeyboardInterrupt as exc:  # SIGINT or SIGTERM: the running cell is stored as interrupted
        click.echo("interrupted: finished runs are saved; re-run the same command to resume", err=True)
        # The store is closed and every row committed. Skip interpreter teardown: with a step of the
        # interrupted cell still in flight on XLA's threads, jaxlib 0.10 segfaults while Python
        # finalizes its objects, which would turn the documented exit code 128+signal into -11.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + getattr(exc, "signum", 2))


def _print_plan(plan) -> None:
    import json

    from distillbench.components.spec import KINDS

    total = len(plan.configs)
    for i, config in enumerate(plan.configs, start=1):
        click.echo(f"[{i}/{total}] {config.run_id}  {config.label()}")
        data = config.to_dict()
        for kind in KINDS:
            params = " ".join(f"{k}={json.dumps(v)}" for k, v in data[kind]["params"].items())
            click.echo(f"    {kind:<10} {data[kind]['name']:<10} {params}")
    options = " ".join(f"{k}={v}" for k, v in vars(plan.options).items())
    click.echo(f"options: {options}")
