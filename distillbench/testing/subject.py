"""What the conformance suite checks (a component or a bare value), how a failure reads, and the
registry of the installed plugins it resolves names in."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from distillbench.components.spec import Component


class ConformanceError(AssertionError):
    """A component breaks its contract. The message starts with ``<kind> contract:``.

    A subclass of ``AssertionError``, so pytest reports it as a plain test failure.
    """


class Subject:
    """What is being checked: a component (with resolved parameters) or a bare runtime value."""

    def __init__(self, kind: str, component: Component | None = None, params: Mapping[str, Any] | None = None):
        self.kind = kind
        self.component = component
        self.params = dict(params or {})

    def __str__(self) -> str:
        if self.component is None:
            return f"{self.kind} value"
        shown = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.kind} {self.component.name!r}" + (f" with {shown}" if shown else "")

    def fail(self, message: str, contract: str | None = None) -> ConformanceError:
        return ConformanceError(f"{contract or self.kind} contract: {message} [{self}]")

    def call(self, what: str, fn: Callable[..., Any], *args: Any, contract: str | None = None) -> Any:
        """``fn(*args)``; an exception becomes a ``ConformanceError`` naming ``what`` was called."""
        try:
            return fn(*args)
        except ConformanceError:
            raise
        except Exception as exc:
            text = str(exc).strip().splitlines()
            error = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
            raise self.fail(f"{what} raised {error}", contract) from exc


_REGISTRY = None


def registry():
    """The registry with every installed plugin (built once per process, conflicts tolerated)."""
    global _REGISTRY
    if _REGISTRY is None:
        from distillbench.registry import load_registry

        _REGISTRY = load_registry(strict=False)
    return _REGISTRY
