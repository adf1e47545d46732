"""The example plugin packages (plugins/distillbench-rbf, plugins/distillbench-herding): public API
only, well-formed packages, and working through the CLI as installed distributions."""

import ast
import importlib.metadata
import sqlite3
from pathlib import Path

import pytest

from helpers import run_cli, tiny

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
EXAMPLES = {"distillbench-rbf": "distillbench_rbf", "distillbench-herding": "distillbench_herding"}
#: What a plugin may import from distillbench (docs/plugins.md, "What you may import").
PUBLIC = {"distillbench", "distillbench.krr", "distillbench.sampling", "distillbench.testing",
          "distillbench.components", *(f"distillbench.components.{m}" for m in
                                       ("datasets", "kernels", "losses", "objectives", "evaluators"))}


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module
            if node.module == "distillbench":  # `from distillbench import testing` is a module import
                yield from (f"distillbench.{alias.name}" for alias in node.names if alias.name.islower()
                            and alias.name not in ("hookimpl",) and not alias.name.startswith("__"))


def test_examples_exist():
    for dist, module in EXAMPLES.items():
        assert (PLUGINS / dist / "pyproject.toml").is_file()
        assert (PLUGINS / dist / module / "__init__.py").is_file()
        assert (PLUGINS / dist / "README.md").is_file()
        assert list((PLUGINS / dist / "tests").glob("test_*.py"))


@pytest.mark.parametrize("dist", list(EXAMPLES))
def test_examples_import_only_the_public_api(dist):
    files = sorted((PLUGINS / dist).rglob("*.py"))
    assert files
    used_testing = False
    for path in files:
        for name in _imports(path):
            used_testing |= name == "distillbench.testing"
            top = name.split(".")[0]
            if top == "distillbench":
                assert name in PUBLIC, f"{path.relative_to(PLUGINS)} imports private module {name}"
            assert not top.startswith("distillbench_builtin"), f"{path.relative_to(PLUGINS)} imports {name}"
            assert not any(part.startswith("_") and part != "__future__" for part in name.split(".")), name
    assert used_testing, f"{dist}'s tests must use the conformance suite"


def _pyproject(dist):
    return tomllib.loads((PLUGINS / dist / "pyproject.toml").read_text())


@pytest.mark.parametrize("dist", list(EXAMPLES))
def test_examples_are_well_formed_packages(dist):
    project = _pyproject(dist)["project"]
    assert project["name"] == dist
    assert any(dep.startswith("distillbench") for dep in project["dependencies"])
    assert project["entry-points"]["distillbench"] == {dist.split("-")[1]: EXAMPLES[dist]}
    source = (PLUGINS / dist / EXAMPLES[dist] / "__init__.py").read_text()
    assert f'__version__ = "{project["version"]}"' in source and "DISTILLBENCH_API = 2" in source


def _as_installed(tmp_path) -> dict:
    """Both examples as distributions: their source dirs on PYTHONPATH plus a *.dist-info each,
    written from their pyproject.toml (what `pip install` produces, without touching any env)."""
    site = tmp_path / "site"
    site.mkdir()
    for dist in EXAMPLES:
        project = _pyproject(dist)["project"]
        info = site / f"{dist.replace('-', '_')}-{project['version']}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {project['version']}\n")
        eps = "".join(f"{k} = {v}\n" for k, v in project["entry-points"]["distillbench"].items())
        (info / "entry_points.txt").write_text(f"[distillbench]\n{eps}")
    paths = [str(site), *(str(PLUGINS / dist) for dist in EXAMPLES)]
    return {"PYTHONPATH": ":".join(paths)}


@pytest.mark.slow
def test_examples_through_the_cli(tmp_path):
    env = _as_installed(tmp_path)
    listing = run_cli("plugins", cwd=tmp_path, env_extra=env)
    assert listing.returncode == 0 and listing.stderr == "", listing.stderr
    lines = listing.stdout.splitlines()
    for head, component in (("distillbench-rbf 0.1.0", "  kernel     rbf"),
                            ("distillbench-herding 0.1.0", "  objective  herding")):
        i = lines.index(head)
        assert lines[i + 1].endswith("(declares plugin API 2)") and lines[i + 2] == component

    listed = run_cli("list", "kernel", "objective", cwd=tmp_path, env_extra=env)
    assert listed.returncode == 0 and "kernel.features" in listed.stdout and "objective.pool" in listed.stdout

    store = tmp_path / "r.sqlite"
    result = run_cli("run", "--store", str(store), *tiny("objective=kip,herding", "kernel=rbf",
                                                         "kernel.features=0,64", "ipc=2"),
                     cwd=tmp_path, env_extra=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.count("warning") == 0
    with sqlite3.connect(store) as conn:
        rows = conn.execute("SELECT objective, kernel, status, acc FROM runs").fetchall()
    assert sorted(r[:3] for r in rows) == [("herding", "rbf", "done")] * 2 + [("kip", "rbf", "done")] * 2
    assert all(0 <= r[3] <= 1 for r in rows)


def _installed(dist):
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.parametrize("dist", list(EXAMPLES))
def test_pip_installed_examples_pass_check_installed(dist):
    if not _installed(dist):
        pytest.skip(f"{dist} is not pip-installed here (CI installs it: pip install ./plugins/{dist})")
    from distillbench.testing import check_installed

    assert check_installed(dist) == [{"distillbench-rbf": "kernel:rbf",
                                      "distillbench-herding": "objective:herding"}[dist]]
