"""Shared plumbing of the conformance suite: resolving and building a component."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from distillbench.components.spec import ALL_KINDS, Component
from distillbench.errors import ConfigError
from distillbench.params import AUTO
from distillbench.testing.params import check_params
from distillbench.testing.subject import ConformanceError, Subject, registry

__all__ = ["ConformanceError", "Subject", "build", "builder_params", "enable_x64", "registry", "resolve",
           "resolve_params"]


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


def builder_params(component: Component, resolved: Mapping[str, Any],
                   run_references: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``resolved`` as the builder takes them, as a run hands them: a reference set to ``auto`` is
    the run kernel's (``run_references``: kind -> name, e.g. ``{"architecture": "convnet3"}``),
    else its declared fallback (``Param.auto``); the architectures named arrive built."""
    params = dict(resolved)
    for p in component.params:
        if p.auto is not None and params.get(p.name) == AUTO:
            params[p.name] = (run_references or {}).get(p.component) or p.auto
    return registry().with_architectures(component, params)


def build(target: Any, kind: str, params: Mapping[str, Any] | None, value_type: type | None,
          check_declaration: bool = True, run_references: Mapping[str, str] | None = None) -> tuple[Any, Subject]:
    """Build ``target`` (a component or an already built value of ``value_type``);
    ``run_references`` as in :func:`builder_params`."""
    if value_type is not None and isinstance(target, value_type):
        return target, Subject(kind)
    if kind == "objective" and callable(target) and not isinstance(target, (Component, str, tuple)):
        return target, Subject(kind)  # an objective's built value is its make(problem) function
    component = resolve(target, kind)
    if check_declaration:
        check_params(component)
    resolved = resolve_params(component, params)
    subject = Subject(kind, component, {k: v for k, v in resolved.items() if k in (params or {})})
    validate = getattr(component, "validate", None)
    problem = validate(dict(resolved)) if validate is not None else None
    if problem:  # e.g. a dataset whose files are not there: not a contract violation
        raise ValueError(f"cannot check {subject}: {problem}")
    builder = subject.call("importing the builder", component.resolve_builder)
    built = subject.call("building the architectures it names", builder_params, component, resolved, run_references)
    value = subject.call(f"build({_kwargs(resolved)})", lambda: builder(**built))
    if value_type is not None and not isinstance(value, value_type):
        raise subject.fail(f"build(**params) must return {value_type.__module__}.{value_type.__name__}, "
                           f"got {type(value).__name__}")
    return value, subject


def _kwargs(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


def enable_x64() -> None:
    """Run the checks as the runner runs components: with float64 enabled (and float64
    convolutions routed as a run routes them)."""
    from distillbench.runner.pipeline import enable_float64

    enable_float64()
