"""Campaign files (``distillbench run --config FILE.toml``): the same cells as the command line, overrides
on top, and one line naming the file, grid and key (a TOML syntax error: ``FILE:LINE``) with exit 2 for every
bad file, nothing written."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from distillbench.cli import main
from distillbench.errors import ConfigError
from distillbench.registry import load_registry
from distillbench.runner.campaign import plan_campaign, read_campaign
from distillbench.runner.plan import parse_overrides, plan

from helpers import TINY, run_cli

EXIT_BAD_INPUT = 2


@pytest.fixture(scope="module")
def registry():
    return load_registry(entry_points=False)


def write(tmp_path: Path, text: str, name: str = "campaign.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


TWO_GRIDS = """
    # two grids on digits
    [grid.kip]
    dataset = "digits"
    ipc = [1, 2]
    seed = [0, 1]
    "objective.steps" = 3
    "objective.learn_labels" = [false, true]

    [grid.nngp]
    extends = "kip"
    kernel = "nngp"
    "objective.lr" = 1e-3
"""
KIP_ARGS = ["dataset=digits", "ipc=1,2", "seed=0,1", "objective.steps=3", "objective.learn_labels=false,true"]


def own_lines(stderr: str) -> list[str]:
    """stderr without the once-per-process notice of an installed plugin on an older plugin API."""
    return [line for line in stderr.strip().splitlines() if not line.startswith("distillbench: plugin ")]


def ids(configs) -> list[str]:
    return [c.run_id for c in configs]


def test_a_campaign_and_the_equivalent_command_lines_resolve_to_the_same_cells(tmp_path, registry):
    campaign = plan_campaign(write(tmp_path, TWO_GRIDS), {}, registry)
    expected = ids(plan(KIP_ARGS, registry).configs) + ids(plan([*KIP_ARGS, "kernel=nngp", "objective.lr=0.001"],
                                                                 registry).configs)
    assert ids(campaign.configs) == expected and len(set(expected)) == 16


def test_dry_run_of_a_campaign_prints_the_command_lines_cells(tmp_path):
    path = write(tmp_path, TWO_GRIDS)
    by_file = CliRunner().invoke(main, ["run", "--config", str(path), "--dry-run"])
    by_args = [CliRunner().invoke(main, ["run", *args, "--dry-run"]) for args in
               (KIP_ARGS, [*KIP_ARGS, "kernel=nngp", "objective.lr=1e-3"])]
    assert by_file.exit_code == 0 and all(r.exit_code == 0 for r in by_args), by_file.output
    listed = [line.split()[1] for line in by_file.output.splitlines() if line.startswith("[")]
    expected = [line.split()[1] for r in by_args for line in r.output.splitlines() if line.startswith("[")]
    assert listed == expected and len(listed) == 16
    assert "[16/16]" in by_file.output


def test_rfad_table1_dry_run_lists_every_cell_without_the_data(tmp_path):
    """The paper protocol can be reviewed on a machine without its data: every cell, one note a
    dataset; the same command without --dry-run refuses (one line, exit 2, nothing written)."""
    campaign = Path(__file__).parents[1] / "campaigns" / "rfad-table1.toml"
    env = {"DISTILLBENCH_DATA_DIR": str(tmp_path / "no-data")}
    dry = run_cli("run", "--config", str(campaign), "--dry-run", cwd=tmp_path, env_extra=env)
    assert dry.returncode == 0, dry.stderr
    assert sum(line.startswith("[") for line in dry.stdout.splitlines()) == 224
    notes = [line for line in own_lines(dry.stderr) if line.startswith("note: dataset ")]
    assert len(notes) == 5 and all("a real run refuses it" in line for line in notes), dry.stderr
    real = run_cli("run", "--config", str(campaign), "--store", str(tmp_path / "s.sqlite"), cwd=tmp_path, env_extra=env)
    assert real.returncode == EXIT_BAD_INPUT and len(own_lines(real.stderr)) == 1, real.stderr
    assert "missing file" in real.stderr and not (tmp_path / "s.sqlite").exists()


def test_nested_tables_and_quoted_dotted_keys_are_the_same_setting(tmp_path, registry):
    quoted = write(tmp_path, """
        [grid.a]
        dataset = "digits"
        "objective.steps" = 3
        "kernel.b_std" = 0.05
    """, "quoted.toml")
    nested = write(tmp_path, """
        [grid.a]
        dataset = "digits"
        objective = { steps = 3 }

        [grid.a.kernel]
        b_std = 0.05
    """, "nested.toml")
    assert ids(plan_campaign(quoted, {}, registry).configs) == ids(plan_campaign(nested, {}, registry).configs) \
        == ids(plan(["dataset=digits", "objective.steps=3", "kernel.b_std=0.05"], registry).configs)


def test_an_override_replaces_its_key_in_every_grid_or_adds_it(tmp_path, registry):
    path = write(tmp_path, TWO_GRIDS)
    configs = plan_campaign(path, parse_overrides(["seed=7", "objective.steps=5", "evaluator.reg=1e-4"]), registry).configs
    assert len(configs) == 8 and {c.seed for c in configs} == {7}
    assert {dict(c.objective.params)["steps"] for c in configs} == {5}
    assert {dict(c.evaluator.params)["reg"] for c in configs} == {1e-4}
    assert {c.kernel.name for c in configs} == {"ntk", "nngp"}  # the grid's own keys stay


def test_a_cell_in_two_grids_runs_once_and_is_said(tmp_path, registry):
    path = write(tmp_path, """
        [grid.a]
        dataset = "digits"
        seed = [0, 1]
        [grid.b]
        dataset = "digits"
        seed = [1, 2]
    """)
    result = plan_campaign(path, {}, registry)
    assert [c.seed for c in result.configs] == [0, 1, 2]
    assert any("1 cell of" in n and "appear in more than one grid" in n for n in result.notes)


def test_grids_keep_their_order_and_extends_chains(tmp_path):
    campaign = read_campaign(write(tmp_path, """
        [grid.base]
        dataset = "digits"
        ipc = [1, 10]
        [grid.child]
        extends = "base"
        ipc = 2
        [grid.grandchild]
        extends = "child"
        seed = 3
    """))
    assert [g.name for g in campaign.grids] == ["base", "child", "grandchild"]
    assert campaign.grids[2].values() == {"dataset": ["digits"], "ipc": ["2"], "seed": ["3"]}


def test_command_line_keys_the_file_does_not_know_reach_the_planner_unchanged(tmp_path, registry):
    """``launcher=`` and ``launcher.*`` (and any other key): the planner decides, as for a command line."""
    path = write(tmp_path, '[grid.a]\ndataset = "digits"\n')
    for extra in (["launcher=local"], ["launcher.max_parallel=2"], ["timeout=30"]):
        try:
            direct = plan(["dataset=digits", *extra], registry)
        except ConfigError as exc:
            with pytest.raises(ConfigError) as raised:
                plan_campaign(path, parse_overrides(extra), registry)
            assert str(exc) in str(raised.value) and "from the command line" in str(raised.value)
        else:
            via_file = plan_campaign(path, parse_overrides(extra), registry)
            assert ids(via_file.configs) == ids(direct.configs) and via_file.options == direct.options


#: (id, file text, command-line overrides, fragment of the error line after "FILE": its grid and key)
BAD_FILES = [
    ("toml syntax", '[grid.a]\ndataset = "digits\n', [], ":2: TOML syntax: "),
    ("dotted key after its component", '[grid.a]\nkernel = "ntk"\nkernel.arch = "fc1"\n', [],
     ':3: TOML syntax: Cannot overwrite a value (at line 3, column 20); quote dotted keys, e.g. "kernel.arch"'),
    ("unknown key", '[grid.a]\ndataset = "digits"\n\ndatset = "mnist"\n', [],
     " [grid.a] datset: unknown key 'datset' (did you mean 'dataset'?)"),
    ("unknown parameter", '[grid.main]\ndataset = "digits"\n"objective.stepz" = 3\n', [],
     " [grid.main] objective.stepz: unknown parameter objective.stepz for objective kip (did you mean 'steps'?)"),
    ("line after brackets in strings, comments and a multi-line list",
     '[grid.a]\ndataset = "digits"  # [x\n"dataset.preprocess" = "a[b"\nseed = [\n  0,  # [\n  1,\n]\nsede = 1\n', [],
     " [grid.a] sede: unknown key 'sede' (did you mean 'seed'?)"),
    ("unknown parameter, nested", '[grid.main]\ndataset = "digits"\n[grid.main.objective]\nlr = 1\nstepz = 3\n', [],
     " [grid.main] objective.stepz: unknown parameter objective.stepz"),
    ("bad value", '[grid.a]\ndataset = "digits"\nipc = "ten"\n', [], " [grid.a] ipc: ipc='ten' is not a valid int"),
    ("out of range", '[grid.a]\n"objective.steps" = -1\n', [], " [grid.a] objective.steps: objective.steps=-1"),
    ("bool for an int", '[grid.a]\nipc = true\n', [], " [grid.a] ipc: ipc='true' is not a valid int"),
    ("unknown component", '[grid.a]\nkernel = "ntx"\n', [], " [grid.a] kernel: unknown kernel 'ntx' (did you mean 'ntk'?)"),
    ("comma list in a string", '[grid.a]\nseed = "0,1"\n', [],
     " [grid.a] seed: seed = '0,1': a comma list is a command-line form; in a file write a list, e.g. seed = [0, 1]"),
    ("empty list", '[grid.a]\nseed = []\n', [], " [grid.a] seed: seed = [] sweeps nothing"),
    ("empty string", '[grid.a]\nkernel = " "\n', [], " [grid.a] kernel: kernel has an empty value"),
    ("list in a list", '[grid.a]\nseed = [[0, 1]]\n', [], " [grid.a] seed: seed is a list inside a list"),
    ("a date", '[grid.a]\nseed = 2024-01-01\n', [], " [grid.a] seed: seed is a TOML date"),
    ("empty grid", '[grid.a]\ndataset = "digits"\n\n[grid.b]\n# nothing yet\n', [], " [grid.b]: the grid is empty"),
    ("no grid", '# a campaign\n', [], ": holds no [grid.NAME] table"),
    ("not a table", 'grid = 3\n', [], ": holds no [grid.NAME] table"),
    ("grid a value", '[grid]\ndataset = "digits"\n', [], "grid.dataset is a value, not a table"),
    ("unknown top-level table", '[grids.a]\ndataset = "digits"\n', [],
     ": unknown top-level key 'grids' (did you mean 'grid'?)"),
    ("unknown base", '[grid.a]\ndataset = "digits"\n[grid.b]\nextends = "aa"\nipc = 2\n', [],
     " [grid.b] extends: 'aa' is not a grid of this file (did you mean 'a'?)"),
    ("extends cycle", '[grid.a]\nextends = "b"\nipc = 1\n[grid.b]\nextends = "a"\nipc = 2\n', [],
     "extends makes a cycle (a -> b -> a)"),
    ("extends not a name", '[grid.a]\nextends = 3\nipc = 1\n', [],
     " [grid.a] extends: extends takes the name of another grid"),
    ("launcher in a grid", '[grid.a]\ndataset = "digits"\n[grid.a.launcher]\naddress = "auto"\n', [],
     " [grid.a] launcher.address: launcher.address belongs on the command line"),
    ("malformed key", '[grid.a]\n"se ed" = 1\n', [], ' [grid.a] "se ed": malformed key \'se ed\''),
    ("timeout differs between grids", '[grid.a]\ndataset = "digits"\ntimeout = 10\n[grid.b]\ndataset = "digits"\n'
     'seed = 1\n', [], ": grids 'a' and 'b' set timeout (10.0 vs None) differently"),
    ("bad override", '[grid.a]\ndataset = "digits"\n', ["objective.stepz=3"],
     " [grid.a] objective.stepz= from the command line: unknown parameter objective.stepz"),
    ("override replaces a good key with a bad value", '[grid.a]\ndataset = "digits"\nipc = 1\n', ["ipc=0"],
     " [grid.a] ipc= from the command line: ipc=0"),
    ("missing data", '[grid.a]\ndataset = "cifar10"\n"dataset.data_dir" = "/nonexistent"\n', [],
     " [grid.a] dataset: dataset cifar10: missing file /nonexistent/cifar10/"),
]


@pytest.mark.parametrize("text,extra,fragment", [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_a_bad_campaign_file_is_one_line_with_its_file_grid_and_key_exit_2_nothing_written(tmp_path, text, extra,
                                                                                             fragment):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    store = tmp_path / "results.sqlite"
    result = CliRunner().invoke(main, ["run", "--config", str(path), "--store", str(store), *extra])
    lines = own_lines(result.stderr)
    assert not result.stdout.strip(), result.stdout
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert len(lines) == 1 and lines[0].startswith(f"Error: {path}"), lines
    assert fragment in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_a_missing_or_unreadable_campaign_file_is_one_line_exit_2(tmp_path):
    for path, fragment in ((tmp_path / "nope.toml", "no such campaign file"), (tmp_path, "is a directory")):
        result = CliRunner().invoke(main, ["run", "--config", str(path), "--store", str(tmp_path / "r.sqlite")])
        (line,) = own_lines(result.stderr)
        assert result.exit_code == EXIT_BAD_INPUT and line.startswith(f"Error: {path}: ")
        assert fragment in line and not (tmp_path / "r.sqlite").exists()


@pytest.mark.slow
def test_a_campaign_runs_and_its_cells_reach_the_store(tmp_path):
    """End to end in a real process: two grids of tiny cells, each cell done once."""
    path = write(tmp_path, """
        [grid.mse]
        seed = [0, 1]
        [grid.platt]
        loss = "platt"
        seed = 0
    """)
    store = tmp_path / "results.sqlite"
    args = [a for a in TINY if not a.startswith("objective.steps")] + ["objective.steps=2"]
    first = run_cli("run", "--config", str(path), "--store", str(store), "-q", *args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    from distillbench.store.database import ResultStore

    with ResultStore(store) as opened:
        first_rows = {r.run_id: r.finished_at for r in opened.records()}
    again = run_cli("run", "--config", str(path), "--store", str(store), "-q", *args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    with ResultStore(store) as opened:
        rows = list(opened.records())
    assert len(rows) == 3 and {r.status for r in rows} == {"done"}
    assert {r.run_id: r.finished_at for r in rows} == first_rows  # resumed: nothing ran twice


def test_scale_out_doc_names_exactly_the_launchers_parameters(registry):
    """docs/scale-out.md stays true to the code: every ``launcher.<param>`` it names is declared by
    ``ray`` or ``slurm``, and each of their parameters is documented."""
    import re

    doc = (Path(__file__).resolve().parents[1] / "docs" / "scale-out.md").read_text()
    named = set(re.findall(r"launcher\.([a-z_]+)", doc))
    declared = {p.name for name in ("ray", "slurm") for p in registry.get("launcher", name).params}
    assert named == declared
    assert set(re.findall(r"launcher=([a-z]+)", doc)) <= set(registry.names("launcher"))
