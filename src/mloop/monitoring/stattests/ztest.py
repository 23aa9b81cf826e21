"""Two-proportion Z-test for binary columns (Evidently's choice for ≤ 2 distinct values).

The proportion tested is that of the reference's most frequent value. A window that brings a value
the reference never had is no longer binary: the test then runs the chi-squared test over the union
instead and says so in ``method``. Small expected counts use the Monte Carlo p-value (z² is the
2x2 chi-squared statistic, so both tests share it).
"""

from __future__ import annotations

import math

from mloop.monitoring.profile import ColumnProfile
from mloop.monitoring.stattests._base import Outcome, Window, register_stattest
from mloop.monitoring.stattests._binning import aligned_counts
from mloop.monitoring.stattests.chisquare import chisquare_test, monte_carlo_p

__all__ = ["z_test"]


@register_stattest("z", title="Z-test for proportions", kind="p_value", threshold=0.05, min_rows=1)
def z_test(ref: ColumnProfile, win: Window) -> Outcome:
    _, rc, cc, unseen = aligned_counts(ref, win)
    if unseen or rc.size > 2:
        out = chisquare_test(ref, win)
        return Outcome(out.statistic, out.p_value, f"chi-squared ({out.method}): window is not binary")
    m, n = rc.sum(), cc.sum()
    if rc.size < 2 or m == 0 or n == 0:
        return Outcome(0.0, 1.0, "exact")
    p1, p2 = rc[0] / m, cc[0] / n
    pooled = (rc[0] + cc[0]) / (m + n)
    var = pooled * (1 - pooled) * (1 / m + 1 / n)
    if var <= 0:
        return Outcome(0.0, 1.0, "exact")
    z = float((p2 - p1) / math.sqrt(var))
    if min(pooled, 1 - pooled) * min(m, n) < 5:
        return Outcome(z, monte_carlo_p(rc, cc, z * z), "monte-carlo")
    return Outcome(z, math.erfc(abs(z) / math.sqrt(2)), "asymptotic")
