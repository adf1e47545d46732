"""Errors that the CLI turns into one line and exit code 2 (bad input), kept JAX-free."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ConfigError(ValueError):
    """Bad user input: an unknown name, a wrong type, an out-of-range value.

    The message is a single line that says what is wrong and what would be right.
    """


class PluginError(RuntimeError):
    """A plugin conflict that makes the component set ambiguous (e.g. a duplicate name)."""


class ContractError(PluginError):
    """A component built a value that breaks its kind's contract (found before any compute).

    The message is one line that starts with the component and its package:
    ``loss 'x' (x-loss 0.1): Loss.logits must be a function, got NoneType``.
    """


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """Return ' (did you mean X?)' when a close candidate exists, else a list of valid names."""
    candidates = sorted(set(candidates))
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    if candidates:
        return f" (choose from: {', '.join(candidates)})"
    return ""
