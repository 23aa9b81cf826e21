"""Two-sample Kolmogorov-Smirnov test (numeric columns; Evidently's choice for small references).

With a complete reference sample (references up to ``sample_rows`` values) it is scipy's exact or
asymptotic two-sample test on the raw values; beyond that the distance is read on the reference's
quantile grid (within 1/1000) and the p-value is the asymptotic two-sample one for the same sizes.
"""

from __future__ import annotations

import numpy as np

from mloop.monitoring.profile import ColumnProfile
from mloop.monitoring.stattests._base import Outcome, Window, register_stattest
from mloop.monitoring.stattests._binning import grid_counts, grid_ks

__all__ = ["ks_test"]

# scipy's exact two-sample p-value costs O(m·n); above this product the asymptotic one is as good.
_EXACT_MAX_CELLS = 2_000_000


@register_stattest(
    "ks", title="Kolmogorov-Smirnov", kind="p_value", threshold=0.05, column_kinds=("numeric",), min_rows=1
)
def ks_test(ref: ColumnProfile, win: Window) -> Outcome:
    from scipy import stats  # imported here: scipy.stats alone costs ~70 MB of RSS

    values = win.values if win.values is not None else np.empty(0)
    if ref.complete_sample:
        sample = np.asarray(ref.sample, dtype=np.float64)
        method = "exact" if sample.size * values.size <= _EXACT_MAX_CELLS else "asymp"
        res = stats.ks_2samp(sample, values, method=method)
        label = "exact" if method == "exact" else "asymptotic"
        return Outcome(float(res.statistic), float(res.pvalue), label)
    grid = np.asarray(ref.quantiles)
    d = grid_ks(grid, grid_counts(grid, values), values.size)
    m, n = ref.n_valid, values.size
    en = m * n / (m + n)
    p = float(stats.kstwo.sf(d, max(1, round(en))))
    return Outcome(d, min(1.0, max(0.0, p)), "asymptotic (quantile grid)")
