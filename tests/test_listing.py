"""``distillbench list`` stays readable in an 80-column terminal."""

from helpers import run_cli


def test_list_at_80_columns_puts_each_parameter_on_its_own_line(tmp_path):
    result = run_cli("list", cwd=tmp_path, env_extra={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(len(line.rstrip()) <= 80 for line in lines)
    assert "    objective.steps = 300  int >= 0" in [line.rstrip() for line in lines]
    assert "        number of optimization steps" in [line.rstrip() for line in lines]
    assert not any("┃" in line for line in lines)  # no squeezed four-column table


def test_list_in_a_wide_terminal_keeps_the_table(tmp_path):
    result = run_cli("list", "objective", cwd=tmp_path, env_extra={"COLUMNS": "160"})
    assert result.returncode == 0 and "name / parameter" in result.stdout


def _listing(width: int, registry=None, kinds=("launcher",)) -> str:
    import io

    from rich.console import Console

    from distillbench.registry import load_registry
    from distillbench.reports.listing import print_components

    buffer = io.StringIO()
    print_components(registry or load_registry(entry_points=False), Console(file=buffer, width=width), kinds)
    return buffer.getvalue()


def test_brackets_in_a_summary_are_text_not_rich_markup():
    """The Ray launcher's install hint reads ``"distillbench[ray]"``, in both layouts."""
    for width in (80, 200):
        text = " ".join(_listing(width).split())
        assert '"distillbench[ray]"' in text and '"distillbench[slurm]"' in text, text


def test_every_plugin_text_is_escaped_in_both_layouts():
    from distillbench import Component, Param
    from distillbench.registry import Registry

    registry = Registry()
    registry.add(Component(kind="loss", name="[red]odd[/]", summary="sums [/] and [bold]x",
                           build="m:f", params=(Param("[p]", str, "[d]", "doc with [/] closing"),)),
                 "[pkg] 1.0")
    for width in (80, 200):
        text = " ".join(_listing(width, registry, ("loss",)).split())
        for fragment in ("[red]odd[/]", "sums [/] and [bold]x", "loss.[p]", "[d]", "doc with [/] closing"):
            assert fragment in text, (width, fragment, text)


def test_an_evaluator_lists_the_metrics_it_declares_in_both_layouts():
    for width in (80, 200):
        text = " ".join(_listing(width, kinds=("evaluator",)).replace("│", " ").split())
        assert ("shows: nearest train (nn_dist_rel, ratio, higher is better), MIA (mia_acc, percent, lower is "
                "better)") in text, text
        assert text.count("shows:") == 1  # krr and nn declare none
