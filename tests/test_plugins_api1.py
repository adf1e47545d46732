"""Plugin API 1 through the adapter: the example packages as they were written for API 1
(tests/data/api1_plugins, copied from commit 13d20cb) load, run, and print one deprecation line
each; an API 1 loss's ``learning_rate`` and an API 1 objective's ``problem.loss.learning_rate``
are mapped onto API 2."""

import sqlite3
import types
from pathlib import Path

import pytest

from distillbench import API_VERSION, Component, hookimpl
from distillbench.plugins import ADAPTED_APIS, adapted_api, deprecation_line, load_plugins, warn_deprecated
from distillbench.registry import Registry

from helpers import run_cli, tiny

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

API1 = Path(__file__).resolve().parent / "data" / "api1_plugins"
EXAMPLES = ("distillbench-rbf", "distillbench-herding")


def _as_installed(tmp_path) -> dict:
    """The API 1 copies as installed distributions: a *.dist-info each, the sources on PYTHONPATH."""
    site = tmp_path / "site"
    site.mkdir()
    for dist in EXAMPLES:
        project = tomllib.loads((API1 / dist / "pyproject.toml").read_text())["project"]
        info = site / f"{dist.replace('-', '_')}-{project['version']}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {project['version']}\n")
        eps = "".join(f"{k} = {v}\n" for k, v in project["entry-points"]["distillbench"].items())
        (info / "entry_points.txt").write_text(f"[distillbench]\n{eps}")
    return {"PYTHONPATH": ":".join([str(site), *(str(API1 / dist) for dist in EXAMPLES)])}


def _deprecations(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "written for plugin API" in line]


def test_the_copies_are_the_api1_packages():
    assert API_VERSION == 2 and ADAPTED_APIS == {1: 3}
    for dist in EXAMPLES:
        source = (API1 / dist / dist.replace("-", "_") / "__init__.py").read_text()
        assert "DISTILLBENCH_API = 1\n" in source


@pytest.mark.slow
def test_api1_examples_list_and_run_with_one_deprecation_line_each(tmp_path):
    env = _as_installed(tmp_path)
    expected = sorted(deprecation_line(f"{dist} 0.1.0", 1) for dist in EXAMPLES)
    listing = run_cli("plugins", cwd=tmp_path, env_extra=env)
    assert listing.returncode == 0, listing.stderr
    assert sorted(listing.stderr.splitlines()) == expected
    assert "(declares plugin API 1)" in listing.stdout and "SKIPPED" not in listing.stdout

    store = tmp_path / "r.sqlite"
    result = run_cli("run", "--store", str(store), *tiny("objective=kip,herding", "kernel=rbf", "ipc=2"),
                     cwd=tmp_path, env_extra=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(_deprecations(result.stderr)) == expected  # once per plugin, however many runs use it
    assert "warning" not in result.stderr
    with sqlite3.connect(store) as conn:
        rows = conn.execute("SELECT objective, kernel, status, acc FROM runs").fetchall()
    assert sorted(r[:3] for r in rows) == [("herding", "rbf", "done"), ("kip", "rbf", "done")]
    assert all(0 <= r[3] <= 1 for r in rows)


def test_the_deprecation_line_is_written_once_per_plugin_and_process(capsys):
    warn_deprecated("once-plugin 1.0", 1)
    warn_deprecated("once-plugin 1.0", 1)
    assert capsys.readouterr().err == deprecation_line("once-plugin 1.0", 1) + "\n"
    assert "docs/plugins.md#6-versioning" in deprecation_line("x", 1)


# -- the mapping, in process, on an API 1 plugin with a loss and an objective ---------------------

def _api1_build_loss(rate: float):
    import jax.numpy as jnp

    from distillbench.components.losses import Loss

    def init():
        return {"scale": jnp.asarray(2.0, jnp.float32)}

    def apply(params, pred, y):
        return 0.5 * jnp.mean((params["scale"] * pred - y) ** 2)

    return Loss(init, apply, lambda params, pred: params["scale"] * pred, learning_rate=rate)  # API 1 form


def _api1_build_objective():
    """An API 1 objective that records the rate API 1 told it to train the loss parameters at."""
    import jax.numpy as jnp

    from distillbench.components.objectives import Distiller, Support

    seen = []

    def make(problem):
        seen.append(problem.loss.learning_rate)
        m = problem.ipc * problem.data.num_classes
        x = jnp.zeros((m, *problem.data.image_shape), jnp.float32)
        y = jnp.zeros((m, problem.data.num_classes), jnp.float32)
        return Distiller(init=lambda key: (x, y, problem.loss.init()), step=lambda s, train, key: (s, jnp.zeros(())),
                         support=lambda s: Support(*s), num_steps=0)

    make.seen = seen
    return make


OBJECTIVE = _api1_build_objective()


def _api1_module() -> types.ModuleType:
    module = types.ModuleType("old_style_plugin")
    module.DISTILLBENCH_API = 1

    @hookimpl
    def distillbench_components():
        return [Component(kind="loss", name="old-frozen", summary="s", build=lambda: _api1_build_loss(0.0)),
                Component(kind="loss", name="old-learned", summary="s", build=lambda: _api1_build_loss(0.5)),
                Component(kind="objective", name="old-objective", summary="s", build=lambda: OBJECTIVE)]

    module.distillbench_components = distillbench_components
    return module


def test_an_api1_loss_and_objective_are_mapped_onto_api2(capsys):
    import jax
    import jax.numpy as jnp

    from distillbench.components.losses import Loss
    from distillbench.components.objectives import Problem
    from distillbench.testing import tiny_datasplit

    module = _api1_module()
    assert adapted_api(module) == 1
    registry = Registry.from_plugins(load_plugins(entry_points=False, extra=(module,)))
    assert capsys.readouterr().err.count("written for plugin API 1") == 1
    frozen = registry.instantiate("loss", "old-frozen", {})
    learned = registry.instantiate("loss", "old-learned", {})
    assert type(frozen) is Loss and type(learned) is Loss
    # learning_rate 0: the parameters stay at init(), out of every optimizer's reach
    pred, y = jnp.ones((2, 3)), jnp.zeros((2, 3))
    assert frozen.init() == {} and float(frozen.apply({}, pred, y)) == pytest.approx(2.0)
    # learning_rate > 0: the objective trains them (at its loss_lr)
    assert set(learned.init()) == {"scale"}
    assert float(jax.grad(learned.apply)(learned.init(), pred, y)["scale"]) != 0.0

    make = registry.instantiate("objective", "old-objective", {})
    data = tiny_datasplit()
    for loss, rate in ((learned, 1e-2), (frozen, 0.0), (registry.instantiate("loss", "mse", {}), 0.0),
                       (registry.instantiate("loss", "platt", {}), 1e-2)):
        distiller = make(Problem(data, 1, None, loss, 0))
        assert OBJECTIVE.seen[-1] == rate
        assert distiller.support(distiller.init(None)).loss_params.keys() == loss.init().keys()


def test_conformance_suite_checks_an_api1_plugin_as_the_runner_sees_it():
    from distillbench.testing import check_loss, plugin_components

    components = {c.name: c for c in plugin_components(_api1_module())}
    check_loss(components["old-learned"])
    check_loss(components["old-frozen"])
