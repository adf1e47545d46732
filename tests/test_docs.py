"""The docs stay true: the plugin guide's example works, every hook and kind is documented."""

import re
from pathlib import Path

import pytest

from distillbench import hookspecs
from distillbench.components.spec import KINDS

from helpers import run_cli, tiny

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _python_blocks(text):
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.slow
def test_plugin_guide_example_runs_through_the_cli(tmp_path):
    init_src, kernel_src = _python_blocks((DOCS / "plugins.md").read_text())
    site = tmp_path / "site"
    pkg = site / "distillbench_rbf"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(init_src)
    (pkg / "kernel.py").write_text(kernel_src)
    info = site / "distillbench_rbf-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: distillbench-rbf\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[distillbench]\nrbf = distillbench_rbf\n")
    env = {"PYTHONPATH": str(site)}

    listed = run_cli("list", "kernel", cwd=tmp_path, env_extra=env)
    assert listed.returncode == 0 and "rbf" in listed.stdout and "distillbench-rbf 0.1.0" in listed.stdout
    result = run_cli("run", "--store", str(tmp_path / "r.sqlite"), "kernel=rbf", "kernel.length_scale=2",
                     *tiny(), cwd=tmp_path, env_extra=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "kip/rbf/mse" in result.stdout and "done" in result.stdout


def test_every_hook_and_kind_is_documented():
    guide = (DOCS / "plugins.md").read_text()
    hooks = [name for name in dir(hookspecs) if name.startswith("distillbench_")]
    assert hooks
    for name in hooks:
        assert name in guide
    for kind in KINDS:
        assert f"distillbench.components.{kind}s" in guide or f"| {kind} |" in guide
    assert hookspecs.ENTRY_POINT_GROUP in guide
