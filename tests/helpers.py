"""Test helpers: tiny configurations and a way to install a plugin distribution in a temp dir."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

#: Small, fast run settings (synthetic 4x4 data, few steps, narrow random features).
TINY = [
    "dataset=synthetic", "dataset.n_train=60", "dataset.n_test=30", "dataset.num_classes=3",
    "dataset.height=4", "dataset.width=4", "objective.steps=3",
]


def tiny(*args: str) -> list[str]:
    """``TINY`` with ``args`` added; an arg replaces the ``TINY`` entry with the same key."""
    keys = {a.partition("=")[0] for a in args}
    return [a for a in TINY if a.partition("=")[0] not in keys] + list(args)


def make_plugin_dist(root: Path, dist: str, module: str, source: str, entry_name: str | None = None) -> Path:
    """Write ``module.py`` and a ``*.dist-info`` with a ``distillbench`` entry point under ``root``.

    importlib.metadata discovers it like any pip-installed distribution once ``root`` is on
    ``sys.path`` (subprocesses: ``PYTHONPATH``).
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[distillbench]\n{entry_name or module} = {module}\n")
    return root


def run_cli(*args: str, cwd: Path, env_extra: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the installed ``distillbench`` CLI in a subprocess."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", COLUMNS="200")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "distillbench.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@functools.cache
def builtins():
    """The registry of the built-in plugins alone (built once per test process)."""
    from distillbench.registry import load_registry

    return load_registry(entry_points=False)


def architecture(name: str):
    """A built-in ``Architecture`` as a run's registry hands it to a builder (for direct builder calls)."""
    return builtins().architecture(name)


def build_kernel(name: str, **params):
    """A built-in kernel built as a run builds it: its declared defaults with ``params`` validated on
    top, its architecture built by the registry."""
    comp = builtins().get("kernel", name)
    values = comp.default_params()
    values.update(params)
    return builtins().instantiate("kernel", name, {k: comp.param(k).validate(v) for k, v in values.items()})


DOCS_PLUGINS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def docs_architecture_site(root: Path) -> Path:
    """The docs' third-party architecture (``distillbench_convnet2``, read from docs/plugins.md)
    written as an installed distribution (source + ``*.dist-info``) under ``root``, a PYTHONPATH dir."""
    text = DOCS_PLUGINS.read_text()
    package = root / "distillbench_convnet2"
    package.mkdir(parents=True)
    for name in ("__init__.py", "network.py"):
        start = text.index(f"`distillbench_convnet2/{name}`")
        # fenced "python3": the rbf guide's two blocks stay the only "python" ones (tests read them)
        (package / name).write_text(re.search(r"```python3\n(.*?)```", text[start:], re.S).group(1))
    info = root / "distillbench_convnet2-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: distillbench-convnet2\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[distillbench]\nconvnet2 = distillbench_convnet2\n")
    return root


def stored_records(path) -> list:
    """Every row of the store at ``path``, read through the read-only reader."""
    from distillbench.store.database import open_existing

    reader = open_existing(path)
    try:
        return list(reader.records())
    finally:
        reader.close()
