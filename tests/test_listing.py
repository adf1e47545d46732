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
