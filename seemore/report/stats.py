"""Summaries over seeds and effect sizes against the baseline.

Relative change of a variant against the same backbone's baseline is computed per seed,
`100 * (variant_s - baseline_s) / |baseline_s|`, over the seeds both runs have (paired: a
seed fixes initialisation and data order for both). Its interval is the two-sided paired
Student t interval on those per-seed changes: mean ± t(1 - α/2, n - 1) · sd / √n.
With a single pair there is no interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from seemore.metrics import METRICS

CONFIDENCE = 0.95
INTERVAL_METHOD = (
    f"{CONFIDENCE:.0%} paired t interval (Student t, n−1 degrees of freedom) on the per-seed "
    "relative changes against the same seed's baseline"
)
LOWER_IS_BETTER = {name: metric.lower_is_better for name, metric in METRICS.items()}


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation (ddof 1) over seeds; std is None for n < 2."""

    mean: float | None
    std: float | None
    n: int


def summarize(values: list[float]) -> Summary:
    if not values:
        return Summary(None, None, 0)
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else None
    return Summary(float(array.mean()), std, len(array))


@dataclass(frozen=True)
class RelativeChange:
    """Mean per-seed relative change in percent; `low`/`high` None without an interval."""

    percent: float
    low: float | None
    high: float | None
    n: int

    @property
    def excludes_zero(self) -> bool:
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


def paired_relative_change(
    baseline: dict[int, float], variant: dict[int, float], confidence: float = CONFIDENCE
) -> RelativeChange | None:
    """Relative change over the seeds present in both; None without a usable pair (a
    baseline of exactly 0 has no relative change)."""
    seeds = sorted(seed for seed in set(baseline) & set(variant) if baseline[seed] != 0)
    if not seeds:
        return None
    changes = np.array([100.0 * (variant[s] - baseline[s]) / abs(baseline[s]) for s in seeds])
    mean = float(changes.mean())
    if len(changes) < 2:
        return RelativeChange(mean, None, None, 1)
    half_width = float(
        stats.t.ppf(0.5 + confidence / 2, df=len(changes) - 1)
        * changes.std(ddof=1)
        / math.sqrt(len(changes))
    )
    return RelativeChange(mean, mean - half_width, mean + half_width, len(changes))


def is_improvement(metric: str, change: float) -> bool:
    return change < 0 if LOWER_IS_BETTER[metric] else change > 0


def best_indices(metric: str, means: list[float | None]) -> set[int]:
    """Positions of the best mean (all ties); empty when no value is there."""
    present = [value for value in means if value is not None]
    if not present:
        return set()
    best = min(present) if LOWER_IS_BETTER[metric] else max(present)
    return {index for index, value in enumerate(means) if value == best}
