"""Errors that the CLI turns into one line and exit code 2 (bad input), kept JAX-free."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any

#: Longest user value an error line echoes back (a 50 MB campaign value is not worth a 100 MB line).
SHOWN = 80
#: Any run of non-blank characters longer than this in a ``ConfigError`` is cut: a safety net for the
#: messages that echo a value without :func:`shown` (long enough for real paths).
_LONGEST_WORD = 400
_LONGEST_LINE = 4000


def shown(value: Any, limit: int = SHOWN) -> str:
    """``repr(value)`` for an error line, cut to about ``limit`` characters with an ellipsis and the size."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = len(value) if isinstance(value, str) else len(text)
    return f"{text[:max(limit - 16, 8)]}…({size} chars)"


def _cut_word(match: re.Match) -> str:
    word = match.group(0)
    return f"{word[:_LONGEST_WORD // 2]}…({len(word)} chars)"


def clip_message(message: str) -> str:
    """A message with no overlong word and a bounded length, so that it stays one readable line."""
    message = re.sub(rf"\S{{{_LONGEST_WORD + 1},}}", _cut_word, message)
    if len(message) > _LONGEST_LINE:
        message = f"{message[:_LONGEST_LINE - 1000]} … {message[-900:]}"
    return message


class ConfigError(ValueError):
    """Bad user input: an unknown name, a wrong type, an out-of-range value.

    The message is a single line that says what is wrong and what would be right; values it echoes
    are cut (:func:`clip_message`), however large the input. ``key`` is the setting it is about as
    users write it (``kernel.arch``, ``seed``, ``kernel`` for a component name), or ``None``: a
    campaign error names its grid and this key (``FILE [grid.NAME] KEY: ...``).
    """

    def __init__(self, message: Any = "", *args: Any, key: str | None = None) -> None:
        super().__init__(clip_message(str(message)), *args)
        self.key = key


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
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6) if len(word) <= SHOWN else []
    if close:
        return f" (did you mean '{close[0]}'?)"
    if candidates:
        return f" (choose from: {', '.join(candidates)})"
    return ""
