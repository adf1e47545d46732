"""Confidence intervals over seeds and the significance of a difference between two rows.

* **Interval** (95%): with ``n >= T_MIN_SEEDS`` seeds a Student t-interval,
  ``mean ± t(0.975, n-1) · s/√n``; with 2 to ``T_MIN_SEEDS - 1`` seeds a percentile bootstrap of the
  mean (``BOOTSTRAP_RESAMPLES`` resamples, a fixed generator seed so a report is reproducible),
  which is narrower than the t-interval and optimistic at such n: the method is named with every
  interval; with one seed none.
* **Comparison** with another row: a paired t-test on the per-seed differences when both rows hold
  the same seeds (each seed's set starts from the same real images, so pairing removes that
  variance), Welch's t-test otherwise; two-sided p-value. Fewer than two seeds on either side:
  no test. The t distribution is scipy's (scipy comes with scikit-learn, a dependency).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

LEVEL = 0.95
ALPHA = 1.0 - LEVEL
T_MIN_SEEDS = 5
BOOTSTRAP_RESAMPLES = 10_000
_BOOTSTRAP_SEED = 20240531
T_INTERVAL, BOOTSTRAP = "t", "bootstrap"
PAIRED, WELCH = "paired t", "Welch t"


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t as student

    return float(student.sf(t, df))


def t_quantile(p: float, df: float) -> float:
    from scipy.stats import t as student

    return float(student.ppf(p, df))


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    method: str  # T_INTERVAL or BOOTSTRAP


def confidence_interval(values: Sequence[float]) -> Interval | None:
    """The 95% interval of the mean of ``values`` (None for fewer than two)."""
    values = [float(v) for v in values]
    n = len(values)
    if n < 2:
        return None
    mean = statistics.fmean(values)
    if n >= T_MIN_SEEDS:
        half = t_quantile(1 - ALPHA / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
        return Interval(mean - half, mean + half, T_INTERVAL)
    import numpy as np

    rng = np.random.default_rng(_BOOTSTRAP_SEED)
    means = np.asarray(values)[rng.integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))].mean(axis=1)
    low, high = np.quantile(means, [ALPHA / 2, 1 - ALPHA / 2])
    return Interval(float(low), float(high), BOOTSTRAP)


@dataclass(frozen=True)
class Comparison:
    p_value: float
    test: str  # PAIRED or WELCH
    diff: float  # mean of a minus mean of b

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


def _two_sided(t: float, df: float) -> float:
    return min(1.0, 2.0 * t_sf(abs(t), df))


def _degenerate(diff: float) -> float:
    """p when the spread is zero: equal means are no evidence of a difference, unequal ones are certain."""
    return 1.0 if diff == 0 else 0.0


def compare(a: dict[int, float], b: dict[int, float]) -> Comparison | None:
    """Test whether rows ``a`` and ``b`` (seed -> accuracy) differ; None when either has < 2 seeds."""
    if len(a) < 2 or len(b) < 2:
        return None
    diff = statistics.fmean(a.values()) - statistics.fmean(b.values())
    if set(a) == set(b):
        d = [a[s] - b[s] for s in sorted(a)]
        sd = statistics.stdev(d)
        if sd == 0:
            return Comparison(_degenerate(statistics.fmean(d)), PAIRED, diff)
        t = statistics.fmean(d) / (sd / math.sqrt(len(d)))
        return Comparison(_two_sided(t, len(d) - 1), PAIRED, diff)
    va, vb = statistics.variance(a.values()) / len(a), statistics.variance(b.values()) / len(b)
    if va + vb == 0:
        return Comparison(_degenerate(diff), WELCH, diff)
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite
    return Comparison(_two_sided(t, df), WELCH, diff)
