"""The XLA:CPU flags distillbench sets in the processes it owns (distillbench/compat/xla_flags.py):
the rule on its own, then in real processes (XLA accepts the flag, the compiled program has no
YNNPACK fusion, the CLI records the flags it ran with)."""

import importlib.metadata
import os
import subprocess
import sys

import pytest

from distillbench.compat import xla_flags
from distillbench.store.database import ResultStore

FLAG = "--xla_cpu_experimental_ynn_fusion_type="
JAXLIB = importlib.metadata.version("jaxlib")


@pytest.mark.parametrize("version, accepted", [
    ("0.5.3", False), ("0.8.0", False), ("0.8.1", True), ("0.9.0.1", True), ("0.10.2", True),
    ("0.11.0", False), ("0.11.0.dev20260101", False), ("0.10.3rc1", True), (None, False), ("", False),
])
def test_only_the_releases_known_to_accept_the_flag_get_it(version, accepted):
    assert xla_flags.accepts_ynn_flag(version) is accepted
    assert xla_flags.cpu_flags({}, version) == (FLAG if accepted else "")


def test_the_flag_is_added_to_the_users_flags_and_never_replaces_their_own_setting():
    users = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert xla_flags.cpu_flags(users, "0.10.2") == f"--xla_force_host_platform_device_count=2 {FLAG}"
    own = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot"}
    assert xla_flags.cpu_flags(own, "0.10.2") == own["XLA_FLAGS"]
    assert xla_flags.cpu_flags({"DISTILLBENCH_XLA_DEFAULTS": "0"}, "0.10.2") == ""
    assert xla_flags.cpu_flags({"DISTILLBENCH_XLA_DEFAULTS": "0", **users}, "0.10.2") == users["XLA_FLAGS"]


def test_a_jaxlib_without_the_flag_drops_the_setting_inherited_from_a_newer_one():
    inherited = {"XLA_FLAGS": f"--xla_force_host_platform_device_count=2 {FLAG}"}
    assert xla_flags.cpu_flags(inherited, "0.5.3") == "--xla_force_host_platform_device_count=2"
    assert xla_flags.cpu_flags(inherited, "0.10.2") == inherited["XLA_FLAGS"]


def test_apply_changes_nothing_once_jax_is_imported(monkeypatch):
    import jax  # noqa: F401  (conftest imported it already: too late for XLA to read new flags)

    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert xla_flags.apply() is False
    assert "XLA_FLAGS" not in os.environ


def _environment_without_flags(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_flags.OPT_OUT)}
    return dict(env, TF_CPP_MIN_LOG_LEVEL="3", **extra)


COMPILE = r"""
import os
from distillbench.compat import xla_flags
changed = xla_flags.apply()
import jax, jax.numpy as jnp
def f(h, k):
    c = jax.lax.conv_general_dilated(h, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(jnp.tanh(c), axis=(1, 2))
text = jax.jit(f).lower(jnp.ones((4, 8, 8, 8)), jnp.ones((3, 3, 8, 8))).compile().as_text()
print(changed, "__ynn_fusion" in text, repr(os.environ.get("XLA_FLAGS", "")))
"""


def test_in_a_fresh_process_xla_accepts_the_flag_and_compiles_without_ynnpack():
    out = subprocess.run([sys.executable, "-c", COMPILE], capture_output=True, text=True, timeout=300,
                         env=_environment_without_flags())
    assert out.returncode == 0, out.stderr[-3000:]  # XLA aborts the process on a flag it does not know
    changed, ynn, flags = out.stdout.split()[-3:]
    applies = xla_flags.accepts_ynn_flag(JAXLIB)
    assert changed == str(applies) and flags == repr(FLAG if applies else "")
    if applies:
        assert ynn == "False"
    opted_out = subprocess.run([sys.executable, "-c", COMPILE], capture_output=True, text=True, timeout=300,
                               env=_environment_without_flags(DISTILLBENCH_XLA_DEFAULTS="0"))
    assert opted_out.returncode == 0, opted_out.stderr[-3000:]
    assert opted_out.stdout.split()[-3] == "False" and opted_out.stdout.split()[-1] == "''"


def test_a_cli_run_records_the_xla_flags_it_ran_with(tmp_path):
    store = tmp_path / "r.sqlite"
    args = ["run", "-q", "--store", str(store), "objective=ls", "kernel=nngp", "dataset=synthetic",
            "dataset.n_train=40", "dataset.n_test=20", "dataset.num_classes=2", "dataset.height=4",
            "dataset.width=4"]
    out = subprocess.run([sys.executable, "-m", "distillbench.cli", *args], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path, env=_environment_without_flags())
    assert out.returncode == 0, out.stderr[-3000:]
    with ResultStore(store) as opened:
        (record,) = list(opened.records())
    assert record.environment["xla_flags"] == (FLAG if xla_flags.accepts_ynn_flag(JAXLIB) else "")
