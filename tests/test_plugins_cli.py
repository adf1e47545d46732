"""Plugin discovery through the CLI: `distillbench plugins`, failures, API versions, disabling,
tracing and laziness. Third-party plugins are real distributions (a *.dist-info on PYTHONPATH)."""

import json
import re
import subprocess
import sys

import pytest

from distillbench.plugins import api_versions, check_api, normalize

from helpers import make_plugin_dist, run_cli, tiny

GOOD = """
    from distillbench import Component, Param, hookimpl

    @hookimpl
    def distillbench_components():
        return [Component(kind="loss", name="good-loss", summary="a third-party loss",
                          build="good_plugin_impl:build", params=(Param("scale", float, 1.0, "a scale"),))]
"""


def _versioned(api):
    return f"""
        from distillbench import Component, hookimpl

        DISTILLBENCH_API = {api!r}

        @hookimpl
        def distillbench_components():
            return [Component(kind="loss", name="versioned-loss", summary="s", build="x:y")]
    """


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "site"
    make_plugin_dist(root, "good-plugin", "good_plugin", GOOD)
    make_plugin_dist(root, "broken-plugin", "broken_plugin", "raise ImportError('missing dependency foo')\n")
    make_plugin_dist(root, "future-plugin", "future_plugin", _versioned(3))
    make_plugin_dist(root, "disabled-plugin", "disabled_plugin", GOOD.replace("good-loss", "disabled-loss"))
    return root


def test_plugins_command_lists_packages_components_failures_and_disabled(tmp_path, site):
    env = {"PYTHONPATH": str(site), "DISTILLBENCH_DISABLE_PLUGINS": "Disabled_Plugin"}
    result = run_cli("plugins", cwd=tmp_path, env_extra=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Traceback" not in out + result.stderr and result.stderr == ""
    lines = out.splitlines()
    assert lines[0] == "distillbench 0.1.0, plugin API 2, entry-point group 'distillbench'"
    assert lines[2] == "distillbench 0.1.0 (built-in)"  # built-ins first
    assert "  kernel     finite-ntk, frepo-pool, nngp, ntk, rcig-pool, rf-nngp" in lines
    block = out[out.index("good-plugin 0.1\n"):]
    assert block.splitlines()[1:3] == ["  entry point good_plugin = good_plugin", "  loss       good-loss"]
    assert "broken-plugin 0.1  FAILED at import: ImportError: missing dependency foo" in lines
    assert ("future-plugin 0.1  SKIPPED: it requires distillbench plugin API 3, but distillbench 0.1.0 provides "
            "API 2; upgrade distillbench") in lines
    assert "disabled-plugin 0.1  DISABLED (DISTILLBENCH_DISABLE_PLUGINS)" in lines
    # (other plugin packages may be installed in this environment, e.g. the examples in CI)
    assert re.fullmatch(r"\d+ plugin\(s\): \d+ loaded, 1 failed, 1 incompatible, 1 disabled  "
                        r"\[DISTILLBENCH_DISABLE_PLUGINS=Disabled_Plugin\]", lines[-1]), lines[-1]

    data = json.loads(run_cli("plugins", "--json", cwd=tmp_path, env_extra=env).stdout)
    status = {p["package"]: (p["status"], p["components"]) for p in data["plugins"]}
    assert status["good-plugin"] == ("loaded", {"loss": ["good-loss"]})
    assert status["broken-plugin"][0] == "failed" and status["future-plugin"][0] == "incompatible"
    assert status["disabled-plugin"] == ("disabled", {})
    assert data["plugins"][0]["builtin"] and data["api_version"] == 2


@pytest.mark.slow
def test_list_and_builtin_run_survive_a_plugin_raising_at_import(tmp_path):
    site = make_plugin_dist(tmp_path / "site", "broken-plugin", "broken_plugin", "raise ImportError('no foo')\n")
    env = {"PYTHONPATH": str(site)}
    expected = "warning: plugin broken-plugin 0.1 failed at import and was skipped: ImportError: no foo"
    listed = run_cli("list", cwd=tmp_path, env_extra=env)
    assert listed.returncode == 0 and listed.stderr.splitlines() == [expected]
    ran = run_cli("run", "--store", str(tmp_path / "r.sqlite"), *tiny(), cwd=tmp_path, env_extra=env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stderr.splitlines() == [expected] and "done" in ran.stdout


def test_incompatible_or_invalid_api_declaration_is_one_warning_line(tmp_path):
    site = tmp_path / "site"
    make_plugin_dist(site, "old-plugin", "old_plugin", _versioned(3))
    listed = run_cli("list", "loss", cwd=tmp_path, env_extra={"PYTHONPATH": str(site)})
    assert listed.returncode == 0
    assert listed.stderr.splitlines() == [
        ("warning: plugin old-plugin 0.1 was skipped: it requires distillbench plugin API 3, but distillbench 0.1.0 "
         "provides API 2; upgrade distillbench")]
    assert "versioned-loss" not in listed.stdout

    make_plugin_dist(site, "old-plugin", "old_plugin", _versioned(">=1"))
    listed = run_cli("list", "loss", cwd=tmp_path, env_extra={"PYTHONPATH": str(site)})
    assert listed.returncode == 0 and listed.stderr.splitlines() == [
        ("warning: plugin old-plugin 0.1 was skipped: DISTILLBENCH_API must be a positive int or a tuple of them, "
         "e.g. 2; got '>=1'")]

    make_plugin_dist(site, "old-plugin", "old_plugin", _versioned((1, 2)))
    listed = run_cli("list", "loss", cwd=tmp_path, env_extra={"PYTHONPATH": str(site)})
    assert listed.returncode == 0 and listed.stderr == "" and "versioned-loss" in listed.stdout


def test_an_api1_plugin_is_refused_with_one_line_and_the_others_carry_on(tmp_path):
    """Plugin API 1 is no longer loaded (no adapter): one line naming the API to port to; a run that
    names its component exits 2; another plugin's components still list."""
    site = make_plugin_dist(tmp_path / "site", "old-plugin", "old_plugin", _versioned(1))
    make_plugin_dist(site, "good-plugin", "good_plugin", GOOD)
    env = {"PYTHONPATH": str(site)}
    warning = ("warning: plugin old-plugin 0.1 was skipped: it is written for distillbench plugin API 1, which "
               "distillbench 0.1.0 no longer loads; port it to API 2: docs/plugins.md#6-versioning")
    listed = run_cli("list", "loss", cwd=tmp_path, env_extra=env)
    assert listed.returncode == 0 and listed.stderr.splitlines() == [warning]
    assert "good-loss" in listed.stdout and "versioned-loss" not in listed.stdout
    ran = run_cli("run", "--dry-run", *tiny("loss=versioned-loss"), cwd=tmp_path, env_extra=env)
    assert ran.returncode == 2 and ran.stderr.splitlines()[0] == warning
    assert len(ran.stderr.splitlines()) == 2 and ran.stderr.splitlines()[1].startswith(
        "Error: unknown loss 'versioned-loss'"), ran.stderr


def test_api_declarations():
    assert api_versions(1) == {1} and api_versions((1, 2)) == {1, 2} and api_versions(range(1, 3)) == {1, 2}
    for bad in (True, 0, "1", (), (1, "2"), 1.0):
        with pytest.raises(TypeError, match="DISTILLBENCH_API must be"):
            api_versions(bad)

    class Plugin:
        DISTILLBENCH_API = (1, 2)

    assert check_api(Plugin) is None and check_api(object()) is None
    Plugin.DISTILLBENCH_API = 3
    assert "requires distillbench plugin API 3" in check_api(Plugin)
    Plugin.DISTILLBENCH_API = 1
    assert check_api(Plugin).startswith("it is written for distillbench plugin API 1, which distillbench")
    assert normalize("Distillbench_RBF.x") == "distillbench-rbf-x"


def test_same_kernel_from_two_packages_blocks_that_name_naming_both(tmp_path):
    source = """
        from distillbench import Component, hookimpl

        @hookimpl
        def distillbench_components():
            return [Component(kind="kernel", name="twin", summary="twin", build="x:y")]
    """
    site = tmp_path / "site"
    # the same entry-point name in both packages (and in distillbench-rbf): none may be silently dropped
    make_plugin_dist(site, "rbf-one", "rbf_one", source, entry_name="rbf")
    make_plugin_dist(site, "rbf-two", "rbf_two", source, entry_name="rbf")
    env = {"PYTHONPATH": str(site)}
    messages = {f"Error: kernel 'twin' is registered twice: by {a} and by {b}; uninstall one, or disable it with "
                "DISTILLBENCH_DISABLE_PLUGINS" for a, b in (("rbf-one 0.1", "rbf-two 0.1"), ("rbf-two 0.1", "rbf-one 0.1"))}
    warnings = {f"warning: {m[len('Error: '):]}; only runs that use that name are stopped" for m in messages}
    listing = run_cli("list", cwd=tmp_path, env_extra=env)  # the other components stay usable
    assert listing.returncode == 0 and listing.stderr.splitlines()[0] in warnings
    result = run_cli("run", "kernel=twin", "--dry-run", cwd=tmp_path, env_extra=env)
    assert result.returncode == 2
    warning, line = result.stderr.splitlines()  # the clash warning, then the error; no traceback
    assert warning in warnings and line in messages
    listing = run_cli("plugins", cwd=tmp_path, env_extra=env)
    assert listing.returncode == 2 and len(listing.stderr.splitlines()) == 1
    assert "rbf-one 0.1" in listing.stderr and "rbf-two 0.1" in listing.stderr
    assert "distillbench 0.1.0 (built-in)" in listing.stdout  # the listing is still shown
    assert "  kernel     twin\n" in listing.stdout  # the first one registered it,
    assert "  kernel     twin  CONFLICT: registered by another plugin too" in listing.stdout  # the second clashed
    fixed = run_cli("list", "kernel", cwd=tmp_path, env_extra={**env, "DISTILLBENCH_DISABLE_PLUGINS": "rbf-two"})
    assert fixed.returncode == 0 and "rbf-one 0.1" in fixed.stdout


@pytest.mark.parametrize("source, reason", [
    ("from distillbench import hookimpl\n\n@hookimpl\ndef distillbench_component():\n    return []\n",
     "distillbench_component is not a distillbench hook (did you mean 'distillbench_components'?)"),
    ("def distillbench_components():\n    return []\n",
     "it implements no distillbench hook (decorate distillbench_components with distillbench.hookimpl)"),
    ("from distillbench import hookimpl\n\n@hookimpl\ndef distillbench_components():\n    return ['rbf']\n",
     "TypeError: hook returned str, expected distillbench.Component"),
    ("from distillbench import hookimpl\nimport sys\n\n@hookimpl\ndef distillbench_components():\n    sys.exit(3)\n",
     "SystemExit: 3"),
], ids=["misspelt hook", "undecorated hook", "wrong return", "exit in hook"])
def test_hook_mistakes_are_one_warning_line(tmp_path, source, reason):
    site = make_plugin_dist(tmp_path / "site", "sloppy-plugin", "sloppy_plugin", source)
    result = run_cli("list", "loss", cwd=tmp_path, env_extra={"PYTHONPATH": str(site)})
    assert result.returncode == 0
    assert result.stderr.splitlines() == ["warning: plugin sloppy-plugin 0.1 failed at registration and was skipped: "
                                          + reason]


def test_tracing_shows_discovery_and_hook_calls(tmp_path, site):
    env = {"PYTHONPATH": str(site)}
    quiet = run_cli("list", "loss", cwd=tmp_path, env_extra=env)
    assert "trace" not in quiet.stderr
    for args, extra in ((["list", "loss"], {"DISTILLBENCH_TRACE_PLUGINS": "1"}), (["plugins", "--trace"], {})):
        result = run_cli(*args, cwd=tmp_path, env_extra={**env, **extra})
        assert result.returncode == 0
        trace = [line for line in result.stderr.splitlines() if line.startswith("distillbench trace: ")]
        text = "\n".join(trace)
        assert "registered built-in plugin distillbench_builtin" in text
        assert "entry point(s) in group 'distillbench'" in text
        assert "loaded entry point good_plugin = good_plugin (good-plugin 0.1) in" in text
        assert "distillbench_components() of good-plugin 0.1 -> loss:good-loss (" in text
        assert "plugin broken-plugin 0.1 failed at import" in text


def test_tracing_shows_components_built_by_a_run(tmp_path):
    result = run_cli("run", "--dry-run", *tiny(), cwd=tmp_path, env_extra={"DISTILLBENCH_TRACE_PLUGINS": "yes"})
    assert result.returncode == 0 and "distillbench trace: distillbench_components() of distillbench (built-in)" \
        in result.stderr


LAZY = """
    import os
    from pathlib import Path
    from distillbench import Component, hookimpl

    Path(os.environ["MARKERS"], "plugin-imported").touch()

    @hookimpl
    def distillbench_components():
        return [Component(kind="kernel", name="lazy", summary="lazy", build="lazy_plugin_impl:build")]
"""
IMPL = """
import os
from pathlib import Path
Path(os.environ["MARKERS"], "builder-imported").touch()
def build():
    raise RuntimeError("never built here")
"""


def _lazy_site(tmp_path):
    site = make_plugin_dist(tmp_path / "site", "lazy-plugin", "lazy_plugin", LAZY)
    (site / "lazy_plugin_impl.py").write_text(IMPL)
    markers = tmp_path / "markers"
    markers.mkdir()
    return {"PYTHONPATH": str(site), "MARKERS": str(markers)}, markers


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["list", "--help"], ["plugins", "--help"], ["--version"]])
def test_help_imports_no_plugin_code(tmp_path, argv):
    env, markers = _lazy_site(tmp_path)
    result = run_cli(*argv, cwd=tmp_path, env_extra=env)
    assert result.returncode == 0, result.stderr
    assert list(markers.iterdir()) == []


@pytest.mark.parametrize("argv", [["list"], ["plugins"], ["run", "kernel=lazy", "--dry-run"]])
def test_list_and_plugins_import_declarations_only_and_no_jax(tmp_path, argv):
    env, markers = _lazy_site(tmp_path)
    code = (
        "import sys\n"
        "from distillbench.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "assert 'jax' not in sys.modules, 'jax was imported'\n"
    )
    import os

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in markers.iterdir()) == ["plugin-imported"]  # the builder module was not imported
