"""Shared plumbing of the conformance suite: the error type, resolving and building a component."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from distillbench.components.spec import ALL_KINDS, Component
from distillbench.errors import ConfigError


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


def resolve(target: Any, kind: str | None = None) -> Component:
    """A ``Component`` from a ``Component``, ``"kind:name"``, ``(kind, name)`` or a name of ``kind``."""
    if isinstance(target, Component):
        if kind is not None and target.kind != kind:
            raise TypeError(f"expected a {kind} component, got {target.kind} {target.name!r}")
        return target
    if isinstance(target, tuple) and len(target) == 2:
        kind, name = target
    elif isinstance(target, str) and ":" in target and target.partition(":")[0] in ALL_KINDS:
        kind, _, name = target.partition(":")
    elif isinstance(target, str) and kind is not None:
        name = target
    else:
        raise TypeError(f"cannot resolve {target!r} to a component: pass a Component, 'kind:name' or (kind, name)")
    try:
        return registry().get(kind, name)
    except ConfigError as exc:
        raise LookupError(f"{exc} (is the plugin package installed? otherwise pass its Component)") from None


def resolve_params(component: Component, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The component's defaults updated with ``params``, each validated by its ``Param``."""
    resolved = component.default_params()
    subject = Subject(component.kind, component)
    for key, value in (params or {}).items():
        param = component.param(key)
        if param is None:
            declared = ", ".join(p.name for p in component.params) or "none"
            raise subject.fail(f"{key!r} is not a declared parameter (declared: {declared})", "parameter")
        try:
            resolved[key] = param.validate(value, owner=component.kind)
        except ConfigError as exc:
            raise subject.fail(f"{exc}", "parameter") from None
    return resolved


def build(target: Any, kind: str, params: Mapping[str, Any] | None, value_type: type | None,
          check_declaration: bool = True) -> tuple[Any, Subject]:
    """Build ``target`` (a component or an already built value of ``value_type``)."""
    if value_type is not None and isinstance(target, value_type):
        return target, Subject(kind)
    if kind == "objective" and callable(target) and not isinstance(target, (Component, str, tuple)):
        return target, Subject(kind)  # an objective's built value is its make(problem) function
    component = resolve(target, kind)
    if check_declaration:
        from distillbench.testing.params import check_params

        check_params(component)
    resolved = resolve_params(component, params)
    subject = Subject(kind, component, {k: v for k, v in resolved.items() if k in (params or {})})
    validate = getattr(component, "validate", None)
    problem = validate(dict(resolved)) if validate is not None else None
    if problem:  # e.g. a dataset whose files are not there: not a contract violation
        raise ValueError(f"cannot check {subject}: {problem}")
    builder = subject.call("importing the builder", component.resolve_builder)
    value = subject.call(f"build({_kwargs(resolved)})", lambda: builder(**resolved))
    if value_type is not None and not isinstance(value, value_type):
        raise subject.fail(f"build(**params) must return {value_type.__module__}.{value_type.__name__}, "
                           f"got {type(value).__name__}")
    return value, subject


def _kwargs(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


def signature_accepts(fn: Callable[..., Any], names: list[str]) -> str | None:
    """None when ``fn(**{name: ...})`` binds for exactly ``names``, else why not."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None  # builtins without a signature: cannot tell
    try:
        sig.bind(**{name: None for name in names})
    except TypeError as exc:
        return str(exc)
    return None


def enable_x64() -> None:
    """Run the checks as the runner runs components: with float64 enabled (and float64
    convolutions routed as a run routes them)."""
    from distillbench.runner.pipeline import enable_float64

    enable_float64()
