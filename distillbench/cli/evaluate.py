"""``distillbench evaluate``: score stored or external distilled sets with other evaluators, no distilling."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from distillbench.cli.common import (PathArg, fail, load_registry_or_fail, one_line, parse_ipcs,
                                     refuse_foreign_store, single_store_path)
from distillbench.cli.common import split_values as _split

_STORED_KEYS = ("evaluator",)
_EXTERNAL_KEYS = ("evaluator", "dataset", "loss", "seed")


@click.command()
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--store", "store_paths", type=PathArg(dir_okay=False), multiple=True,
              help="SQLite results file to read runs from and write evaluations to "
                   "[env DISTILLBENCH_STORE; default ./distillbench_results/results.sqlite].")
@click.option("--dataset", "datasets", multiple=True, metavar="NAME[,NAME]",
              help="Only runs of these datasets; with --support: the dataset the set claims to distill.")
@click.option("--ipc", "ipcs", multiple=True, metavar="N[,N]", help="Only runs with these images per class.")
@click.option("--objective", "objectives", multiple=True, metavar="NAME[,NAME]", help="Only these objectives.")
@click.option("--kernel", "kernels", multiple=True, metavar="NAME[,NAME]", help="Only these kernels.")
@click.option("--loss", "losses", multiple=True, metavar="NAME[,NAME]", help="Only these losses.")
@click.option("--since", metavar="DATE", help="Only runs finished at or after DATE (ISO, UTC).")
@click.option("--until", metavar="DATE", help="Only runs finished at or before DATE (a bare date: the whole day).")
@click.option("--support", "support", type=PathArg(dir_okay=False),
              help="Score this .npz (arrays x, y) instead of stored runs; needs --dataset and --name.")
@click.option("--name", "set_name", metavar="TEXT", help="With --support: the name the set is recorded under.")
@click.option("--full-data", is_flag=True,
              help="Also score the whole training split once per (dataset, evaluator), stored and reused: "
                   "report shows each set's recovery, its share of that accuracy.")
@click.option("--dry-run", is_flag=True, help="List what would be scored, and exit.")
@click.option("--force", is_flag=True, help="Score again evaluations already done in the store.")
@click.option("-q", "--quiet", is_flag=True, help="No per-evaluation lines; summary table only.")
@click.option("--debug", is_flag=True, envvar="DISTILLBENCH_DEBUG", help="Print full tracebacks of failures.")
def evaluate(overrides, store_paths, datasets, ipcs, objectives, kernels, losses, since, until, support, set_name,
             full_data, dry_run, force, quiet, debug) -> None:
    """Score distilled sets again with other evaluators, without distilling them again.

    \b
    Stored runs (chosen with the report filters) or an external set (--support FILE.npz) are
    scored with every evaluator the KEY=VALUE sweep describes, against the same random real
    subset the run used (an external set: the one `run` would use with seed=). Each evaluation
    is stored as a row linked to the run it scored; `distillbench report` shows it.
    \b
    Keys:  evaluator=NAME[,NAME]  evaluator.<param>=VALUE[,VALUE]
           with --support also: dataset.<param>=  loss=  loss.<param>=  seed=  (the baseline's seed)
    \b
    Examples:
      distillbench evaluate evaluator=nn --dataset digits
      distillbench evaluate evaluator=krr evaluator.kernel=ntk,nngp evaluator.arch=fc1,convnet3
      distillbench evaluate --support kip_sets.npz --dataset mnist --name kip-paper evaluator=krr
      distillbench evaluate --full-data evaluator=nn evaluator.arch=convnet3 --dataset mnist-t10k
    """
    from distillbench.errors import ConfigError
    from distillbench.runner.plan import parse_overrides, plan_parsed

    store_path = single_store_path(store_paths)
    try:
        parsed = parse_overrides(overrides)
    except ConfigError as exc:
        fail(str(exc))
    _check_options(parsed, support, set_name, datasets, (ipcs, objectives, kernels, losses, since, until))
    registry = load_registry_or_fail()
    chosen = {**parsed, "dataset": [_split(datasets)[0]]} if support else parsed
    try:
        planned = plan_parsed(chosen, registry)
    except ConfigError as exc:
        fail(str(exc))
    from distillbench.reports.console import refused_lines

    for line in refused_lines(planned.refused):
        click.echo(line, err=True)

    from distillbench.store.database import default_store_path

    path = Path(store_path or default_store_path())
    evaluators = list(dict.fromkeys(c.evaluator for c in planned.configs))
    shown = tuple(k.partition(".")[2] for k in parsed if k.startswith("evaluator."))
    if support:
        jobs = _external_jobs(Path(support), set_name, planned, registry, shown)
    else:
        jobs = _stored_jobs(path, evaluators, datasets, ipcs, objectives, kernels, losses, since, until, shown,
                            registry)
    if full_data:
        from distillbench.runner.evaluate import with_full_data

        jobs = with_full_data(jobs, registry)
    if dry_run:
        _list(jobs)
        return
    _score(jobs, path, registry, force=force, quiet=quiet, debug=debug)


def _list(jobs) -> None:
    """``--dry-run``: one line per job, the run it scores named."""
    for i, job in enumerate(jobs, start=1):
        parent = f" (scores run {job.parent_run_id})" if job.parent_run_id else ""
        click.echo(f"[{i}/{len(jobs)}] {job.run_id}  {job.run_config().label()}{parent}")


def _check_options(parsed, support, set_name, datasets, run_filters) -> None:
    """Exit 2 with one line when the keys and options do not fit stored runs / an external set."""
    if support is not None and not support:
        fail("--support is empty: give the .npz file of the set, e.g. --support kip_sets.npz")
    allowed = _EXTERNAL_KEYS if support else _STORED_KEYS
    for key in parsed:
        if key.partition(".")[0] not in allowed or (key == "dataset"):
            what = "evaluator=, evaluator.<param>=, dataset.<param>=, loss=, loss.<param>=, seed=" if support \
                else "evaluator= and evaluator.<param>= (choose runs with --dataset, --objective, ...)"
            fail(f"evaluate does not take {key}=; it takes {what}")
    if not any(k.startswith("evaluator") for k in parsed):
        fail("evaluate needs an evaluator, e.g. evaluator=nn or evaluator=krr evaluator.arch=convnet3")
    if support and not set_name:
        fail("--support needs --name: the name the set is recorded under, e.g. --name kip-paper")
    if set_name is not None and not support:
        fail("--name is for an external set; pass it with --support FILE.npz")
    if support and len(_split(datasets)) != 1:
        fail("--support needs --dataset NAME: the one dataset the set claims to distill")
    if support and any(run_filters):
        fail("--support scores one file; --ipc, --objective, --kernel, --loss, --since and --until select stored runs")


def _score(jobs, path: Path, registry, *, force: bool, quiet: bool, debug: bool) -> None:
    """Score and store every job; exit 1 when any failed."""
    import time

    from distillbench.reports.console import ConsoleReporter
    from distillbench.reports.declared import EvaluatorMetrics
    from distillbench.runner.evaluate import evaluate_jobs
    from distillbench.store.database import ResultStore

    refuse_foreign_store(path)
    try:
        store = ResultStore(path)
    except Exception as exc:
        fail(f"cannot open results store {str(path)!r}: {exc}; pass --store PATH to a writable file")
    reporter = ConsoleReporter(quiet=quiet, debug=debug, metrics=EvaluatorMetrics.from_registry(registry))
    if not quiet:
        click.echo(f"distillbench evaluate: {len(jobs)} evaluation{'s' if len(jobs) != 1 else ''}, nothing distilled")
    t = time.perf_counter()
    with store:
        outcomes = evaluate_jobs(jobs, registry, store, reporter, force=force)
    wall = time.perf_counter() - t
    eval_s = sum(o.timings.eval_s or 0.0 for o in outcomes if not o.cached)
    click.echo(f"evaluated {len(outcomes)} set{'s' if len(outcomes) != 1 else ''} in {wall:.1f} s "
               f"(scoring {eval_s:.1f} s); results: {store.path}")
    if any(o.status != "done" for o in outcomes):
        sys.exit(1)


def _stored_jobs(path, evaluators, datasets, ipcs, objectives, kernels, losses, since, until, shown, registry):
    """One job per (stored distilled set passing the filters, evaluator); exit 2 when none match."""
    from distillbench.reports.declared import EvaluatorMetrics
    from distillbench.reports.leaderboard import Filters, ReportError, load_runs, parse_when
    from distillbench.runner.evaluate import Job, Source, is_source
    from distillbench.runner.plan import with_arch
    from distillbench.store.database import read_artifact

    ipc_values = parse_ipcs(ipcs)
    try:
        filters = Filters(dataset=_split(datasets), ipc=tuple(ipc_values), objective=_split(objectives),
                          kernel=_split(kernels), loss=_split(losses),
                          since=parse_when(since) if since else None,
                          until=parse_when(until, end=True) if until else None)
    except ValueError as exc:
        fail(f"--since/--until: {exc}")
    try:
        runs, merge = load_runs([path], EvaluatorMetrics.from_registry(registry))
    except ReportError as exc:
        fail(str(exc))
    if merge.warning():
        click.echo(one_line(merge.warning()), err=True)
    sources = [r for r in runs if is_source(r.record) and filters.accepts(r.record)]
    if not sources:
        fail(f"no done runs with a stored support set match the filters ({filters.describe()}) in {str(path)!r}")
    jobs = []
    for run in sources:
        record = run.record
        try:
            artifact = read_artifact(run.store, record)
        except (OSError, ValueError) as exc:
            fail(f"run {record.run_id}: cannot read its support set {record.artifact!r}: {exc}")
        if artifact.support is None or artifact.baseline is None:
            fail(f"run {record.run_id}: its artifact holds no support set and baseline (stored by an older "
                 f"distillbench); re-run it with `distillbench run --force`")
        source = Source(record.run_id, with_arch(record.config, registry), artifact, record.data_fingerprint)
        jobs.extend(Job(source, evaluator, shown) for evaluator in evaluators)
    return jobs


def _external_jobs(file: Path, name: str, planned, registry, shown):
    """One job per (seed, loss, evaluator) for a set made elsewhere, after checking it against its dataset."""
    from distillbench.runner.evaluate import Job, Source
    from distillbench.runner.execute import data_fingerprint
    from distillbench.runner.external import ExternalSetError, external_artifact, external_config

    if not name.strip() or not name.isprintable():
        fail("--name must be printable text, e.g. --name kip-paper")
    first = planned.configs[0]
    try:
        checked, digest, data = _read_external(file, first, registry)
    except ExternalSetError as exc:
        fail(str(exc))
    fingerprint = data_fingerprint(data)
    jobs, seen = [], set()
    for config in planned.configs:
        key = (config.seed, config.loss, config.evaluator)
        if key in seen:
            continue
        seen.add(key)
        try:
            artifact = external_artifact(checked, data, config.seed)
        except ValueError as exc:
            fail(f"{file}: {exc}")
        stored = external_config(config.dataset, config.loss, checked.ipc, config.seed, name, digest, file.name)
        jobs.append(Job(Source(None, stored, artifact, fingerprint), config.evaluator, shown))
    return jobs


def _dataset_setting(choice, registry) -> str:
    """The dataset's parameters set away from their declared defaults (those that shape its data, not
    where its files live: ``identity=False``), e.g. ``preprocess=zca``; else ``its default parameters``."""
    from distillbench.params import format_value

    declared = registry.get("dataset", choice.name).params
    values = choice.as_dict()
    changed = [f"{p.name}={format_value(values[p.name])}" for p in declared
               if p.identity is not False and p.name in values and values[p.name] != p.default]
    return ", ".join(changed) or "its default parameters"


def _read_external(file: Path, config, registry):
    """``(checked set, sha256, data)``: the file's headers are checked against the dataset before its data
    is read (a small file may declare huge arrays); raises ``ExternalSetError`` with one line."""
    from distillbench.runner.execute import enable_float64
    from distillbench.runner.external import ExternalSetError, NpzFile, check_external, check_headers

    with NpzFile(file) as npz:
        enable_float64()
        try:
            data = registry.instantiate("dataset", config.dataset.name, config.dataset.as_dict())
        except Exception as exc:
            raise ExternalSetError(f"dataset {config.dataset.name}: cannot be loaded "
                                   f"({(str(exc).splitlines() or [type(exc).__name__])[0]})") from None
        check_headers(npz, tuple(data.x_train.shape[1:]), int(data.num_classes), len(data.y_train))
        arrays = npz.load()
    described = f"dataset {config.dataset.name} with {_dataset_setting(config.dataset, registry)}"
    return check_external(arrays, data, str(file), described), npz.sha256, data
