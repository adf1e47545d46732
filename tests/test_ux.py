"""What a new user tripped on: labels, durations, plurals, repeated notes, the progress bar at 80 columns."""

import io

import pytest

from click.testing import CliRunner
from rich.console import Console

from distillbench.cli import main
from distillbench.reports.console import make_progress, refused_lines, seconds
from distillbench.reports.leaderboard import MergeInfo
from distillbench.registry import load_registry
from distillbench.runner.plan import plan


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def test_labels_show_what_the_user_set_and_what_differs_from_defaults(registry):
    kip_ls = plan(["objective=kip,ls", "seed=0,1"], registry)
    labels = [c.label() for c in kip_ls.configs]
    assert labels == ["digits kip/ntk(fc1)/mse ipc=1 seed=0", "digits kip/ntk(fc1)/mse ipc=1 seed=1",
                      "digits ls/ntk(fc1)/mse ipc=1 seed=0", "digits ls/ntk(fc1)/mse ipc=1 seed=1"]
    a = plan(["kernel=rf-nngp", "kernel.num_networks=4"], registry).configs[0]
    b = plan(["kernel=rf-nngp"], registry).configs[0]
    assert a.label().endswith("kernel.num_networks=4") and a.label() != b.label()  # set, unswept: shown
    swept = plan(["objective.lr=0.01,0.04"], registry).configs
    assert [c.tag for c in swept] == ["objective.lr=0.01", "objective.lr=0.04"]


def test_durations_never_print_in_e_notation():
    assert seconds(1.93, 1e3, "ms") == "1.93 s"
    assert seconds(0.00555, 1e3, "ms") == "5.55 ms"
    assert seconds(4120.4) == "4120 s" and seconds(None) == "-"


def test_one_run_is_singular():
    assert MergeInfo(("a.sqlite",), 1, 0).line() == "1 run from 1 store"
    assert MergeInfo(("a.sqlite",), 3, 1).line() == "2 runs from 1 store; 1 duplicate run_id counted once"


def test_a_refused_combination_is_noted_once_per_sweep(tmp_path):
    lines = refused_lines([("ls seed=0", "no platt"), ("ls seed=1", "no platt"), ("x", "other")])
    assert lines == ["skipping ls seed=0 and 1 more cell: no platt", "skipping x: other"]
    result = CliRunner().invoke(main, ["run", "objective=kip,ls", "loss=mse,platt", "seed=0,1,2", "--dry-run"])
    assert result.exit_code == 0
    assert result.output.count("skipping") == 1 and "and 2 more cells: ls computes" in result.output


def test_progress_bar_at_80_columns_keeps_its_counter_and_says_compiling():
    console = Console(file=io.StringIO(), width=80)
    label = "digits kip/ntk(convnet3)/mse ipc=10 seed=2 objective.lr=0.04 kernel.features=1024"
    progress = make_progress(3, 12, label, 300, console)
    task = progress.add_task("distill", total=300, status="compiling")
    console.print(progress.make_tasks_table(progress.tasks))
    progress.update(task, completed=120, status="loss 0.01234 45.2 steps/s")
    console.print(progress.make_tasks_table(progress.tasks))
    first, second = console.file.getvalue().splitlines()
    assert "0/300" in first and "compiling" in first and "…" in first
    assert "120/300" in second and "loss 0.01234" in second and all(len(x) <= 80 for x in (first, second))
