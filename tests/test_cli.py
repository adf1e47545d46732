import subprocess
import sys

import pytest
from click.testing import CliRunner

from distillbench.cli import main

from helpers import TINY, run_cli

BAD_INPUTS = [
    ["kernel=ntx"],
    ["kernel.widht=3", "kernel=rf-nngp"],
    ["objective.steps=ten"],
    ["ipc=0"],
    ["objective.reg=-1"],
    ["objective.steps=-5"],
    ["dataset=imagenet"],
    ["kernel"],
    ["=3"],
    ["evaluator.kernel=nngp", "objective=ls", "loss=platt"],
]


@pytest.mark.parametrize("args", BAD_INPUTS, ids=lambda a: " ".join(a))
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, args):
    store = tmp_path / "store" / "results.sqlite"
    result = CliRunner().invoke(main, ["run", "--store", str(store), *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "store").exists()


def test_bad_input_in_a_real_process(tmp_path):
    result = run_cli("run", "objective.stepz=3", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "Error: unknown parameter objective.stepz for objective kip (did you mean 'steps'?)"
    assert not (tmp_path / "distillbench_results").exists()


def test_unwritable_store_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(main, ["run", *TINY, "--store", str(blocker / "results.sqlite")])
    assert result.exit_code == 2 and "cannot open results store" in result.output


def test_dry_run_prints_resolved_configs(tmp_path):
    result = CliRunner().invoke(main, ["run", "--dry-run", "--store", str(tmp_path / "r.sqlite"),
                                       "loss=mse,platt", "seed=0,1,2", "kernel.arch=convnet3"])
    assert result.exit_code == 0, result.output
    assert result.output.count("kip/ntk(convnet3)") == 6
    assert '"arch"' not in result.output and 'arch="convnet3"' in result.output
    assert not (tmp_path / "r.sqlite").exists()


def test_list_shows_every_kind_with_params():
    result = CliRunner().invoke(main, ["list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for text in ["rf-nngp", "platt", "rfad", "krr", "digits", "kernel.arch", "objective.learn_labels",
                 "distillbench (built-in)"]:
        assert text in result.output


@pytest.mark.parametrize("argv", [["--help"], ["list"], ["run", "--help"], ["run", "--dry-run"]])
def test_fast_commands_do_not_import_jax(argv):
    code = (
        "import sys\n"
        "from distillbench.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "assert 'jax' not in sys.modules, 'jax was imported'\n"
        "assert 'neural_tangents' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
