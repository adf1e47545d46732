"""The code's shape, kept by a test: no function in the package or the built-in plugin grows past
60 lines (small pipeline functions, each saying what it does). tests/test_data_commands.py keeps
the core from importing the built-in plugin."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (ROOT / "distillbench", ROOT / "plugins" / "distillbench_builtin")
MAX_LINES = 60


def _functions():
    for package in PACKAGES:
        for path in sorted(package.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield path.relative_to(ROOT), node


def test_no_function_is_longer_than_60_lines():
    long = [f"{path}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path, node in _functions() if node.end_lineno - node.lineno + 1 > MAX_LINES]
    assert not long, "split these into smaller functions:\n" + "\n".join(long)

