"""Typed, documented component parameters.

A component declares its parameters up front (name, type, default, one-line doc, bounds) so that
the CLI can parse ``kernel.width=128`` from text, validate it before any compute, list it in
``distillbench list`` and record the resolved value, all without importing JAX.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from distillbench.errors import ConfigError, shown

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_TYPES = (int, float, bool, str)

#: Every int parameter fits a signed 64-bit integer: SQLite stores no larger one, and an int that
#: does not fit would pass planning and crash when its finished run is saved.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
#: Seeds are unsigned 32-bit: what ``jax.random.PRNGKey`` holds without 64-bit mode and what every
#: seeded component can use as is. Declare seed parameters with ``min=0, max=SEED_MAX``.
SEED_MAX = 2**32 - 1
#: Longest text shown back in an error message (a 5,000-digit number is not worth echoing).
_SHOWN = 40


def _shown(value: Any) -> str:
    return shown(value, _SHOWN)


def format_value(value: Any, exact: bool = False) -> str:
    """How a user writes ``value`` on the command line: ``true``, ``none``, ``0.001``.

    Floats use ``:g`` for display; ``exact=True`` uses ``repr`` so the text parses back unchanged.
    """
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if exact else f"{value:g}"
    return str(value)


#: The value of a component reference (``Param(auto=...)``) that stands for the run kernel's one.
AUTO = "auto"

#: float parameters without bounds of their own stay within float32's range: components compute
#: in float32 (images, features), where a larger value overflows into warnings and NaN at run time
FLOAT32_MAX = 3.4028234663852886e38

#: The ``Param.role`` of an objective's ``bool`` saying whether it learns the support's labels.
LEARNS_LABELS = "learns_labels"
#: The ``Param.role`` of an objective's ``float`` that is its KRR ridge (``reg · tr(K_SS)/|S|``): the
#: ridge a KRR evaluator scores its sets with unless the user sets the evaluator's own.
RIDGE = "ridge"
#: What a report or an evaluator may read a parameter as (``Param.role``), with the type such a
#: parameter has.
PARAM_ROLES = {LEARNS_LABELS: bool, RIDGE: float}


@dataclass(frozen=True)
class Param:
    """One parameter of a component.

    Attributes:
      name: the key users write after the kind, as in ``objective.steps``.
      type: one of ``int``, ``float``, ``bool``, ``str``.
      default: value used when the user gives none (``None`` only when ``nullable``).
      doc: one line saying what it does.
      choices: allowed values, if the set is closed.
      min, max: inclusive bounds for numbers; ``min_open=True`` makes the lower bound strict.
        Ints are always held to ``[INT_MIN, INT_MAX]`` (signed 64-bit) as well.
      nullable: accept ``none`` (stored as ``None``), meaning "decide automatically".
      component: for a ``str`` naming another component, its kind (e.g. ``"kernel"``); the
        planner then checks the name is registered, with a did-you-mean, before any compute. A
        reference to an ``architecture`` reaches the builder built: the ``Architecture`` value,
        built once by the run's registry (the run records its name).
      auto: for a component reference, the name the value ``auto`` falls back to: ``auto`` is the
        run kernel's component of that kind (the kernel parameter naming one), else this one
        (``distillbench.runner.plan.auto_reference`` is the rule).
      identity: whether the value is part of a run's identity (its ``run_id``). ``False`` for
        values that cannot change results, such as where the data files live; they are still
        recorded with the run. ``"set"``: only when set to something other than the default, for a
        parameter added after runs were stored whose default reproduces what they did (so their
        run_ids, and the cache, stay valid).
      role: what a report reads this parameter as (``PARAM_ROLES``), whatever its name:
        ``"learns_labels"``, a ``bool`` of an objective saying whether it learns the support's
        labels (the leaderboard's labels column: learned / fixed); ``"ridge"``, a ``float`` of an
        objective that is its KRR ridge (``EvalContext.ridge``: what ``krr`` scores with by default).
    """

    #: Bounds for plugin authors, reachable from the public ``Param``: ``max=Param.SEED_MAX``.
    SEED_MAX = SEED_MAX
    INT_MAX = INT_MAX

    name: str
    type: type
    default: Any
    doc: str
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    nullable: bool = False
    component: str | None = None
    identity: bool | str = True
    auto: str | None = None
    role: str | None = None

    def __post_init__(self):
        if self.type not in _TYPES:
            raise TypeError(f"Param {self.name!r}: type must be one of int, float, bool, str")
        if not self.doc or "\n" in self.doc:
            raise TypeError(f"Param {self.name!r}: doc must be a single non-empty line")
        self.validate(self.default, owner="default of")
        if self.identity not in (True, False, "set"):
            raise TypeError(f"Param {self.name!r}: identity must be True, False or 'set'")
        if self.auto is not None and (self.component is None or self.type is not str):
            raise TypeError(f"Param {self.name!r}: auto is the fallback of a component reference (component=...)")
        if self.role is not None and PARAM_ROLES.get(self.role) is not self.type:
            roles = ", ".join(f"{r} ({t.__name__})" for r, t in PARAM_ROLES.items())
            raise TypeError(f"Param {self.name!r}: role must be one of {roles}, on a parameter of that type")

    def in_identity(self, value: Any) -> bool:
        """Whether ``value`` of this parameter is part of a run's identity (see ``identity``)."""
        return self.identity is True or (self.identity == "set" and value != self.default)

    # -- parsing -----------------------------------------------------------------------------
    def parse(self, text: str, owner: str = "") -> Any:
        """Convert the command-line text ``text`` to a validated value of this parameter."""
        where = f"{owner}.{self.name}" if owner else self.name
        raw = text.strip()
        if self.nullable and raw.lower() in ("none", "null", "auto"):
            return None
        try:
            if self.type is bool:
                low = raw.lower()
                if low in _TRUE:
                    value: Any = True
                elif low in _FALSE:
                    value = False
                else:
                    raise ValueError
            elif self.type is int:
                value = int(raw)
            elif self.type is float:
                value = float(raw)
            else:
                value = raw
        except ValueError:
            raise ConfigError(f"{where}={_shown(text)} is not a valid {self.type.__name__} ({self.describe_type()})",
                              key=where) from None
        return self.validate(value, owner=owner)

    def validate(self, value: Any, owner: str = "") -> Any:
        """Check bounds and choices; return the value (ints are accepted for floats).

        A bad value raises ``ConfigError`` whose ``key`` is ``owner.name`` (``kernel.width``)."""
        where = f"{owner}.{self.name}" if owner and owner != "default of" else self.name
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        problem = self._problem(value, where)
        if problem:
            raise ConfigError(problem, key=where)
        return value

    def _problem(self, value: Any, where: str) -> str | None:
        """What is wrong with ``value`` (``where``: the key shown), or ``None``."""
        if value is None:
            return None if self.nullable else f"{where} must be set ({self.describe_type()})"
        if not isinstance(value, self.type) or (self.type is int and isinstance(value, bool)):
            return f"{where}={_shown(value)} must be a {self.type.__name__}"
        if self.type is float and not math.isfinite(value):
            return f"{where}={value!r} must be a finite number"
        if self.type is float and abs(value) > FLOAT32_MAX and (self.max is None if value > 0 else self.min is None):
            return (f"{where}={value:g} is larger than float32 holds (+-{FLOAT32_MAX:.3g}), the precision "
                    "components compute in; give a smaller value")
        if self.choices is not None and value not in self.choices:
            opts = ", ".join(str(c) for c in self.choices)
            return f"{where}={_shown(value)} is not allowed (choose from: {opts})"
        if self.min is not None and (value < self.min or (self.min_open and value == self.min)):
            op = ">" if self.min_open else ">="
            return f"{where}={_shown(value)} is out of range (must be {op} {self._bound(self.min)})"
        if self.max is not None and value > self.max:
            return f"{where}={_shown(value)} is out of range (must be <= {self._bound(self.max)})"
        if self.type is int and not INT_MIN <= value <= INT_MAX:
            return (f"{where}={_shown(value)} is out of range (integers must lie within +-2**63, "
                    "what the results store holds)")
        return None

    def describe_type(self) -> str:
        """Short human description: ``int >= 1``, ``one of mse, platt``, ``float > 0 or none``."""
        if self.choices is not None:
            text = "one of " + ", ".join(str(c) for c in self.choices)
        else:
            text = self.type.__name__
            if self.type is bool:
                text = "true/false"
            if self.min is not None:
                text += f" {'>' if self.min_open else '>='} {self._bound(self.min)}"
            if self.max is not None:
                text += f" <= {self._bound(self.max)}"
        if self.nullable:
            text += " or none"
        return text

    def _bound(self, bound: float) -> str:
        """A bound as users write it: exact for ints (``4294967295``), ``:g`` for floats."""
        return str(int(bound)) if self.type is int else f"{bound:g}"
