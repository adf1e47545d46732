"""``distillbench explain RUN_ID``: which support images drive each prediction, and what each resembles."""

from __future__ import annotations

from pathlib import Path

import click

from distillbench.cli.common import fail, load_registry_or_fail


@click.command()
@click.argument("run_id")
@click.option("--store", "store_path", type=click.Path(dir_okay=False),
              help="Results file [env DISTILLBENCH_STORE; default ./distillbench_results/results.sqlite].")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="HTML page to write [default: explain-<run_id>.html]; the JSON goes beside it (.json).")
@click.option("--tests", "tests", type=click.IntRange(min=1, max=500), default=8, show_default=True,
              help="Test images to explain (evenly spaced over the test split).")
@click.option("--top", type=click.IntRange(min=1, max=100), default=5, show_default=True,
              help="Support images shown per test image, and training neighbours per support image.")
@click.option("--train", "train_limit", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Training images searched for neighbours (evenly spaced over the training split).")
def explain(run_id, store_path, output, tests, top, train_limit) -> None:
    """Explain a distilled set through its KRR predictor (offline HTML page + JSON).

    \b
    For each test image: the support images whose terms K(x, s)·alpha_s of the KRR prediction push
    hardest towards its predicted class. For each support image: the training images nearest to
    it in the evaluation kernel's feature space. RUN_ID may be a unique prefix.
    """
    from distillbench.store.database import NotAStoreError, default_store_path, open_existing

    path = Path(store_path or default_store_path())
    try:
        store = open_existing(path)
    except (FileNotFoundError, NotAStoreError) as exc:
        fail(f"{exc}; pass --store PATH to a distillbench store")
    try:
        matches = [r for r in store.records() if r.run_id.startswith(run_id)]
        if len(matches) != 1:
            fail(f"run {run_id!r} {'matches no run' if not matches else f'is ambiguous ({len(matches)} runs)'} in "
                 f"{str(path)!r}; see the run_ids with `distillbench report --format json`")
        record = matches[0]
        if record.status != "done" or record.artifact is None:
            fail(f"run {record.run_id} has no distilled set to explain (status {record.status}; only a done run "
                 f"with a stored support set, not an evaluation row)")
        try:
            arrays = store.load_artifact(record)
        except (OSError, ValueError) as exc:
            fail(f"run {record.run_id}: cannot read its support set: {exc}")
    finally:
        store.close()

    from distillbench.reports.explain import to_html, to_json
    from distillbench.runner.explain import explain as compute

    registry = load_registry_or_fail()
    explanation = compute(record, arrays, registry, tests=tests, top=top, neighbours=top, train_limit=train_limit)
    target = Path(output or f"explain-{record.run_id}.html")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(to_html(explanation), encoding="utf-8")
        target.with_suffix(".json").write_text(to_json(explanation), encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {str(target)!r}: {exc}")
    click.echo(f"wrote {target} and {target.with_suffix('.json')}")
