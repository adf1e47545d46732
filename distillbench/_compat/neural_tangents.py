"""Import neural-tangents without TensorFlow.

neural-tangents 0.6.5 imports ``neural_tangents.experimental`` at import time, which imports
TensorFlow (via ``jax.experimental.jax2tf``) only to offer a TF empirical-NTK helper that
distillbench never uses. That costs ~2.5 s per process on the reference CPU. We pre-register
an empty placeholder for that subpackage; touching any attribute of it raises a clear error.
Everything else (``stax``, ``batch``, ``predict``) is the unmodified library.
"""

from __future__ import annotations

import sys
import types

_EXPERIMENTAL = "neural_tangents.experimental"


class _NoExperimental(types.ModuleType):
    def __getattr__(self, name):
        raise AttributeError(
            f"{_EXPERIMENTAL}.{name} is disabled by distillbench (it imports TensorFlow); "
            "import neural_tangents in a fresh process without distillbench to use it"
        )


def import_neural_tangents():
    """Return the ``neural_tangents`` module, imported without its TensorFlow extras."""
    if "neural_tangents" not in sys.modules and _EXPERIMENTAL not in sys.modules:
        sys.modules[_EXPERIMENTAL] = _NoExperimental(_EXPERIMENTAL)
    import neural_tangents

    return neural_tangents
