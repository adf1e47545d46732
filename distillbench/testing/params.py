"""Declaration checks: the ``Component`` itself, its parameters and its builder's signature."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from distillbench.components.spec import ALL_KINDS, KINDS, Component
from distillbench.errors import ConfigError
from distillbench.params import AUTO, format_value
from distillbench.testing.subject import ConformanceError, Subject, registry


def check_params(component: Component) -> Component:
    """Check a component's declaration; raise ``ConformanceError`` (``parameter contract: ...``).

    * ``summary`` is one non-empty line; ``build`` resolves to a callable (``"module:function"``
      imports);
    * the builder accepts every declared parameter as a keyword and needs no undeclared one;
    * every default can be written on the command line and parses back to itself;
    * ``str`` parameters naming another component (``component="kernel"``) default to a
      registered one (or to ``auto`` with a registered ``auto=`` fallback); an objective's ``defaults`` name registered components of valid kinds;
    * ``check(choices)`` and ``validate(params)`` (for the defaults) return ``None`` or a string.
    """
    if not isinstance(component, Component):
        raise ConformanceError(f"parameter contract: expected a distillbench.Component, got {type(component).__name__}")
    subject = Subject(component.kind, component)
    if not component.summary or "\n" in component.summary:
        raise subject.fail("summary must be one non-empty line (distillbench list shows it)", "parameter")
    builder = subject.call(f"importing the builder {component.build!r}", component.resolve_builder, contract="parameter")
    if not callable(builder):
        raise subject.fail(f"build {component.build!r} is not callable", "parameter")
    names = [p.name for p in component.params]
    problem = signature_accepts(builder, names)
    if problem:
        raise subject.fail(f"the builder must accept exactly the declared parameters ({', '.join(names) or 'none'}) "
                           f"as keywords: {problem}", "parameter")
    for p in component.params:
        text = format_value(p.default, exact=True)
        try:
            parsed = p.parse(text, owner=component.kind)
        except ConfigError as exc:
            raise subject.fail(f"default of {component.kind}.{p.name} cannot be set on the command line: {exc}",
                               "parameter") from None
        if parsed != p.default:
            raise subject.fail(f"default of {component.kind}.{p.name}={p.default!r} parses back as {parsed!r}",
                               "parameter")
    _check_references(component, subject)
    return component


def _check_references(component: Component, subject: Subject) -> None:
    reg = registry()
    for p in component.params:
        if p.component is not None:
            if p.component not in ALL_KINDS:
                raise subject.fail(f"{component.kind}.{p.name} names kind {p.component!r}, not one of "
                                   f"{', '.join(ALL_KINDS)}", "parameter")
            for name, what in ((p.default, "default"), (p.auto, "auto fallback")):
                if name is not None and name != AUTO and name not in reg.names(p.component):
                    raise subject.fail(f"{what} {name!r} of {component.kind}.{p.name} is not a registered "
                                       f"{p.component}", "parameter")
            if p.default == AUTO and p.auto is None:
                raise subject.fail(f"default 'auto' of {component.kind}.{p.name} needs its fallback: "
                                   "Param(..., auto=NAME)", "parameter")
    for kind, name in component.defaults.items():
        if kind not in KINDS or kind == component.kind:
            raise subject.fail(f"defaults may name the other kinds ({', '.join(KINDS)}), not {kind!r}", "parameter")
        if name not in reg.names(kind):
            raise subject.fail(f"defaults name {kind} {name!r}, which is not registered", "parameter")
    validate = getattr(component, "validate", None)
    if validate is not None:
        result = subject.call("validate(default parameters)", validate, component.default_params(), contract="parameter")
        if result is not None and not isinstance(result, str):
            raise subject.fail(f"validate(params) must return None or a problem string, got {type(result).__name__}",
                               "parameter")
    if component.check is not None:
        choices = {**_default_names(), **component.defaults, component.kind: component.name}
        result = subject.call(f"check({choices})", component.check, choices, contract="parameter")
        if result is not None and not isinstance(result, str):
            raise subject.fail(f"check(choices) must return None or a reason string, got {type(result).__name__}",
                               "parameter")


def _default_names() -> dict[str, str]:
    """A run's component names as the installed plugins default them (else the first registered)."""
    from distillbench.runner.plan import default_component
    names = {}
    for kind in KINDS:
        try:
            names[kind] = default_component(registry(), kind)
        except ConfigError:  # no default, or two claims: any registered name will do for check()
            names[kind] = next(iter(registry().names(kind)), kind)
    return names


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
