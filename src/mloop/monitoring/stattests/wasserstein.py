"""Wasserstein (earth mover's) distance normed by the reference standard deviation.

Evidently's choice for numeric columns with more than 5 distinct values and more than 1000
reference rows, with its default threshold 0.1 and its floor of 0.001 on the norm (constant
columns). Computed against the reference's quantile grid (exact on discrete columns' levels), so a
1M-row window costs one ``searchsorted``.
"""

from __future__ import annotations

import numpy as np

from mloop.monitoring.profile import ColumnProfile
from mloop.monitoring.stattests._base import Outcome, Window, register_stattest
from mloop.monitoring.stattests._binning import (
    aligned_counts,
    grid_counts,
    grid_wasserstein,
    level_wasserstein,
)

__all__ = ["wasserstein_test"]

# Null windows are simulated at most this large; beyond, the distance shrinks as 1/sqrt(rows).
SIM_ROWS = 2000
# Continuous draws cost rows x reps; 500 keep the 95th percentile within about 1% of its value.
NULL_REPS = 500


def _norm(ref: ColumnProfile) -> float:
    return max(ref.std or 0.0, 0.001)


def _levels(ref: ColumnProfile, win: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels, rc, cc, _ = aligned_counts(ref, win)
    levels = np.asarray(labels, dtype=np.float64)
    order = np.argsort(levels)
    return levels[order], rc[order] / max(rc.sum(), 1.0), cc[order]


def _null(ref: ColumnProfile, n: int, reps: int, rng: np.random.Generator) -> np.ndarray:
    m = ref.n_valid
    n_eff = m * n / (m + n)
    if ref.levels:
        levels, ref_p, _ = _levels(ref, Window(numeric=True, n=0, values=np.empty(0)))
        k = max(1, round(n_eff))
        draws = rng.multinomial(k, ref_p, size=reps) / k
        return level_wasserstein(levels, ref_p, draws) / _norm(ref)
    grid = np.asarray(ref.quantiles)
    sample = np.asarray(ref.sample, dtype=np.float64)
    k = max(1, min(round(n_eff), SIM_ROWS))
    # Beyond SIM_ROWS the draws are only rescaled; there the default threshold always wins, and
    # fewer draws suffice for the p-value's order of magnitude.
    reps = min(reps, NULL_REPS if k < SIM_ROWS else NULL_REPS // 2)
    sample_slots = np.searchsorted(grid, sample, side="left")
    slots = sample_slots[rng.integers(0, sample.size, size=(reps, k))]
    slots += (np.arange(reps) * (grid.size + 1))[:, None]
    counts = np.bincount(slots.ravel(), minlength=reps * (grid.size + 1)).reshape(reps, grid.size + 1)
    dist = grid_wasserstein(grid, counts, float(k), 0.0, 0.0) / _norm(ref)
    return np.asarray(dist * np.sqrt(k / n_eff))


@register_stattest(
    "wasserstein",
    title="Wasserstein distance (normed)",
    kind="distance",
    threshold=0.1,
    column_kinds=("numeric",),
    min_rows=1,
    null=_null,
)
def wasserstein_test(ref: ColumnProfile, win: Window) -> Outcome:
    values = win.values if win.values is not None else np.empty(0)
    if ref.levels:
        levels, ref_p, cur = _levels(ref, win)
        dist = float(level_wasserstein(levels, ref_p, cur / max(cur.sum(), 1.0))[0])
        return Outcome(dist / _norm(ref), None, "exact (levels)")
    grid = np.asarray(ref.quantiles)
    low, high = values[values < grid[0]], values[values > grid[-1]]
    below, above = float((grid[0] - low).sum()), float((high - grid[-1]).sum())
    dist = float(grid_wasserstein(grid, grid_counts(grid, values), float(values.size), below, above)[0])
    return Outcome(dist / _norm(ref), None, "quantile grid")
