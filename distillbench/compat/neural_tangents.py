"""Import neural-tangents 0.6.5 (its last release) on every supported jax, without TensorFlow.

Two things stand between the library and a modern stack, and both are fixed here before the
first ``import neural_tangents``:

* TensorFlow. ``neural_tangents/__init__`` imports ``neural_tangents.experimental``, which
  imports TensorFlow (``jax.experimental.jax2tf``) only for a TF empirical-NTK helper distillbench
  never uses (~2.5 s per process, and a 2 GB dependency). We pre-register an empty placeholder
  for that subpackage; touching any attribute of it raises a clear error.
* Names newer jax removed. The library imports, at import time, ``Jaxpr``, ``JaxprEqn``,
  ``Literal``, ``Var``, ``Primitive`` from ``jax.core`` (moved to ``jax.extend.core`` in jax 0.6+),
  ``safe_map``/``safe_zip`` from ``jax.util`` (module gone in jax 0.8+) and
  ``jax.interpreters.ad.zeros_like_p`` (a primitive jax 0.6+ no longer has; NT only uses it as
  a key of its empirical-kernel rule tables). Each missing name is provided from where jax keeps
  it now; names jax still has are never touched. ``stax`` kernels do not run any of this code:
  tests/test_compat.py checks their values against reference values computed on jax 0.5.3.

``ImportError`` from :func:`import_neural_tangents` means the optional dependency is absent;
:data:`MISSING_HINT` says how to install it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
import warnings

_EXPERIMENTAL = "neural_tangents.experimental"

#: One line for users (and errors) when neural-tangents is not installed.
MISSING_HINT = (
    "neural-tangents is not installed; install the extra: pip install 'distillbench[neural-tangents]' "
    "(or, without TensorFlow: pip install --no-deps neural-tangents==0.6.5 frozendict)"
)


class _NoExperimental(types.ModuleType):
    def __getattr__(self, name):
        raise AttributeError(
            f"{_EXPERIMENTAL}.{name} is disabled by distillbench (it imports TensorFlow); "
            "import neural_tangents in a fresh process without distillbench to use it"
        )


def _first(*candidates):
    """The first ``module:attr`` of ``candidates`` that exists, else None."""
    for spec in candidates:
        module, _, attr = spec.partition(":")
        try:
            value = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
        return value
    return None


def _has(module, name: str) -> bool:
    with warnings.catch_warnings():  # jax 0.5 warns on the names it deprecates, while still having them
        warnings.simplefilter("ignore", DeprecationWarning)
        return hasattr(module, name)


def _provide(module, name: str, *candidates) -> str | None:
    """Set ``module.name`` from the first candidate when jax no longer has it; the name if set."""
    if _has(module, name):
        return None
    value = _first(*candidates)
    if value is None:
        return None
    setattr(module, name, value)
    return name


def _safe_map(f, *args):
    args = list(map(list, args))
    n = len(args[0])
    for arg in args[1:]:
        if len(arg) != n:
            raise ValueError(f"length mismatch: {list(map(len, args))}")
    return list(map(f, *args))


def _safe_zip(*args):
    args = list(map(list, args))
    n = len(args[0])
    for arg in args[1:]:
        if len(arg) != n:
            raise ValueError(f"length mismatch: {list(map(len, args))}")
    return list(zip(*args))


def patch_jax_for_neural_tangents() -> list[str]:
    """Provide the jax names neural-tangents 0.6.5 imports and newer jax removed.

    Returns what was provided (empty on jax 0.5.x, which has them all). Idempotent.
    """
    import jax.core
    from jax.interpreters import ad

    added = []
    for name in ("Jaxpr", "JaxprEqn", "Literal", "Var", "Primitive", "ShapedArray", "Value",
                 "AbstractValue", "eval_context"):
        added.append(_provide(jax.core, name, f"jax.extend.core:{name}", f"jax._src.core:{name}"))
    if "jax.util" not in sys.modules:
        try:
            importlib.import_module("jax.util")
        except ImportError:
            util = types.ModuleType("jax.util", "distillbench shim: what neural-tangents imports from jax.util")
            sys.modules["jax.util"] = util
            jax.util = util
            added.append("jax.util")
    util = sys.modules["jax.util"]
    for name, fallback in (("safe_map", _safe_map), ("safe_zip", _safe_zip)):
        if not _has(util, name):
            setattr(util, name, _first(f"jax._src.util:{name}") or fallback)
            added.append(f"jax.util.{name}")
    if not _has(ad, "zeros_like_p"):
        primitive = _first("jax.extend.core:Primitive", "jax._src.core:Primitive")
        # A placeholder primitive: neural-tangents registers empirical-kernel rules under this
        # key; no jaxpr of a modern jax contains it, so those rules are simply never looked up.
        ad.zeros_like_p = primitive("zeros_like")
        added.append("zeros_like_p")
    return [a for a in added if a]


def import_neural_tangents():
    """Return the ``neural_tangents`` module, imported without TensorFlow on any supported jax.

    Raises ``ImportError`` (with :data:`MISSING_HINT`) when neural-tangents is not installed.
    """
    if "neural_tangents" in sys.modules:
        return sys.modules["neural_tangents"]
    if not has_neural_tangents():
        raise ImportError(MISSING_HINT)
    if _EXPERIMENTAL not in sys.modules:
        sys.modules[_EXPERIMENTAL] = _NoExperimental(_EXPERIMENTAL)
    patch_jax_for_neural_tangents()
    import neural_tangents

    return neural_tangents


def has_neural_tangents() -> bool:
    """Whether neural-tangents is installed (without importing it)."""
    if "neural_tangents" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("neural_tangents") is not None
    except (ImportError, ValueError):
        return False
