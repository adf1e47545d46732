"""`distillbench report`: aggregation, merging, filters, paper numbers, the writers and the CLI.

Stores are written through the real ResultStore with configurations resolved by the real planner;
only the metrics and timings are chosen by the test, so every expected number is known.
"""

import base64
import json
import sqlite3
import statistics
import subprocess
import sys
import types
from functools import cache

import pytest
from click.testing import CliRunner
from helpers import run_cli, tiny

from distillbench.cli import main
from distillbench.registry import load_registry
from distillbench.reports import formats
from distillbench.reports.leaderboard import (
    ROW_FIELDS,
    Filters,
    ReportError,
    build_leaderboard,
    leaderboard_from_stores,
    load_runs,
    method_fields,
    parse_when,
)
from distillbench.reports.paper import find_reference, paper_numbers
from distillbench.runner.plan import plan
from distillbench.store.database import NotAStoreError, ResultStore, open_existing

BAR_SWEEP = ("objective=kip,ls,rfad", "loss=mse,platt", "kernel=ntk,rf-nngp")
BASE_ACC = {"kip": 0.90, "ls": 0.85, "rfad": 0.80}
SEED_OFFSET = {0: 0.00, 1: 0.02, 2: 0.07}
ENV_A = {"backend": "cpu", "device": "cpu", "hostname": "box-a"}


@cache
def configs(*args: str):
    return tuple(plan(args, load_registry(entry_points=False)).configs)


def planned_acc(config) -> float:
    """A known accuracy per cell: objective base, minus 1 point for platt/rf-nngp, plus a seed offset."""
    acc = BASE_ACC[config.objective.name] + SEED_OFFSET[config.seed]
    acc -= 0.01 * (config.loss.name == "platt") + 0.01 * (config.kernel.name == "rf-nngp")
    return acc


def save(store, config, acc=None, status="done", message=None, env=ENV_A, random_acc=0.60, step_s=0.002):
    """Store a run as the runner does: a typed RunResult."""
    from distillbench.records import Metrics, RunResult, Timings

    acc = planned_acc(config) if acc is None and status == "done" else acc
    metrics = Metrics(acc=acc, random_acc=random_acc, gain=acc - random_acc) if status == "done" else Metrics()
    timings = Timings(step_s=step_s, distill_s=100 * step_s, compile_s=0.5, wall_s=2.0) if status == "done" \
        else Timings(wall_s=1.0)
    return store.save(RunResult(config, status, message, metrics, timings, environment=env))


def make_store(path, args=BAR_SWEEP, seeds=(0, 1, 2), **kwargs):
    with ResultStore(path) as store:
        for config in configs(*args, f"seed={','.join(map(str, seeds))}"):
            save(store, config, **kwargs)
    return path


def set_finished_at(path, value, where="1=1"):
    with sqlite3.connect(path) as conn:
        conn.execute(f"UPDATE runs SET finished_at = ? WHERE {where}", (value,))
    conn.close()


# -- aggregation --------------------------------------------------------------------------------
def test_bar_sweep_one_table_every_configuration_mean_sample_std(tmp_path):
    board = leaderboard_from_stores([make_store(tmp_path / "r.sqlite")])
    (table,) = board.tables
    assert table.key == {"dataset": "digits", "ipc": 1}
    # 3 objectives x 2 losses x 2 kernels, minus ls+platt (refused by the planner) = 10 configurations
    assert len(table.rows) == 10
    assert len({(r.method, r.setting) for r in table.rows}) == 10
    kip = next(r for r in table.rows if r.method == "kip/ntk(fc1)/mse")
    accs = [100 * (0.90 + SEED_OFFSET[s]) for s in (0, 1, 2)]
    assert kip.seeds == [0, 1, 2] and kip.runs == 3 and kip.status == "done" and kip.status_text == "3/3 done"
    assert kip.acc_mean_pct == pytest.approx(statistics.mean(accs))
    assert kip.acc_std_pct == pytest.approx(statistics.stdev(accs))  # sample std, ddof=1
    assert kip.acc_std_pct == pytest.approx(3.605551275, rel=1e-9)
    assert kip.random_mean_pct == pytest.approx(60.0)
    assert kip.gain_mean_pts == pytest.approx(statistics.mean(accs) - 60.0)
    assert kip.step_s_mean == pytest.approx(0.002) and kip.distill_s_mean == pytest.approx(0.2)
    assert kip.compile_s_mean == pytest.approx(0.5)
    assert kip.devices == ["cpu (box-a)"] and kip.learn_labels is False and kip.evaluator == "krr(nngp, fc1)"
    assert kip.support_size is None  # digits has no num_classes parameter and these runs have no artifact
    ls = next(r for r in table.rows if r.objective == "ls")
    assert ls.learn_labels is None and ls.labels_text() == "-"
    # ranked by mean accuracy: kip (90) > kip -1 (platt or rf) > ... ; equal means share a rank
    means = [r.acc_mean_pct for r in table.rows]
    assert means == sorted(means, reverse=True)
    assert [r.rank for r in table.rows][:4] == [1, 2, 2, 4]


def test_one_seed_has_no_std_and_says_so(tmp_path):
    board = leaderboard_from_stores([make_store(tmp_path / "r.sqlite", ("objective=kip",), seeds=(0,))])
    (row,) = board.tables[0].rows
    assert row.acc_std_pct is None and row.gain_std_pts is None
    assert "90.00 ± n/a" in formats.to_markdown(board)


def test_failures_are_listed_with_reasons_never_dropped(tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        for config in configs("objective=kip", "seed=0,1,2"):
            if config.seed == 2:
                save(store, config, status="error", message="ValueError: boom | bad")
            else:
                save(store, config)
        for config in configs("objective=rfad", "seed=0,1"):
            save(store, config, status="diverged", message="loss became nan at step 7")
        (timed_out,) = configs("objective=ls", "seed=0")
        save(store, timed_out, status="timeout", message="timeout=5s exceeded")
    board = leaderboard_from_stores([path])
    rows = {r.objective: r for r in board.tables[0].rows}
    kip, rfad, ls = rows["kip"], rows["rfad"], rows["ls"]
    assert kip.status == "partial" and kip.rank == 1 and kip.seeds == [0, 1] and kip.runs == 3
    assert kip.status_text == "2/3 done; 1 error (seed 2): ValueError: boom | bad"
    assert kip.failures == [{"seed": 2, "status": "error", "message": "ValueError: boom | bad"}]
    assert rfad.status == "failed" and rfad.rank is None and rfad.acc_mean_pct is None
    assert rfad.status_text == "0/2 done; 2 diverged (seeds 0, 1): loss became nan at step 7"
    assert ls.status_text == "0/1 done; 1 timeout (seed 0): timeout=5s exceeded"
    assert [r.objective for r in board.tables[0].rows] == ["kip", "ls", "rfad"]  # unranked rows last
    md = formats.to_markdown(board)
    assert "boom \\| bad" in md and "2 diverged (seeds 0, 1)" in md and "1 timeout (seed 0)" in md


def test_different_settings_are_never_averaged(tmp_path):
    path = tmp_path / "r.sqlite"
    make_store(path, ("objective=kip", "objective.lr=0.01,0.04"), seeds=(0, 1))
    with ResultStore(path) as store:
        for config in configs("objective=rfad", "seed=0,1"):
            save(store, config)
    rows = leaderboard_from_stores([path]).tables[0].rows
    assert len(rows) == 3 and all(r.runs == 2 for r in rows)
    assert sorted(r.setting for r in rows) == ["", "objective.lr=0.01", "objective.lr=0.04"]
    assert next(r for r in rows if r.objective == "rfad").setting == ""  # rfad's own lr does not vary
    assert next(r for r in rows if r.setting == "objective.lr=0.04").params["objective.lr"] == 0.04


def test_group_by_and_filters(tmp_path):
    path = make_store(tmp_path / "r.sqlite", ("objective=kip,rfad", "ipc=1,2"), seeds=(0, 1))
    runs, _ = load_runs([path])
    assert [t.key for t in build_leaderboard(runs).tables] == [{"dataset": "digits", "ipc": 1},
                                                                {"dataset": "digits", "ipc": 2}]
    (table,) = build_leaderboard(runs, group_by=["dataset"]).tables
    assert len(table.rows) == 4 and {r.ipc for r in table.rows} == {1, 2}
    assert "| ipc |" in formats.to_markdown(build_leaderboard(runs, group_by=["dataset"]))
    assert len(build_leaderboard(runs, group_by=()).tables) == 1
    by_objective = build_leaderboard(runs, group_by=["objective"])
    assert [t.title for t in by_objective.tables] == ["objective kip", "objective rfad"]

    def count(**kw):
        return build_leaderboard(runs, filters=Filters(**kw)).runs

    assert count() == 8 and count(ipc=(2,)) == 4 and count(objective=("kip",)) == 4
    assert count(kernel=("ntk",)) == 4 and count(kernel=("ntk", "rf-nngp")) == 8  # rfad defaults to rf-nngp
    assert count(status=("done",)) == 8 and count(dataset=("digits",)) == 8 and count(loss=("platt",)) == 4
    with pytest.raises(ReportError, match=r"no runs match the filters \(kernel=nngp\); the 8 runs have kernel ntk, rf-nngp"):
        build_leaderboard(runs, filters=Filters(kernel=("nngp",)))
    with pytest.raises(ReportError, match=r"\(status=error\); the 8 runs have status done"):
        build_leaderboard(runs, filters=Filters(status=("error",)))
    set_finished_at(path, "2024-03-01T10:00:00+00:00", "objective = 'kip'")
    set_finished_at(path, "2024-03-05T10:00:00+00:00", "objective = 'rfad'")
    runs, _ = load_runs([path])
    assert build_leaderboard(runs, filters=Filters(until=parse_when("2024-03-01", end=True))).runs == 4
    assert build_leaderboard(runs, filters=Filters(since=parse_when("2024-03-02"))).runs == 4
    assert build_leaderboard(runs, filters=Filters(since=parse_when("2024-03-05T10:00"))).runs == 4
    with pytest.raises(ValueError, match="not an ISO date"):
        parse_when("last tuesday")


# -- merging ------------------------------------------------------------------------------------
def test_two_stores_merge_without_duplicated_rows(tmp_path):
    a = make_store(tmp_path / "a.sqlite", seeds=(0, 1))
    b = tmp_path / "b.sqlite"
    with ResultStore(b) as store:  # another machine: seeds 1 (again) and 2
        for config in configs(*BAR_SWEEP, "seed=1,2"):
            save(store, config, acc=planned_acc(config) + (0.005 if config.seed == 1 else 0.0),
                 env={"device": "NVIDIA H100", "hostname": "gpu-1"})
    set_finished_at(a, "2024-01-01T00:00:00+00:00")
    set_finished_at(b, "2024-02-01T00:00:00+00:00")
    board = leaderboard_from_stores([a, b])
    (table,) = board.tables
    assert len(table.rows) == 10 and board.duplicates == 10 and board.runs == 30
    for row in table.rows:
        assert row.seeds == [0, 1, 2] and row.runs == 3 and len(set(row.run_ids)) == 3
        assert row.devices == ["NVIDIA H100 (gpu-1)", "cpu (box-a)"]
    kip = next(r for r in table.rows if r.method == "kip/ntk(fc1)/mse")
    # seed 1 is in both stores with the same run_id: the later finished_at (store b, +0.5 points) counts
    assert kip.acc_mean_pct == pytest.approx(statistics.mean([90.0, 92.5, 97.0]))
    # the order of the stores does not change any number
    assert leaderboard_from_stores([b, a]).to_dict()["tables"] == board.to_dict()["tables"]
    # a tie on finished_at: the store named first wins
    set_finished_at(b, "2024-01-01T00:00:00+00:00")
    first_a = next(r for r in leaderboard_from_stores([a, b]).tables[0].rows if r.method == kip.method)
    first_b = next(r for r in leaderboard_from_stores([b, a]).tables[0].rows if r.method == kip.method)
    assert first_a.acc_mean_pct == pytest.approx(statistics.mean([90.0, 92.0, 97.0]))
    assert first_b.acc_mean_pct == pytest.approx(statistics.mean([90.0, 92.5, 97.0]))


def test_same_store_twice_counts_once(tmp_path):
    a = make_store(tmp_path / "a.sqlite", ("objective=kip",), seeds=(0, 1, 2))
    board = leaderboard_from_stores([a, a])
    assert board.duplicates == 3 and board.tables[0].rows[0].runs == 3


def test_open_existing_never_creates_and_rejects_other_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_existing(tmp_path / "missing.sqlite")
    assert not (tmp_path / "missing.sqlite").exists()
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(NotAStoreError):
        open_existing(tmp_path / "notes.txt")
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(NotAStoreError, match="not a distillbench results store"):
        open_existing(other)
    path = make_store(tmp_path / "r.sqlite", ("objective=kip",), seeds=(0,))
    store = open_existing(path)
    try:
        assert store.count() == 1
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            save(store, configs("objective=ls", "seed=0")[0])
    finally:
        store.close()


# -- paper numbers ------------------------------------------------------------------------------
def _synthetic_fields(**overrides):
    config = configs("objective=rfad", "kernel=rf-nngp", "kernel.arch=convnet3", "loss=platt", "seed=0")[0]
    fields = method_fields(config)
    fields.update(dataset="mnist", **overrides)
    return fields


def test_paper_lookup_matches_the_published_setting():
    fields = _synthetic_fields()
    assert fields["evaluator.kernel"] == "nngp" and fields["evaluator.arch"] == "convnet3"  # "auto" resolved
    ref = find_reference(fields)
    assert ref.acc == 96.7 and ref.std == 0.2 and ref.source == "RFAD Table 1 (Loo et al. 2022)"
    assert find_reference({**fields, "objective.learn_labels": True}).acc == 97.2
    assert find_reference({**fields, "dataset": "Fashion_MNIST", "ipc": 10}).acc == 90.0
    assert find_reference({**fields, "dataset": "cifar10", "ipc": 50}).acc == 76.1
    assert find_reference({**fields, "dataset": "digits"}) is None  # no published numbers for digits
    assert find_reference({**fields, "ipc": 2}) is None
    assert find_reference({**fields, "kernel.arch": "fc1", "evaluator.arch": "fc1"}) is None  # another setting
    assert find_reference({**fields, "evaluator.kernel": "ntk"}) is None
    kip = method_fields(configs("objective=kip", "evaluator.kernel=ntk", "seed=0")[0])
    kip_ref = find_reference({**kip, "dataset": "mnist", "ipc": 10})
    assert kip_ref.acc == 96.64 and kip_ref.source == "KIP Table 1 (Nguyen et al. 2021)"
    assert find_reference({**kip, "dataset": "mnist", "evaluator.kernel": "nngp"}) is None
    ls = method_fields(configs("objective=ls", "evaluator.kernel=ntk", "seed=0")[0])
    assert find_reference({**ls, "dataset": "mnist", "ipc": 50}).acc == 94.4


def test_paper_numbers_are_complete_and_unambiguous():
    numbers = paper_numbers()
    # SPEC section 7: RFAD Table 1 (14 dataset/ipc rows x 4 KRR columns) and KIP Table 1 (KIP and LS x 3)
    assert len(numbers) == 14 * 4 + 6
    assert len({(n.method, n.dataset, n.ipc) for n in numbers}) == len(numbers)
    assert {(n.dataset, n.ipc, n.acc) for n in numbers if n.method == "kip-convnet-learned-labels"} >= {
        ("cifar-10", 50, 80.6), ("cifar-100", 1, 34.9), ("svhn", 1, 64.3)}
    methods = {}
    for n in numbers:
        methods[n.method] = dict(n.match)
        assert n.source and n.citation
    names = sorted(methods)
    for i, first in enumerate(names):  # any two methods disagree on some field, so no row matches both
        for second in names[i + 1:]:
            a, b = methods[first], methods[second]

            def options(value):
                return set(value) if isinstance(value, list) else {value}

            assert any(not options(a[k]) & options(b[k]) for k in set(a) & set(b)), (first, second)


def test_leaderboard_row_gets_the_paper_column(tmp_path):
    path = tmp_path / "r.sqlite"
    # the RFAD protocol (docs/protocols.md): model selection, 100k steps at most, the paper's kernel
    (config,) = configs("dataset=synthetic", "dataset.num_classes=10", "objective=rfad", "kernel=rf-nngp",
                        "kernel.arch=convnet3", "loss=platt", "seed=0", "objective.steps=100000",
                        "objective.val_every=40")
    data = config.to_dict()
    data["dataset"]["name"] = "mnist"  # a store written by a machine with an MNIST dataset plugin
    data["dataset"]["params"]["preprocess"] = "standardize"
    off_protocol = json.loads(json.dumps(data))
    off_protocol["objective"]["params"]["val_every"] = 0  # no model selection: not the paper's protocol
    from distillbench.records import Metrics, RunConfig, RunResult, Timings

    with ResultStore(path) as store:
        for run_id, stored, acc in (("m1", data, 0.95), ("m2", off_protocol, 0.9)):
            store.save(RunResult(RunConfig.from_dict(stored), metrics=Metrics(acc=acc, random_acc=0.5, gain=acc - 0.5),
                                 timings=Timings(step_s=0.1), environment=ENV_A, run_id=run_id))
    board = leaderboard_from_stores([path])
    rows = board.tables[0].rows
    (off,) = [r for r in rows if r.acc_mean_pct == pytest.approx(90.0)]
    assert off.paper_acc_pct is None
    (row,) = [r for r in rows if r.acc_mean_pct == pytest.approx(95.0)]
    assert row.paper_acc_pct == 96.7 and row.paper_diff_pts == pytest.approx(95.0 - 96.7)
    assert row.paper_source == "RFAD Table 1 (Loo et al. 2022)" and row.support_size == 10
    md = formats.to_markdown(board)
    assert "96.7 ± 0.2 [1]" in md and "-1.70" in md and "[1] RFAD Table 1 (Loo et al. 2022)" in md


# -- writers ------------------------------------------------------------------------------------
def _mixed_board(tmp_path):
    path = make_store(tmp_path / "r.sqlite", seeds=(0, 1, 2))
    with ResultStore(path) as store:
        for config in configs("objective=kip", "ipc=2", "seed=0,1"):
            save(store, config, status="error" if config.seed else "done", message="RuntimeError: x, \"y\"\nz")
    return leaderboard_from_stores([path])


def test_json_round_trips_exactly_with_a_stable_schema(tmp_path):
    board = _mixed_board(tmp_path)
    text = formats.to_json(board)
    data = json.loads(text)
    assert data == board.to_dict()
    assert list(data) == ["schema", "version", "stores", "group_by", "filters", "runs", "duplicates", "std",
                          "ci", "test", "units", "metrics", "tables"]
    assert data["schema"] == "distillbench.leaderboard" and data["version"] == 5
    assert all(list(row) == list(ROW_FIELDS) for t in data["tables"] for row in t["rows"])
    rows = [row for _, row in board.all_rows()]
    parsed = [row for t in data["tables"] for row in t["rows"]]
    assert [r["acc_mean_pct"] for r in parsed] == [r.acc_mean_pct for r in rows]  # exact, not approx
    assert [r["acc_std_pct"] for r in parsed] == [r.acc_std_pct for r in rows]
    assert formats.to_json(board) == text  # deterministic


def test_csv_round_trips_exactly(tmp_path):
    board = _mixed_board(tmp_path)
    text = formats.to_csv(board)
    parsed = formats.read_csv(text)
    assert parsed == formats.csv_records(board)
    assert len(parsed) == sum(len(t.rows) for t in board.tables) == 11
    rows = [row for _, row in board.all_rows()]
    assert [p["gain_std_pts"] for p in parsed] == [r.gain_std_pts for r in rows]
    assert [p["learn_labels"] for p in parsed].count(None) == 2  # the two ls rows
    header = text.splitlines()[0].split(",")
    assert header[:3] == ["table", "table_key", "rank"] and "acc_mean_pct" in header and "paper_acc_pct" in header
    with pytest.raises(ValueError):
        formats.read_csv("a,b\n1,2\n")


def test_html_is_self_contained(tmp_path):
    from distillbench.reports.html_page import to_html
    from distillbench.reports.plots import render_plots

    board = _mixed_board(tmp_path)
    plots = render_plots(board)
    page = to_html(board, plots)
    assert "http://" not in page and "https://" not in page and "url(" not in page and "@import" not in page
    assert page.count('<table class="leaderboard sortable"') == 2
    assert page.count("<tr class=") == 11
    assert page.count('src="data:image/png;base64,') == 3
    from importlib import resources

    assets = resources.files("distillbench.reports") / "assets"  # shipped as package data, inlined whole
    for name, tag in (("leaderboard.css", "style"), ("leaderboard.js", "script")):
        assert f"<{tag}>\n{(assets / name).read_text(encoding='utf-8')}</{tag}>" in page
    for plot in plots:
        assert plot.png.startswith(b"\x89PNG\r\n\x1a\n") and len(plot.png) > 10_000
        assert base64.b64encode(plot.png).decode() in page
    assert "RuntimeError: x, &quot;y&quot; z" in page or "RuntimeError: x, &quot;y&quot;\nz" in page


# -- the command line ---------------------------------------------------------------------------
def _invoke(*args):
    return CliRunner().invoke(main, ["report", *args], env={"COLUMNS": "250"})


def test_cli_markdown_prints_one_table_with_every_configuration(tmp_path):
    path = make_store(tmp_path / "r.sqlite")
    result = _invoke("--store", str(path), "--format", "md")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert sum(line.startswith("## ") for line in lines) == 1
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| rank")]
    assert len(rows) == 10
    assert "| 1 | kip/ntk(fc1)/mse | fixed | krr(nngp, fc1) | 93.00 ± 3.61 | [90.00, 97.00] bootstrap | top | 3 |" \
           " 60.00 | +33.00 ± 3.61 | 2 |" in result.output
    rich = _invoke("--store", str(path))
    assert rich.exit_code == 0 and "kip/ntk(fc1)/mse" in rich.output and "93.00 ± 3.61" in rich.output


def test_cli_csv_and_json_round_trip_and_files(tmp_path):
    path = make_store(tmp_path / "r.sqlite", seeds=(0, 1))
    board = leaderboard_from_stores([str(path)])
    csv_out = _invoke("--store", str(path), "--format", "csv")
    assert csv_out.exit_code == 0 and formats.read_csv(csv_out.output) == formats.csv_records(board)
    json_out = _invoke("--store", str(path), "--format", "json")
    assert json_out.exit_code == 0 and json.loads(json_out.output) == board.to_dict()
    result = _invoke("--store", str(path), "--format", "html", "-o", str(tmp_path / "out" / "board.html"),
                     "--plots", str(tmp_path / "pngs"))
    assert result.exit_code == 0, result.output
    for folder, stem in [(tmp_path / "out", "board"), (tmp_path / "pngs", "leaderboard")]:
        for name in ("accuracy_vs_ipc", "accuracy_vs_step_time", "step_time_vs_support"):
            assert (folder / f"{stem}_{name}.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "out" / "board.html").read_text().count("data:image/png;base64,") == 3


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "Error: no results store at "),
    (lambda p: ResultStore(p).close(), "Error: results store "),
    (lambda p: p.write_text("not sqlite"), "Error: "),
])
def test_cli_empty_or_missing_store_is_one_line_exit_2(tmp_path, make, message):
    path = tmp_path / "results.sqlite"
    make(path)
    existed = path.exists()
    result = _invoke("--store", str(path))
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), result.output
    assert path.exists() == existed  # never created


def test_cli_default_store_missing(tmp_path):
    result = CliRunner().invoke(main, ["report"], env={"DISTILLBENCH_STORE": str(tmp_path / "none.sqlite")})
    assert result.exit_code == 2 and result.output.startswith("Error: no results store at ")
    assert not (tmp_path / "none.sqlite").exists()


@pytest.mark.parametrize("args, message", [
    (["--format", "xml"], "--format: unknown value 'xml'"),
    (["--group-by", "datset"], "did you mean 'dataset'?"),
    (["--status", "ok"], "--status: unknown value 'ok'"),
    (["--ipc", "0"], "--ipc: '0' is not a positive integer"),
    (["--since", "yesterday"], "is not an ISO date"),
    (["--dataset", "mnist"], "no runs match the filters (dataset=mnist); the 3 runs have dataset digits"),
])
def test_cli_bad_options_one_line(tmp_path, args, message):
    path = make_store(tmp_path / "r.sqlite", ("objective=kip",))
    result = _invoke("--store", str(path), *args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.output


def test_docs_list_the_csv_columns_and_group_fields():
    import re
    from pathlib import Path

    from distillbench.reports.leaderboard import GROUP_FIELDS

    doc = (Path(__file__).resolve().parents[1] / "docs" / "reports.md").read_text()
    listed = re.search(r"CSV columns, in order: (.*?)\. An empty cell", doc, flags=re.DOTALL).group(1)
    assert [c.strip(" `\n") for c in listed.split(",")] == [name for name, _ in formats.CSV_COLUMNS]
    for name in GROUP_FIELDS:
        assert f"`{name}`" in doc


def test_cli_group_fields_match_the_leaderboard():
    import importlib

    from distillbench.reports import leaderboard

    cli_report = importlib.import_module("distillbench.cli.report")  # the package exports the command as `report`

    assert cli_report._GROUP_FIELDS == leaderboard.GROUP_FIELDS
    assert cli_report._FORMATS == formats.FORMATS
    (fmt,) = [p for p in cli_report.report.params if p.name == "fmt"]
    assert f"schema distillbench.leaderboard v{leaderboard.SCHEMA_VERSION}" in fmt.help


def test_report_does_not_import_jax(tmp_path):
    path = make_store(tmp_path / "r.sqlite", ("objective=kip,ls",), seeds=(0, 1))
    code = (
        "import sys\n"
        "from distillbench.cli import main\n"
        "for fmt in ('rich', 'md', 'csv', 'json', 'html'):\n"
        "    try:\n"
        f"        main(['report', '--store', {str(path)!r}, '--format', fmt, '-o', {str(tmp_path)!r} + '/o.' + fmt])\n"
        "    except SystemExit as e:\n"
        "        assert e.code in (0, None), e.code\n"
        "assert 'jax' not in sys.modules, 'jax was imported'\n"
        "assert 'neural_tangents' not in sys.modules and 'flax' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "o.html").exists() and (tmp_path / "o.json").exists()


@pytest.mark.slow
def test_report_on_real_runs(tmp_path):
    """End to end: two real tiny sweeps into two stores (one run shared), then one leaderboard."""
    args = tiny("objective=kip,ls")
    first = run_cli("run", "-q", "--store", str(tmp_path / "a.sqlite"), *args, "seed=0,1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    with ResultStore(tmp_path / "b.sqlite") as b, open_existing(tmp_path / "a.sqlite") as a:
        shared = next(r for r in a.records() if r.config.seed == 1 and r.config.objective.name == "kip")
        b.save(shared.result())
    result = run_cli("report", "--store", str(tmp_path / "a.sqlite"), "--store", str(tmp_path / "b.sqlite"),
                     "--format", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    (table,) = data["tables"]
    assert data["duplicates"] == 1 and data["runs"] == 4
    assert sorted(r["method"] for r in table["rows"]) == ["kip/ntk(fc1)/mse", "ls/ntk(fc1)/mse"]
    for row in table["rows"]:
        assert row["seeds"] == [0, 1] and row["status"] == "done" and 0 <= row["acc_mean_pct"] <= 100
        assert row["support_size"] == 3  # 1 image per class x 3 classes (dataset.num_classes)
        assert row["compile_s_mean"] > 0
    kip = next(r for r in table["rows"] if r["objective"] == "kip")
    assert kip["step_s_mean"] > 0 and kip["acc_std_pct"] is not None


def test_plot_markers_come_from_the_objectives_declarations():
    """kip/ls/rfad declare their markers (Component.marker); an objective without one gets the cycle."""
    from distillbench.registry import load_registry
    from distillbench.reports.plots import _OTHER_MARKERS, _style, objective_markers

    markers = objective_markers(load_registry(entry_points=False))
    assert {k: markers[k] for k in ("kip", "ls", "rfad")} == {"kip": "o", "ls": "s", "rfad": "^"}
    row = types.SimpleNamespace(objective="herding")
    assert _style(3, row, markers)["marker"] == _OTHER_MARKERS[3]
    assert _style(3, row, {"herding": "P"})["marker"] == "P"


def test_a_run_stored_before_the_loss_rate_moved_to_the_objective_keeps_its_paper_number():
    """Plugin API 2 moved platt's rate from loss.learning_rate to objective.loss_lr; old rows still match."""
    from distillbench.records import RunConfig

    config = configs("objective=rfad", "kernel=rf-nngp", "kernel.arch=convnet3", "loss=platt", "seed=0",
                     "objective.steps=100000", "objective.val_every=40")[0]
    data = config.to_dict()
    data["dataset"]["name"] = "mnist"
    data["dataset"]["params"]["preprocess"] = "standardize"
    data["loss"]["params"]["learning_rate"] = data["objective"]["params"].pop("loss_lr")
    old = RunConfig.from_dict(data)
    assert find_reference(method_fields(old), old).acc == 96.7
    data["loss"]["params"]["learning_rate"] = 0.5
    off = RunConfig.from_dict(data)
    assert find_reference(method_fields(off), off) is None
