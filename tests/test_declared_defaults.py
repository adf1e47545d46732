"""A built-in component's builder and its declaration give the same defaults.

Runs take every value from the declaration (``Component.default_params``), but a builder called
directly (tests, notebooks, a plugin author copying one) falls back on its own keyword defaults:
the two must not drift apart (FRePo's ``steps`` once did)."""

import importlib
import inspect

import pytest

from distillbench.registry import load_registry


def _builders():
    for entry in load_registry(entry_points=False).entries():
        component = entry.component
        if isinstance(component.build, str) and ":" in component.build:
            yield pytest.param(component, id=f"{component.kind}-{component.name}")


@pytest.mark.parametrize("component", list(_builders()))
def test_builder_keyword_defaults_equal_the_declared_ones(component):
    module, _, name = component.build.partition(":")
    signature = inspect.signature(getattr(importlib.import_module(module), name))
    for param in component.params:
        keyword = signature.parameters.get(param.name)
        if keyword is not None and keyword.default is not inspect.Parameter.empty:
            assert keyword.default == param.default, (
                f"{component.kind} {component.name}: {name}({param.name}={keyword.default!r}) but declared "
                f"{param.default!r}")
