"""A store written by the previous release (tests/data/store_release_0, made by the code at 13d20cb:
digits kip/ls/rfad over two seeds, an nn evaluator, a timeout, a below-random run and two
`distillbench evaluate` rows) opens with this code and reports exactly what that release reported."""

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from distillbench.cli import main

FIXTURE = Path(__file__).parent / "data" / "store_release_0"


@pytest.fixture
def old_store(tmp_path):
    """A copy: opening a store may add SQLite's side files, and the write test migrates it."""
    shutil.copytree(FIXTURE, tmp_path / "store")
    return tmp_path / "store" / "results.sqlite"


def _report(store: Path, *args: str) -> dict:
    result = CliRunner().invoke(main, ["report", "--store", str(store), "--format", "json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _without_random_std(doc: dict) -> dict:
    """A leaderboard without version 4's ``random_std_pct`` (the release stored no per-seed random
    accuracies in its report to compare with): a std where a row has 2+ seeds and a random mean;
    nor version 5's ``peak_rss_mb_mean``, the mean of the release's stored peaks (its distillation
    runs recorded one, its re-scorings none)."""
    for row in (row for table in doc["tables"] for row in table["rows"]):
        std = row.pop("random_std_pct")
        has_std = len(row["seeds"]) > 1 and row["random_mean_pct"] is not None
        assert (std is not None and std >= 0) if has_std else std is None
        peak = row.pop("peak_rss_mb_mean")
        assert (peak is None or peak > 0) if row["seeds"] else peak is None
        assert peak is not None or not row["seeds"] or "re-scored" in row["status_text"]
    return doc


def _without_peak_column(md: str) -> str:
    """A Markdown report without version 5's ``peak MiB`` column and its legend clause."""
    lines = []
    for line in md.splitlines(keepends=True):
        if line.startswith("| rank |"):
            column = [c.strip() for c in line.split("|")].index("peak MiB")
        if line.startswith("|"):
            cells = line.split("|")
            line = "|".join(cells[:column] + cells[column + 1:])
        lines.append(line)
    return "".join(lines).replace("; peak = the run's peak resident memory in MiB (mean over the done seeds).", ".")


def _without_random_rows(doc: dict) -> dict:
    """A transfer document as version 1 wrote it: version 2 (issue 30) adds the random subsets' row,
    checked against the leaderboard's random accuracies by tests/test_transfer.py."""
    from distillbench.reports.transfer import NOTE, RANDOM

    assert doc["version"] == 2 and doc["note"] == NOTE
    for table in doc["tables"]:
        assert table["distilled_with"][-1] == RANDOM
        table["distilled_with"] = table["distilled_with"][:-1]
        table["cells"] = [c for c in table["cells"] if c["distilled_with"] != RANDOM]
    return doc


def _expected(name: str, store: Path) -> dict:
    """The release's JSON, with the one value that depends on where the store lies: its path (the
    release wrote the fixture's own path into ``stores``)."""
    doc = json.loads((FIXTURE / name).read_text())
    if "stores" in doc:
        doc["stores"] = [str(store)]
    if doc.get("schema") == "distillbench.transfer":  # its version 2 adds a row (removed by the caller)
        from distillbench.reports.transfer import NOTE

        doc.update(version=2, note=NOTE)
    if doc.get("schema") == "distillbench.leaderboard":  # its version 3 (issue 28) renames one row field;
        from distillbench.reports.leaderboard import UNITS  # version 4 (issue 30) adds recovery fields, 5 the peak

        doc.update(version=5, metrics={}, units=dict(UNITS))
        for row in (row for table in doc["tables"] for row in table["rows"]):
            row["evaluator_metrics"] = row.pop("privacy")
            row.update(full_data_pct=None, recovery_pct=None, random_recovery_pct=None, gain_by_augment_pts={},
                       robust_gain_pts=None)
    return doc


def test_the_release_store_reports_identically(old_store):
    assert _without_random_std(_report(old_store)) == _expected("report.json", old_store)
    assert _without_random_rows(_report(old_store, "--transfer")) == _expected("transfer.json", old_store)
    result = CliRunner().invoke(main, ["report", "--store", str(old_store), "--format", "md"])
    assert result.exit_code == 0 and _without_peak_column(result.output) == (FIXTURE / "report.md").read_text()


def test_the_release_store_opens_for_writing_keeps_every_row_and_still_reports_identically(old_store):
    from distillbench.records import RunConfig
    from distillbench.store.database import ResultStore

    with ResultStore(old_store) as store:
        records = list(store.records())
        assert len(records) == 11 and all(isinstance(r.config, RunConfig) for r in records)
        for record in records:
            assert record.config.to_dict() == json.loads(json.dumps(record.config.to_dict()))
        done = [r for r in records if r.status == "done" and r.artifact]
        assert done and all(store.load_artifact(r).support.x.shape[0] >= 1 for r in done)
    assert _without_random_std(_report(old_store)) == _expected("report.json", old_store)


def test_the_release_store_rows_decode_to_the_json_they_hold(old_store):
    import sqlite3

    from distillbench.records import Metrics, RunConfig, Timings

    with sqlite3.connect(old_store) as conn:
        rows = conn.execute("SELECT config, metrics, timings FROM runs").fetchall()
    for config, metrics, timings in rows:
        assert RunConfig.from_dict(json.loads(config)).to_dict() == json.loads(config)
        assert Metrics.from_dict(json.loads(metrics)).to_dict() == json.loads(metrics)
        assert Timings.from_dict(json.loads(timings)).to_dict() == json.loads(timings)
