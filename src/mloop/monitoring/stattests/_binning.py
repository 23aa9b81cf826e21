"""Shared, vectorized ways of putting a reference profile and a window on common ground.

* :func:`aligned_counts` — frequencies over the union of reference and current levels (categories,
  or the distinct values of a discrete numeric column), so unseen values are counted, never dropped;
  continuous numeric columns fall back to bins on the reference's quantiles.
* :func:`grid_counts` / :func:`grid_wasserstein` / :func:`grid_ks` — continuous numeric columns
  against the reference's fine quantile grid: one ``searchsorted`` per column, O(n log G).
* :func:`fill_zeros` — Evidently's rule for empty bins, kept so verdicts match it.
"""

from __future__ import annotations

import numpy as np

from mloop.monitoring.profile import ColumnProfile
from mloop.monitoring.stattests._base import Window

__all__ = [
    "aligned_counts",
    "fill_zeros",
    "grid_counts",
    "grid_ks",
    "grid_wasserstein",
    "level_wasserstein",
    "quantile_bin_counts",
]


def fill_zeros(percents: np.ndarray) -> np.ndarray:
    """Replace empty bins like Evidently does (so log ratios stay finite), along the last axis."""
    out = np.array(percents, dtype=np.float64, copy=True)
    positive = np.where(out > 0, out, np.inf).min(axis=-1, keepdims=True)
    fill = np.where(positive <= 0.0001, positive / 10**6, 0.0001)
    fill = np.where(np.isinf(positive), 0.0001, fill)
    return np.where(out == 0, np.broadcast_to(fill, out.shape), out)


def _numeric_level_counts(
    levels: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts of ``values`` on the sorted ``levels`` plus the distinct values that are not levels."""
    pos = np.searchsorted(levels, values)
    safe = np.minimum(pos, levels.size - 1)
    hit = levels[safe] == values
    on_levels = np.bincount(safe[hit], minlength=levels.size)
    extra, extra_counts = np.unique(values[~hit], return_counts=True)
    return on_levels, extra, extra_counts


def aligned_counts(ref: ColumnProfile, win: Window) -> tuple[list[object], np.ndarray, np.ndarray, int]:
    """(labels, reference counts, current counts, current count of unseen values) over the union."""
    labels: list[object]
    if ref.numeric and not ref.levels:
        labels, rc, cc = quantile_bin_counts(ref, win)
        return labels, rc, cc, 0
    ref_counts = np.asarray(ref.level_counts, dtype=np.float64)
    if ref.numeric:
        levels = np.asarray(ref.levels, dtype=np.float64)
        values = win.values if win.values is not None else np.empty(0)
        on_levels, extra, extra_counts = _numeric_level_counts(levels, values)
        labels = [*ref.levels, *extra.tolist()]
        cur = np.concatenate((on_levels, extra_counts)).astype(np.float64)
        ref_all = np.concatenate((ref_counts, np.zeros(extra.size)))
        return labels, ref_all, cur, int(extra_counts.sum())
    counts = win.counts or {}
    known = set(ref.levels)
    extra_labels = [k for k in counts if k not in known]
    labels = [*ref.levels, *extra_labels]
    cur = np.array([counts.get(str(k), 0) for k in labels], dtype=np.float64)
    ref_all = np.concatenate((ref_counts, np.zeros(len(extra_labels))))
    if ref.other_count:
        # Categories beyond the kept top levels: a shared bucket, so the totals still agree.
        labels.append("(other)")
        ref_all = np.append(ref_all, float(ref.other_count))
        cur = np.append(cur, 0.0)
    return labels, ref_all, cur, int(cur[len(ref.levels) :].sum())


def quantile_bin_counts(
    ref: ColumnProfile, win: Window, bins: int = 10
) -> tuple[list[object], np.ndarray, np.ndarray]:
    """Reference-quantile bins (deciles by default) for continuous columns; ends are open."""
    grid = np.asarray(ref.quantiles)
    g = grid.size - 1
    inner = np.unique(grid[np.linspace(0, g, bins + 1).round().astype(int)[1:-1]])
    # Reference share below each inner edge, read off the quantile grid (ties handled by 'right').
    below = (np.searchsorted(grid, inner, side="right") - 1) / g
    ref_cdf = np.concatenate(([0.0], np.clip(below, 0.0, 1.0), [1.0]))
    ref_counts = np.diff(ref_cdf) * ref.n_valid
    values = win.values if win.values is not None else np.empty(0)
    cur = np.bincount(np.searchsorted(inner, values, side="right"), minlength=inner.size + 1)
    labels: list[object] = [f"bin{i}" for i in range(inner.size + 1)]
    return labels, ref_counts, cur.astype(np.float64)


def grid_counts(grid: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Counts of ``values`` per slot: slot ``j`` holds values in ``(grid[j-1], grid[j]]``.

    Sorting the window and searching the grid in it is ~8x faster than searching each value in the
    grid (numpy's SIMD sort beats a cache-missing binary search per value).
    """
    ordered = np.sort(values)
    at = np.searchsorted(ordered, grid, side="right")
    return np.diff(np.concatenate(([0], at, [ordered.size])))


def grid_wasserstein(
    grid: np.ndarray,
    counts: np.ndarray,
    n: np.ndarray | float,
    below: np.ndarray | float,
    above: np.ndarray | float,
) -> np.ndarray:
    """W1 between the reference (quantile ``grid``) and windows given as slot ``counts`` (rows).

    Both CDFs are taken piecewise linear between grid points; ``below``/``above`` are the sums of
    distances of out-of-range values to the reference min/max, added exactly.
    """
    g = grid.size - 1
    counts = np.atleast_2d(counts)
    cur_cdf = np.cumsum(counts[:, : g + 1], axis=1) / np.reshape(n, (-1, 1))
    d = cur_cdf - np.arange(g + 1) / g
    width = np.diff(grid)
    a, b = np.abs(d[:, :-1]), np.abs(d[:, 1:])
    same = d[:, :-1] * d[:, 1:] >= 0
    denom = np.where(a + b > 0, a + b, 1.0)
    area = np.where(same, (a + b) / 2, (a * a + b * b) / (2 * denom)) * width
    return np.asarray(area.sum(axis=1) + (np.asarray(below) + np.asarray(above)) / np.asarray(n))


def level_wasserstein(levels: np.ndarray, ref_p: np.ndarray, cur_p: np.ndarray) -> np.ndarray:
    """Exact W1 between discrete distributions on sorted ``levels`` (rows of ``cur_p`` allowed)."""
    diff = np.cumsum(np.atleast_2d(cur_p) - ref_p, axis=-1)[:, :-1]
    return np.asarray(np.abs(diff) @ np.diff(levels))


def grid_ks(grid: np.ndarray, counts: np.ndarray, n: int) -> float:
    """Kolmogorov-Smirnov distance to the reference read on its quantile grid (within 1/G)."""
    g = grid.size - 1
    cur_cdf = np.cumsum(counts[: g + 1]) / n
    ref_cdf = np.arange(g + 1) / g
    return float(np.abs(cur_cdf - ref_cdf).max())
