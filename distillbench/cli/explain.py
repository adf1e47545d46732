"""``distillbench explain RUN_ID``: which support images drive each prediction, and what each resembles."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

from distillbench.cli.common import PathArg, fail, load_registry_or_fail


@click.command()
@click.argument("run_id")
@click.option("--store", "store_path", type=PathArg(dir_okay=False),
              help="Results file [env DISTILLBENCH_STORE; default ./distillbench_results/results.sqlite].")
@click.option("-o", "--output", type=PathArg(dir_okay=False), default=None,
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
    from distillbench.store.database import default_store_path

    if not run_id.strip():
        fail("RUN_ID is empty; give a run_id or a unique prefix (see `distillbench report --format json`)")
    path = Path(store_path or default_store_path())
    record, arrays = _read_run(path, run_id)
    page, doc = _outputs(output, record.run_id, path)

    from distillbench.reports.explain import to_html, to_json
    from distillbench.runner.explain import ExplainError
    from distillbench.runner.explain import explain as compute

    registry = load_registry_or_fail()
    try:
        explanation = compute(record, arrays, registry, tests=tests, top=top, neighbours=top, train_limit=train_limit)
    except ExplainError as exc:
        fail(str(exc))
    try:
        write_atomic({page: to_html(explanation), doc: to_json(explanation)})
    except OSError as exc:
        fail(f"cannot write {str(page)!r} and {str(doc)!r}: {exc}")
    click.echo(f"wrote {page} and {doc}")


def _read_run(path: Path, run_id: str):
    """``(record, artifact arrays)`` of the one done run ``run_id`` names; exit 2 with one line otherwise."""
    from distillbench.store.database import NotAStoreError, open_existing

    try:
        store = open_existing(path)
    except (FileNotFoundError, NotAStoreError) as exc:
        fail(f"{exc}; pass --store PATH to a distillbench store")
    except Exception as exc:  # unreadable (permissions), locked beyond the timeout
        fail(f"cannot open results store {str(path)!r}: {exc}")
    try:
        try:
            matches = [r for r in store.records() if r.run_id.startswith(run_id)]
        except Exception as exc:  # a row whose JSON columns are not what a store writes
            fail(f"cannot read the runs of {str(path)!r}: {exc}")
        if len(matches) != 1:
            fail(f"run {run_id!r} {'matches no run' if not matches else f'is ambiguous ({len(matches)} runs)'} in "
                 f"{str(path)!r}; see the run_ids with `distillbench report --format json`")
        record = matches[0]
        if record.status != "done" or record.artifact is None:
            fail(f"run {record.run_id} has no distilled set to explain (status {record.status}; only a done run "
                 f"with a stored support set, not an evaluation row)")
        try:
            arrays = store.load_artifact(record)
        except Exception as exc:  # missing, truncated, not a zip, a pickled member
            fail(f"run {record.run_id}: cannot read its support set: {exc}")
    finally:
        store.close()
    return record, arrays


def _outputs(output: str | None, run_id: str, store: Path) -> tuple[Path, Path]:
    """The page and its JSON: two distinct files, neither the store nor inside its artifacts folder."""
    from distillbench.store.database import artifact_folder_name

    page = Path(output or f"explain-{run_id}.html")
    doc = page.with_suffix(".json")
    if os.path.normcase(str(page)).lower() == os.path.normcase(str(doc)).lower():
        fail(f"-o {page}: the page and its JSON would both be {str(doc)!r}; name the HTML page, e.g. "
             f"-o {page.with_suffix('.html')} (the JSON goes beside it as {doc.name})")
    protected = store.resolve()
    artifacts = protected.parent / artifact_folder_name(store)
    for target in (page, doc):
        resolved = target.resolve()
        journal = resolved.parent == protected.parent and resolved.name.startswith(protected.name + "-")  # -wal
        if resolved == protected or journal or artifacts in resolved.parents:
            fail(f"-o {page}: {str(target)!r} would overwrite the results store or its files; write the page "
                 f"elsewhere")
        if target.is_dir():
            fail(f"-o {page}: {str(target)!r} is a folder; name a file for the page (its JSON goes beside it)")
    return page, doc


def write_atomic(texts: dict[Path, str]) -> None:
    """Write each text to a temporary file beside its target, then rename them all into place.

    A failure (a full disk, a missing permission) leaves every target as it was and no temporary
    file; a target that exists keeps its permission bits.
    """
    umask = os.umask(0)
    os.umask(umask)
    written: dict[Path, str] = {}
    try:
        for target, text in texts.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            written[target] = tmp
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            mode = target.stat().st_mode & 0o777 if target.is_file() else 0o666 & ~umask
            os.chmod(tmp, mode)
        for target, tmp in written.items():
            os.replace(tmp, target)
    finally:
        for tmp in written.values():
            Path(tmp).unlink(missing_ok=True)
