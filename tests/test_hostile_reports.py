"""The hostile sweep of ``distillbench report``: damaged stores, hostile names, and outputs that fail.

One real tiny run (two seeds) is stored once per module; every case edits its own copy with
sqlite3. A row whose column holds valid JSON of the wrong type is shown without that value, or
left out when its identity is unusable, with one ``warning:`` line; or, where the store's reader
refuses the row, the report is one ``Error:`` line and exit code 2. Never a traceback, in any
format, with or without plots. Names are plain text everywhere: ``<script>`` is escaped in HTML
and Markdown, ``$`` is not mathtext in the plots, ``[bold]`` is not rich markup, ``|`` does not
break a Markdown table. An output is replaced whole or not at all (``report -o`` on a full disk
keeps the previous report). After each case, nothing outside what the case asked to write changed.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from distillbench.cli import main

from helpers import tiny

EXIT_BAD_INPUT = 2
FORMATS = ("rich", "md", "csv", "json", "html")

#: (id, SQL run on the copy, outcome): "ok" (exit 0, nothing on stderr), "warn" (exit 0, one
#: ``warning:`` line), "refused" (exit 2, one ``Error:`` line), "either": "refused" where the store's
#: reader refuses such a row (it checks the types of the named metrics and timings), else "warn".
DAMAGES: list[tuple[str, str, str]] = [
    ("acc is text", "UPDATE runs SET metrics = json_set(metrics, '$.acc', 'abc')", "either"),
    ("acc is a list", "UPDATE runs SET metrics = json_set(metrics, '$.acc', json('[1]'))", "either"),
    ("acc is an object", "UPDATE runs SET metrics = json_set(metrics, '$.acc', json('{}'))", "either"),
    ("acc is a bool", "UPDATE runs SET metrics = json_set(metrics, '$.acc', json('true'))", "either"),
    ("acc is 1e308", "UPDATE runs SET metrics = json_set(metrics, '$.acc', 1e308)", "warn"),
    ("acc is NaN", "UPDATE runs SET metrics = replace(metrics, '\"acc\": 0.', '\"acc\": NaN, \"x\": 0.')", "warn"),
    ("acc is Infinity", "UPDATE runs SET metrics = replace(metrics, '\"acc\": 0.', '\"acc\": -Infinity, \"x\": 0.')",
     "warn"),
    ("acc is null", "UPDATE runs SET metrics = json_set(metrics, '$.acc', json('null'))", "ok"),
    ("acc removed", "UPDATE runs SET metrics = json_remove(metrics, '$.acc')", "ok"),
    ("random acc is text", "UPDATE runs SET metrics = json_set(metrics, '$.random_acc', 'x')", "either"),
    ("gain is 1e300", "UPDATE runs SET metrics = json_set(metrics, '$.gain', 1e300)", "warn"),
    ("eval kernel is a number", "UPDATE runs SET metrics = json_set(metrics, '$.eval_kernel', 42)", "either"),
    # a metric the run's evaluator declares (privacy: nn_dist_rel, mia_acc) must be a number
    ("declared metric is text", "UPDATE runs SET metrics = json_set(metrics, '$.mia_acc', 'high'), "
     "config = json_set(config, '$.evaluator.name', 'privacy')", "warn"),
    ("declared metric is a list", "UPDATE runs SET metrics = json_set(metrics, '$.random_nn_dist_rel', "
     "json('[1,2]')), config = json_set(config, '$.evaluator.name', 'privacy')", "warn"),
    # krr declares no mia_acc: stored, never shown, so nothing to warn about
    ("undeclared metric is text", "UPDATE runs SET metrics = json_set(metrics, '$.mia_acc', 'high')", "ok"),
    # an evaluator no longer installed: its numbers are shown under their names
    ("evaluator not installed", "UPDATE runs SET metrics = json_set(metrics, '$.leak', 0.5, '$.random_leak', "
     "0.25), config = json_set(config, '$.evaluator.name', 'gone')", "ok"),
    ("metrics is a string", "UPDATE runs SET metrics = '\"abc\"'", "refused"),
    ("metrics is a number", "UPDATE runs SET metrics = '42'", "refused"),
    ("metrics is a list", "UPDATE runs SET metrics = '[1, 2]'", "refused"),
    ("step time is text", "UPDATE runs SET timings = json_set(timings, '$.step_s', 'fast')", "either"),
    ("step time negative", "UPDATE runs SET timings = json_set(timings, '$.step_s', -1)", "warn"),
    ("step time zero", "UPDATE runs SET timings = json_set(timings, '$.step_s', 0)", "ok"),
    ("compile time 1e300", "UPDATE runs SET timings = json_set(timings, '$.compile_s', 1e300)", "warn"),
    ("timings is a string", "UPDATE runs SET timings = '\"x\"'", "refused"),
    ("environment is a number", "UPDATE runs SET environment = '42'", "either"),
    ("environment is a list", "UPDATE runs SET environment = '[]'", "either"),
    ("device is a list", "UPDATE runs SET environment = json_set(environment, '$.device', json('[1]'))", "warn"),
    ("hostname is an object", "UPDATE runs SET environment = json_set(environment, '$.hostname', json('{}'))",
     "warn"),
    ("device is null", "UPDATE runs SET environment = json_set(environment, '$.device', json('null'))", "ok"),
    ("environment is empty", "UPDATE runs SET environment = '{}'", "ok"),
    ("message is a number", "UPDATE runs SET status = 'error', message = 42 WHERE seed = 1", "ok"),
    ("message is NULL", "UPDATE runs SET status = 'error', message = NULL WHERE seed = 1", "ok"),
    ("message of a megabyte", "UPDATE runs SET status = 'error', message = printf('%.1000000c', 'x') WHERE seed = 1",
     "ok"),
    ("message is hostile", "UPDATE runs SET status = 'timeout', message = '<script>x</script> | [red]$a$' "
                           "|| char(10) || 'b' WHERE seed = 1", "ok"),
    ("finished_at not a date", "UPDATE runs SET finished_at = 'yesterday' WHERE seed = 1", "warn"),
    ("finished_at a number", "UPDATE runs SET finished_at = 42 WHERE seed = 1", "warn"),
    ("every finished_at bad", "UPDATE runs SET finished_at = 'soon'", "refused"),
    ("kernel name a number", "UPDATE runs SET config = json_set(config, '$.kernel.name', 42) WHERE seed = 1", "warn"),
    ("dataset name empty", "UPDATE runs SET config = json_set(config, '$.dataset.name', '') WHERE seed = 1", "warn"),
    ("arch a number", "UPDATE runs SET config = json_set(config, '$.kernel.params.arch', 42) WHERE seed = 1", "warn"),
    ("learn_labels text", "UPDATE runs SET config = json_set(config, '$.objective.params.learn_labels', 'yes') "
                          "WHERE seed = 1", "warn"),
    ("evaluator arch a list", "UPDATE runs SET config = json_set(config, '$.evaluator.params.arch', json('[1]'))",
     "refused"),
    ("ipc zero", "UPDATE runs SET config = json_set(config, '$.ipc', 0) WHERE seed = 1", "warn"),
    ("ipc text", "UPDATE runs SET config = json_set(config, '$.ipc', 'abc')", "refused"),
    ("ipc a million", "UPDATE runs SET config = json_set(config, '$.ipc', 1000000)", "ok"),
    ("seed text", "UPDATE runs SET config = json_set(config, '$.seed', 'x')", "refused"),
    ("seed negative", "UPDATE runs SET config = json_set(config, '$.seed', -5) WHERE seed = 1", "ok"),
    ("config a number", "UPDATE runs SET config = '42'", "refused"),
    ("config without kernel", "UPDATE runs SET config = json_remove(config, '$.kernel')", "refused"),
    ("params a list", "UPDATE runs SET config = json_set(config, '$.kernel.params', json('[]'))", "refused"),
    ("param value a list", "UPDATE runs SET config = json_set(config, '$.kernel.params.w_std', json('[1, 2]')) "
                           "WHERE seed = 1", "ok"),
    ("num_classes huge", "UPDATE runs SET config = json_set(config, '$.dataset.params.num_classes', "
                         "json('1000000000000000000000000000000'))", "ok"),
    ("num_classes text", "UPDATE runs SET config = json_set(config, '$.dataset.params.num_classes', 'three')", "ok"),
    ("num_classes negative", "UPDATE runs SET config = json_set(config, '$.dataset.params.num_classes', -3)", "ok"),
    ("artifact a number", "UPDATE runs SET artifact = 42", "ok"),  # TEXT affinity: the name '42'
    ("artifact a blob", "UPDATE runs SET artifact = x'0102'", "warn"),
    ("artifact outside", "UPDATE runs SET artifact = '../../../etc/passwd', config = json_remove(config, "
                         "'$.dataset.params.num_classes')", "ok"),
    ("artifact missing", "UPDATE runs SET artifact = 'r.sqlite.artifacts/gone.npz', config = json_remove(config, "
                         "'$.dataset.params.num_classes')", "ok"),
    ("parent run id a number", "UPDATE runs SET parent_run_id = 42 WHERE seed = 1", "ok"),
]

#: Names no report may interpret: HTML, Markdown, rich markup, mathtext, a newline, a huge one.
NAMES = {
    "script": "<script>alert(1)</script>",
    "pipes": "a|b||c",
    "mathtext": "x$\\undefinedcmd{$",
    "dollars": "$$ $\\frac{1}{0}$ $",
    "markup": "[bold red]x[/] [/]",
    "markdown": "*em* _u_ [l](javascript:alert(1)) `c` # h",
    "newline": "two\nlines\r\n",
    "long": "n" * 5000,
}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A store of one real tiny run with two seeds, in rollback mode (reading it writes no side files)."""
    root = tmp_path_factory.mktemp("base")
    result = CliRunner().invoke(main, ["run", "-q", "--store", str(root / "r.sqlite"), *tiny("seed=0,1")])
    assert result.exit_code == 0, result.output
    with sqlite3.connect(root / "r.sqlite") as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    return root


def _copy(base: Path, tmp_path: Path, sql: str = "") -> Path:
    world = tmp_path / "world"
    shutil.copytree(base, world, ignore=shutil.ignore_patterns("*-wal", "*-shm"))
    if sql:
        with sqlite3.connect(world / "r.sqlite") as conn:
            conn.execute(sql)
        conn.close()
    return world


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if not p.name.endswith(("-wal", "-shm"))}


def _report(world: Path, *args: str):
    return CliRunner().invoke(main, ["report", "--store", str(world / "r.sqlite"), *args], env={"COLUMNS": "200"})


def _check(result, outcome: str) -> None:
    lines = result.stderr.splitlines()
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output + result.stderr
    if outcome == "either":
        outcome = "refused" if result.exit_code == EXIT_BAD_INPUT else "warn"
    if outcome == "refused":
        assert result.exit_code == EXIT_BAD_INPUT and len(lines) == 1 and lines[0].startswith("Error: "), lines
        assert not result.stdout.strip()
    elif outcome == "warn":
        assert result.exit_code == 0 and len(lines) == 1 and lines[0].startswith("warning: damaged store rows"), \
            (result.exit_code, lines)
    else:
        assert result.exit_code == 0 and not lines, (result.exit_code, lines[:3])


def test_the_tables_are_large_and_unique():
    assert len(CASES) + len(NAMES) * 4 >= 250
    assert len({case_id for case_id, _, _ in DAMAGES}) == len(DAMAGES) and PLOTTED <= {c for c, _, _ in DAMAGES}


#: The damages that reach a plot (accuracies, times, ipc, classes, names, devices): also drawn as HTML
#: (the slow format: three matplotlib figures); every damage runs in the four text formats.
PLOTTED = {"acc is 1e308", "acc is NaN", "acc is null", "gain is 1e300", "step time negative", "step time zero",
           "compile time 1e300", "device is a list", "message is hostile", "finished_at not a date",
           "kernel name a number", "ipc zero", "ipc a million", "seed negative", "num_classes huge",
           "num_classes negative", "artifact outside", "acc is text", "metrics is a string"}
CASES = [(index, fmt) for index, (case_id, _, _) in enumerate(DAMAGES) for fmt in FORMATS
         if fmt != "html" or case_id in PLOTTED]


@pytest.mark.parametrize(("index", "fmt"), CASES, ids=[f"{DAMAGES[i][0]}-{fmt}" for i, fmt in CASES])
@pytest.mark.slow
def test_a_damaged_store_is_reported_or_refused_in_one_line(base, tmp_path, index, fmt):
    _, sql, outcome = DAMAGES[index]
    world = _copy(base, tmp_path, sql)
    before = _snapshot(world)
    out = tmp_path / "out"
    extra = ["-o", str(out / "board.html")] if fmt == "html" else []
    result = _report(world, "--format", fmt, *extra)
    _check(result, outcome)
    assert _snapshot(world) == before
    written = sorted(p.name for p in out.glob("*")) if out.exists() else []
    expected = ["board.html", "board_accuracy_vs_ipc.png", "board_accuracy_vs_step_time.png",
                "board_step_time_vs_support.png"] if fmt == "html" and result.exit_code == 0 else []
    assert written == expected


def _hostile_store(base: Path, tmp_path: Path, name: str) -> Path:
    """Every run named ``name``: its dataset, an external set named so, and a failure message."""
    world = _copy(base, tmp_path)
    with sqlite3.connect(world / "r.sqlite") as conn:
        conn.execute("UPDATE runs SET config = json_set(config, '$.dataset.name', ?, '$.objective.name', "
                     "'external', '$.objective.params', json_object('name', ?))", (name, name))
        conn.execute("UPDATE runs SET status = 'error', message = ? WHERE seed = 1", (name,))
        conn.execute("UPDATE runs SET metrics = json_set(metrics, '$.eval_kernel', ?)", (name,))
    conn.close()
    return world


@pytest.mark.parametrize("key", NAMES)
def test_a_hostile_name_is_escaped_in_markdown(base, tmp_path, key):
    world = _hostile_store(base, tmp_path, NAMES[key])
    result = _report(world, "--format", "md", "--group-by", "dataset")
    _check(result, "ok")
    table = [line for line in result.stdout.splitlines() if line.startswith("|")]
    columns = {line.replace("\\|", "").count("|") for line in table}
    assert len(table) == 3 and len(columns) == 1, table  # header, rule, one row: no pipe or newline broke it
    assert "<script" not in result.stdout and "[l](javascript" not in result.stdout
    assert "*em*" not in result.stdout and "`c`" not in result.stdout


@pytest.mark.parametrize("key", NAMES)
def test_a_hostile_name_is_plain_text_in_html_and_every_plot(base, tmp_path, key):
    world = _hostile_store(base, tmp_path, NAMES[key])
    result = _report(world, "--format", "html", "-o", str(tmp_path / "site" / "b.html"),
                     "--plots", str(tmp_path / "plots"))
    _check(result, "ok")
    page = (tmp_path / "site" / "b.html").read_text()
    assert "<script>alert" not in page and page.count("<script>") == 1  # the page's own sorter only
    assert len(list((tmp_path / "plots").glob("*.png"))) == 3


@pytest.mark.parametrize("key", NAMES)
def test_a_hostile_name_is_not_rich_markup(base, tmp_path, key):
    world = _hostile_store(base, tmp_path, NAMES[key])
    result = _report(world)
    _check(result, "ok")
    if key == "markup":
        assert "[bold red]x[/]" in result.stdout


@pytest.mark.parametrize("key", NAMES)
def test_a_hostile_name_in_the_transfer_table(base, tmp_path, key):
    world = _hostile_store(base, tmp_path, NAMES[key])
    for fmt in ("md", "rich"):
        result = _report(world, "--transfer", "--format", fmt)
        _check(result, "ok")
        assert "<script" not in result.stdout or fmt == "rich"


# -- outputs ------------------------------------------------------------------------------------
def test_an_existing_report_is_replaced_whole_and_no_temporary_file_is_left(base, tmp_path):
    world = _copy(base, tmp_path)
    target = tmp_path / "board.md"
    target.write_text("old report\n")
    os.chmod(target, 0o640)
    result = _report(world, "--format", "md", "-o", str(target))
    assert result.exit_code == 0 and target.read_text().startswith("# distillbench leaderboard")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["board.md", "world"]
    assert target.stat().st_mode & 0o777 == 0o640  # the file keeps its permissions


def test_a_link_is_written_through_not_replaced(base, tmp_path):
    world = _copy(base, tmp_path)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "real.md").write_text("old\n")
    (tmp_path / "link.md").symlink_to(tmp_path / "site" / "real.md")
    result = _report(world, "--format", "md", "-o", str(tmp_path / "link.md"))
    assert result.exit_code == 0 and (tmp_path / "link.md").is_symlink()
    assert (tmp_path / "site" / "real.md").read_text().startswith("# distillbench")


def test_a_device_is_written_in_place(base, tmp_path):
    world = _copy(base, tmp_path)
    result = _report(world, "--format", "json", "-o", "/dev/null")
    assert result.exit_code == 0 and result.stdout == "wrote /dev/null\n" and not result.stderr


def test_a_fifo_without_a_reader_is_one_line_not_a_hang(base, tmp_path):
    world = _copy(base, tmp_path)
    os.mkfifo(tmp_path / "pipe")
    result = _report(world, "--format", "md", "-o", str(tmp_path / "pipe"))
    _check(result, "refused")
    assert "a FIFO with no reader" in result.stderr


def test_missing_folders_of_the_output_are_created(base, tmp_path):
    world = _copy(base, tmp_path)
    result = _report(world, "--format", "csv", "-o", str(tmp_path / "a" / "b" / "board.csv"))
    assert result.exit_code == 0 and (tmp_path / "a" / "b" / "board.csv").read_text().startswith("table,")


#: (id, arguments with {tmp} and {world}, fragment of the one error line)
BAD_OUTPUTS = [
    ("output is a folder", ("--format", "md", "-o", "{tmp}/folder"), "folder"),
    ("output under a file", ("--format", "md", "-o", "{tmp}/file.txt/board.md"), "cannot write"),
    ("html under a file", ("--format", "html", "-o", "{tmp}/file.txt/b.html"), "cannot write"),
    ("rich under a file", ("-o", "{tmp}/file.txt/b.txt"), "cannot write"),
    ("transfer under a file", ("--transfer", "--format", "json", "-o", "{tmp}/file.txt/t.json"), "cannot write"),
    ("output empty", ("--format", "md", "-o", ""), "-o/--output is empty"),
    ("output is the store", ("--format", "md", "-o", "{world}/r.sqlite"), "is a results store this report reads"),
    ("output is the store, relative", ("--format", "csv", "-o", "{world}/../world/r.sqlite"), "results store"),
    ("plots into a file", ("--format", "md", "--plots", "{tmp}/file.txt"), "is a file"),
    ("html plots into a file", ("--format", "md", "-o", "{tmp}/ok.md", "--plots", "{tmp}/file.txt/x"),
     "cannot write plots"),
]


@pytest.mark.parametrize("index", range(len(BAD_OUTPUTS)), ids=[case_id for case_id, _, _ in BAD_OUTPUTS])
def test_an_output_that_cannot_be_written_is_one_line_and_changes_nothing(base, tmp_path, index):
    _, args, fragment = BAD_OUTPUTS[index]
    world = _copy(base, tmp_path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.txt").write_text("keep me\n")
    before = _snapshot(tmp_path)
    result = _report(world, *[a.format(tmp=tmp_path, world=world) for a in args])
    _check(result, "refused")
    assert fragment in result.stderr
    after = _snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k != "ok.md"} == before


LONG = "x" * 200_000
#: (id, arguments, fragment of the one error line): huge or hostile option values are cut, never echoed whole.
BAD_OPTIONS = [
    ("huge format", ("--format", LONG), "--format: unknown value"),
    ("huge group-by", ("--group-by", LONG), "--group-by: unknown value"),
    ("huge dataset filter", ("--dataset", LONG), "no runs match the filters"),
    ("huge status filter", ("--status", LONG), "--status: unknown value"),
    ("huge since", ("--since", LONG), "is not an ISO date"),
    ("huge output name", ("--format", "md", "-o", "{tmp}/" + "y" * 5000), "cannot write"),
    ("hostile filter", ("--dataset", "<script>\n[bold]"), "no runs match the filters"),
    ("transfer as html", ("--transfer", "--format", "html"), "--transfer writes rich, md, csv or json"),
    ("output with a nul", ("--format", "md", "-o", "{tmp}/a\x00b.md"), "holds a NUL character"),
    ("plots with a nul", ("--plots", "{tmp}/p\x00q"), "holds a NUL character"),
    ("another store with a nul", ("--store", "s\x00t.sqlite"), "holds a NUL character"),
]


@pytest.mark.parametrize("index", range(len(BAD_OPTIONS)), ids=[case_id for case_id, _, _ in BAD_OPTIONS])
def test_a_huge_or_hostile_option_is_one_short_line(base, tmp_path, index):
    _, args, fragment = BAD_OPTIONS[index]
    world = _copy(base, tmp_path)
    before = _snapshot(tmp_path)
    result = _report(world, *[a.format(tmp=tmp_path) for a in args])
    _check(result, "refused")
    assert fragment in result.stderr and len(result.stderr) < 1500, result.stderr[:300]
    assert _snapshot(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_folder_is_one_line(base, tmp_path):
    world = _copy(base, tmp_path)
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o500)
    try:
        result = _report(world, "--format", "md", "-o", str(tmp_path / "ro" / "b.md"))
        _check(result, "refused")
        assert list((tmp_path / "ro").iterdir()) == []
    finally:
        os.chmod(tmp_path / "ro", 0o700)


def _no_room(*args: str) -> subprocess.CompletedProcess:
    """``distillbench report ARGS`` where no file may grow (``ulimit -f 0``: every write fails with EFBIG,
    which Python raises as OSError because it ignores SIGXFSZ)."""
    command = ["bash", "-c", 'ulimit -f 0 && exec "$@"', "bash", sys.executable, "-m", "distillbench.cli", "report",
               *args]
    return subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, COLUMNS="200"), timeout=120)


@pytest.mark.parametrize("args", [("--format", "md"), ("--format", "csv"), ("--format", "json"), ("--format", "rich"),
                                  ("--format", "html"), ("--transfer", "--format", "md")],
                         ids=["md", "csv", "json", "rich", "html", "transfer"])
def test_a_full_disk_keeps_the_previous_report(base, tmp_path, args):
    """``(ulimit -f 0; distillbench report -o FILE)``: exit 2, one line, the previous file byte for byte."""
    world = _copy(base, tmp_path)
    target = tmp_path / ("board.html" if "html" in args else "board.out")
    previous = b"previous report\n" * 4096
    target.write_bytes(previous)
    before = _snapshot(tmp_path)
    result = _no_room("--store", str(world / "r.sqlite"), *args, "-o", str(target))
    lines = result.stderr.splitlines()
    assert result.returncode == EXIT_BAD_INPUT and len(lines) == 1 and "File too large" in lines[0], result.stderr
    assert target.read_bytes() == previous and _snapshot(tmp_path) == before


def test_a_full_disk_keeps_the_previous_plots(base, tmp_path):
    world = _copy(base, tmp_path)
    assert _report(world, "--format", "md", "--plots", str(tmp_path / "plots")).exit_code == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "plots").iterdir()}
    result = _no_room("--store", str(world / "r.sqlite"), "--format", "md", "--plots", str(tmp_path / "plots"))
    assert result.returncode == EXIT_BAD_INPUT and len(result.stderr.splitlines()) == 1, result.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "plots").iterdir()} == before
