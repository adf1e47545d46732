"""Whole-plugin checks: every component a plugin module declares, and its installation."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from distillbench.components.spec import Component
from distillbench.testing._base import ConformanceError, resolve
from distillbench.testing.params import check_params


def check_component(component: Any, params: Mapping[str, Any] | None = None, **options: Any) -> Any:
    """Run the check of the component's kind (``check_kernel``, ``check_loss``...) and return its result.

    ``component``: a ``Component``, ``"kind:name"`` or ``(kind, name)`` of a registered one.
    ``options`` go to the kind's check (e.g. ``image_shape=`` for kernels, ``kernel=`` for objectives).
    """
    from distillbench.testing.architectures import check_architecture
    from distillbench.testing.datasets import check_dataset
    from distillbench.testing.kernels import check_kernel
    from distillbench.testing.launchers import check_launcher
    from distillbench.testing.losses import check_loss
    from distillbench.testing.objectives import check_evaluator, check_objective

    component = resolve(component)
    check = {"dataset": check_dataset, "kernel": check_kernel, "loss": check_loss,
             "objective": check_objective, "evaluator": check_evaluator,
             "architecture": check_architecture, "launcher": check_launcher}[component.kind]
    return check(component, params, **options)


def plugin_components(plugin: Any) -> list[Component]:
    """The components a plugin module's ``distillbench_components`` hook declares (checked)."""
    from distillbench.plugins import check_api

    hook = getattr(plugin, "distillbench_components", None)
    name = getattr(plugin, "__name__", repr(plugin))
    if hook is None or not callable(hook):
        raise ConformanceError(f"plugin contract: {name} has no distillbench_components hook")
    if not hasattr(hook, "distillbench_impl"):
        raise ConformanceError(f"plugin contract: {name}.distillbench_components must be decorated "
                               f"with distillbench.hookimpl")
    reason = check_api(plugin)
    if reason:
        raise ConformanceError(f"plugin contract: {name}: {reason}")
    try:
        items = list(hook() or ())
    except Exception as exc:
        raise ConformanceError(f"plugin contract: {name}.distillbench_components() raised "
                               f"{type(exc).__name__}: {exc}") from exc
    seen = set()
    for item in items:
        if not isinstance(item, Component):
            raise ConformanceError(f"plugin contract: {name}.distillbench_components() must return "
                                   f"distillbench.Component values, got {type(item).__name__}")
        if (item.kind, item.name) in seen:
            raise ConformanceError(f"plugin contract: {name} declares {item.kind} {item.name!r} twice")
        seen.add((item.kind, item.name))
    return items


def check_plugin(plugin: Any, params: Mapping[str, Mapping[str, Any]] | None = None,
                 skip: Iterable[str] = (), options: Mapping[str, Mapping[str, Any]] | None = None) -> list[Component]:
    """Check a plugin module: its hook and API declaration, then every component it declares.

    ``params``/``options``: per component, keyed ``"kind:name"``, the parameter overrides and the
    check options to use. ``skip``: ``"kind:name"`` of components whose declaration is checked
    but which are not built (e.g. a dataset that downloads). Returns the components.
    """
    params, options, skip = dict(params or {}), dict(options or {}), set(skip)
    components = plugin_components(plugin)
    declared = {f"{c.kind}:{c.name}" for c in components}
    unknown = (set(params) | set(options) | skip) - declared
    if unknown:
        raise ValueError(f"check_plugin: {', '.join(sorted(unknown))} not declared by the plugin "
                         f"(declared: {', '.join(sorted(declared))})")
    for component in components:
        key = f"{component.kind}:{component.name}"
        if key in skip:
            check_params(component)
        else:
            check_component(component, params.get(key), **options.get(key, {}))
    return components


def check_installed(package: str) -> list[str]:
    """Check that pip package ``package`` is installed with a working ``distillbench`` entry point.

    Loads plugins exactly as the CLI does. Fails when the package has no entry point, failed to
    load, was skipped (plugin API mismatch), disabled, or clashes with another plugin. Returns
    the ``"kind:name"`` of the components it provides.
    """
    from distillbench.plugins import normalize
    from distillbench.registry import load_registry

    reg = load_registry(strict=False)
    infos = [i for i in reg.plugins if not i.builtin and normalize(i.dist) == normalize(package)]
    if not infos:
        raise ConformanceError(f"plugin contract: package {package!r} is not installed with an entry point in "
                               f"the 'distillbench' group")
    provided = []
    for info in infos:
        if info.status != "loaded":
            why = info.failure.line() if info.failure else f"it is {info.status}"
            raise ConformanceError(f"plugin contract: {package}: {why}")
        provided += [f"{e.component.kind}:{e.component.name}" for e in reg.provided_by(info.name)]
    clashes = [c for c in reg.conflicts if any(i.source in c for i in infos)]
    if clashes:
        raise ConformanceError(f"plugin contract: {clashes[0]}")
    if not provided:
        raise ConformanceError(f"plugin contract: {package} is installed but registers no component")
    return provided
