"""Plugin discovery: built-ins by name, then entry points one by one, each isolated.

``load_plugins()`` builds a fresh pluggy manager (a factory, so tests get fresh managers). The
built-in components register through the same ``distillbench_components`` hook as third-party
ones. Every plugin is described by a ``PluginInfo`` (package, version, entry point, status), which
``distillbench plugins`` lists. A third-party module that fails to import, or that declares a plugin
API this distillbench does not provide (an older one included: plugin API 1 is no longer
loaded), is recorded as a ``PluginFailure`` (one warning line for the user) instead of aborting
discovery, unlike ``load_setuptools_entrypoints``.

Environment:
  ``DISTILLBENCH_DISABLE_PLUGINS=name1,name2``  skip entry points by entry-point or package name.
  ``DISTILLBENCH_TRACE_PLUGINS=1``              trace discovery, hook calls and builds on stderr.

Nothing here imports JAX or any plugin's implementation: only the modules the entry points name.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from distillbench import API_VERSION, __version__, hookspecs
from distillbench.errors import did_you_mean

#: Modules registered before any entry point, in this order (like pytest's default_plugins).
BUILTIN_PLUGINS = ("distillbench_builtin",)
BUILTIN_SOURCE = "distillbench (built-in)"
DISABLE_ENV = "DISTILLBENCH_DISABLE_PLUGINS"
TRACE_ENV = "DISTILLBENCH_TRACE_PLUGINS"
#: Module attribute in which a plugin declares the plugin API version(s) it was written for.
API_ATTRIBUTE = "DISTILLBENCH_API"
#: Where a plugin author reads what changed between plugin APIs.
VERSIONING_DOC = "docs/plugins.md#6-versioning"

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be used: its package, the stage that failed and the error.

    ``stage`` is ``import`` (the entry point's module raised), ``api`` (it declares a plugin API
    this distillbench does not provide, or an invalid declaration) or ``registration`` (its
    ``distillbench_components`` hook raised or returned something other than ``Component``).
    """

    plugin: str
    stage: str
    error: str

    def line(self) -> str:
        if self.stage == "api":
            return f"plugin {self.plugin} was skipped: {self.error}"
        return f"plugin {self.plugin} failed at {self.stage} and was skipped: {self.error}"


@dataclass
class PluginInfo:
    """One plugin: a built-in module, an entry point of an installed package, or an extra object.

    ``status`` is ``loaded``, ``failed`` (see ``failure``), ``incompatible`` (plugin API mismatch)
    or ``disabled`` (named in ``DISTILLBENCH_DISABLE_PLUGINS``).
    """

    name: str  # unique name in the plugin manager (the entry-point name for entry points)
    dist: str  # distribution (pip package) name
    version: str = ""
    target: str = ""  # what is imported: "module" or "module:attribute"
    builtin: bool = False
    status: str = "loaded"
    failure: PluginFailure | None = None
    api: Any = None  # the plugin's DISTILLBENCH_API declaration, if any
    packages: frozenset[str] = frozenset()  # top-level modules of the plugin's code
    import_s: float = 0.0

    @property
    def source(self) -> str:
        """How users see the provider: ``distillbench (built-in)`` or ``dist version``."""
        if self.builtin:
            return BUILTIN_SOURCE
        return f"{self.dist} {self.version}" if self.version else self.dist


class Tracer:
    """Writes ``distillbench trace: ...`` lines to stderr when enabled (``DISTILLBENCH_TRACE_PLUGINS``)."""

    def __init__(self, enabled: bool = False, write: Callable[[str], Any] | None = None):
        self.enabled = enabled
        self._write = write

    def __call__(self, message: str) -> None:
        if self.enabled:
            self.raw(f"distillbench trace: {message}\n")

    def raw(self, text: str) -> None:
        if self.enabled:
            (self._write or sys.stderr.write)(text)


@dataclass
class LoadedPlugins:
    """A plugin manager plus what is known about every plugin met, loaded or not."""

    manager: pluggy.PluginManager
    plugins: list[PluginInfo] = field(default_factory=list)
    failures: list[PluginFailure] = field(default_factory=list)
    tracer: Tracer = field(default_factory=Tracer)
    _by_id: dict[int, PluginInfo] = field(default_factory=dict)

    def info_of(self, plugin: Any) -> PluginInfo:
        info = self._by_id.get(id(plugin))
        if info is None:  # registered on the manager by someone else
            name = self.manager.get_name(plugin) or repr(plugin)
            info = PluginInfo(name=name, dist=name, packages=frozenset(_packages_of(plugin)))
        return info

    def source_of(self, plugin: Any) -> str:
        return self.info_of(plugin).source

    def _add(self, info: PluginInfo, plugin: Any = None) -> None:
        self.plugins.append(info)
        if plugin is not None:
            self._by_id[id(plugin)] = info

    def _fail(self, info: PluginInfo, stage: str, error: str, status: str = "failed") -> None:
        failure = PluginFailure(info.source, stage, error)
        info.status, info.failure = status, failure
        self.failures.append(failure)
        self.tracer(f"{failure.line()}")


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def normalize(name: str) -> str:
    """PEP 503 normalization: ``Distillbench_RBF`` and ``distillbench-rbf`` are the same name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def disabled_names() -> set[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return {normalize(name.strip()) for name in raw.split(",") if name.strip()}


def tracing_enabled() -> bool:
    return os.environ.get(TRACE_ENV, "").strip().lower() in _TRUE


def api_versions(declared: Any) -> frozenset[int]:
    """The plugin API versions a ``DISTILLBENCH_API`` declaration names (int or collection of ints)."""
    items = [declared] if isinstance(declared, int) else declared
    if isinstance(items, (tuple, list, set, frozenset, range)) and items and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in items):
        return frozenset(items)
    raise TypeError(f"{API_ATTRIBUTE} must be a positive int or a tuple of them, e.g. {API_VERSION}; got {declared!r}")


def check_api(plugin: Any) -> str | None:
    """None when ``plugin`` works with this distillbench's plugin API, else the reason it does not."""
    declared = getattr(plugin, API_ATTRIBUTE, None)
    if declared is None:
        return None  # undeclared: assumed written for the current API
    try:
        versions = api_versions(declared)
    except TypeError as exc:
        return str(exc)
    if API_VERSION in versions:
        return None
    wanted = ", ".join(str(v) for v in sorted(versions))
    plural = "s" if len(versions) > 1 else ""
    if max(versions) < API_VERSION:
        return (f"it is written for distillbench plugin API{plural} {wanted}, which distillbench {__version__} no "
                f"longer loads; port it to API {API_VERSION}: {VERSIONING_DOC}")
    return (f"it requires distillbench plugin API{plural} {wanted}, but distillbench {__version__} provides "
            f"API {API_VERSION}; upgrade distillbench")


def _packages_of(obj: Any) -> set[str]:
    """Top-level module names of a plugin object (a module, a class instance, a function)."""
    names = set()
    for name in (getattr(obj, "__name__", None) if isinstance(obj, type(sys)) else None,
                 getattr(obj, "__module__", None), type(obj).__module__):
        if isinstance(name, str) and name and name not in ("builtins", "types"):
            names.add(name.split(".")[0])
    return names


def load_plugins(*, entry_points: bool = True, extra: tuple[Any, ...] = (),
                 trace: bool | None = None) -> LoadedPlugins:
    """Return a fresh manager with built-ins, ``extra`` plugin objects, then entry points.

    ``trace`` (default: ``DISTILLBENCH_TRACE_PLUGINS``) writes every discovery step to stderr.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    tracer = Tracer(tracing_enabled() if trace is None else trace)
    loaded = LoadedPlugins(manager, tracer=tracer)
    if tracer.enabled:  # hook calls made through ``manager.hook`` are traced by pluggy itself
        manager.trace.root.setwriter(tracer.raw)
        manager.enable_tracing()
    for module_name in BUILTIN_PLUGINS:
        t = time.perf_counter()
        module = importlib.import_module(module_name)
        manager.register(module, name=module_name)
        info = PluginInfo(name=module_name, dist="distillbench", version=__version__, target=module_name,
                          builtin=True, packages=frozenset({module_name.split(".")[0]}),
                          import_s=time.perf_counter() - t)
        loaded._add(info, module)
        tracer(f"registered built-in plugin {module_name} ({info.import_s * 1e3:.1f} ms)")
    for plugin in extra:
        name = getattr(plugin, "__name__", None) or repr(plugin)
        info = PluginInfo(name=name, dist=name, target=name, packages=frozenset(_packages_of(plugin)))
        reason = check_api(plugin)
        if reason:
            loaded._add(info)
            loaded._fail(info, "api", reason, status="incompatible")
            continue
        info.name = _unique_name(manager, name, name)
        if _register(loaded, plugin, info):
            tracer(f"registered plugin object {name}")
    if entry_points:
        _load_entry_points(loaded)
    return loaded


def _unique_name(manager: pluggy.PluginManager, name: str, dist: str) -> str:
    if not manager.has_plugin(name):
        return name
    return f"{dist}:{name}"  # two packages may use the same entry-point name: keep both


def _load_entry_points(loaded: LoadedPlugins) -> None:
    tracer = loaded.tracer
    disabled = disabled_names()
    t = time.perf_counter()
    eps = list(importlib.metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP))
    tracer(f"{len(eps)} entry point(s) in group {hookspecs.ENTRY_POINT_GROUP!r} "
           f"({(time.perf_counter() - t) * 1e3:.1f} ms)")
    for ep in eps:
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else ep.value.split(":")[0].split(".")[0]
        version = dist.version if dist is not None else ""
        info = PluginInfo(name=ep.name, dist=dist_name, version=version, target=ep.value,
                          packages=frozenset({ep.value.split(":")[0].split(".")[0]}))
        if normalize(ep.name) in disabled or normalize(dist_name) in disabled:
            info.status = "disabled"
            loaded._add(info)
            tracer(f"skipped entry point {ep.name} = {ep.value} ({info.source}): disabled by {DISABLE_ENV}")
            continue
        t = time.perf_counter()
        try:
            plugin = ep.load()
        except (Exception, SystemExit) as exc:  # a broken plugin must not take the others down
            info.import_s = time.perf_counter() - t
            loaded._add(info)
            loaded._fail(info, "import", one_line(exc))
            continue
        info.import_s = time.perf_counter() - t
        info.api = getattr(plugin, API_ATTRIBUTE, None)
        info.packages = info.packages | _packages_of(plugin)
        if _registered(loaded.manager, plugin):  # the same module under a second entry point
            tracer(f"entry point {ep.name} = {ep.value} ({info.source}) names an already registered plugin")
            continue
        reason = check_api(plugin)
        if reason:
            loaded._add(info)
            loaded._fail(info, "api", reason, status="incompatible")
            continue
        info.name = _unique_name(loaded.manager, ep.name, dist_name)
        if _register(loaded, plugin, info):
            tracer(f"loaded entry point {ep.name} = {ep.value} ({info.source}) in {info.import_s * 1e3:.1f} ms")


def _registered(manager: pluggy.PluginManager, plugin: Any) -> bool:
    return manager.is_registered(plugin)


def _register(loaded: LoadedPlugins, plugin: Any, info: PluginInfo) -> bool:
    """Register ``plugin``; a plugin whose hooks are wrong is recorded as a failure instead."""
    manager = loaded.manager
    try:
        manager.register(plugin, name=info.name)
    except Exception as exc:  # pluggy rejects a hook implementation with arguments its spec lacks
        loaded._add(info)
        loaded._fail(info, "registration", one_line(exc))
        return False
    hooks = [caller.name for caller in manager.get_hookcallers(plugin) or ()]
    unknown = [name for name in hooks if not getattr(manager.hook, name).has_spec()]
    reason = None
    if unknown:
        known = [name for name in dir(hookspecs) if name.startswith("distillbench_")]
        reason = (f"{unknown[0]} is not a distillbench hook{did_you_mean(unknown[0], known)}")
    elif not hooks:
        reason = "it implements no distillbench hook (decorate distillbench_components with distillbench.hookimpl)"
    if reason:
        manager.unregister(plugin)
        loaded._add(info)
        loaded._fail(info, "registration", reason)
        return False
    loaded._add(info, plugin)
    return True
