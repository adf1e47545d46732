"""The generic finite network of an architecture that gives only a trunk (``default_network``).

A trunk (NHWC images -> ``(n, F)`` features) under a Dense readout: ``__call__(x, train)`` returns
``(logits, features)``, the contract of ``Architecture.network``. ``train`` is accepted and unused
(no normalization, no dropout).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn


class Classifier(nn.Module):
    trunk: Any
    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        features = self.trunk(x)
        return nn.Dense(self.num_classes, dtype=features.dtype, param_dtype=features.dtype)(features), features
