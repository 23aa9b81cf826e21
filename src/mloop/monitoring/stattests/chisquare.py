"""Chi-squared test of homogeneity over the union of reference and current categories.

Unlike a goodness-of-fit test against the reference shares, the 2xk contingency form accounts for
the reference being a sample too, so it keeps its level when the window is much larger than the
reference. Categories seen only in the window are counted (they make drift more likely), never an
error. When some expected count is below 5 the asymptotic p-value is unreliable, so a Monte Carlo
p-value under the pooled shares is used instead (``method="monte-carlo"``).
"""

from __future__ import annotations

import numpy as np

from mloop.monitoring.profile import ColumnProfile
from mloop.monitoring.stattests._base import Outcome, Window, register_stattest
from mloop.monitoring.stattests._binning import aligned_counts

__all__ = ["chi2_statistic", "chisquare_test", "monte_carlo_p"]

MC_REPS = 999


def chi2_statistic(ref_counts: np.ndarray, cur_counts: np.ndarray) -> np.ndarray:
    """Pearson's statistic of the 2xk table, for one table or rows of tables."""
    ref_counts, cur_counts = np.atleast_2d(ref_counts), np.atleast_2d(cur_counts)
    m = ref_counts.sum(axis=1, keepdims=True)
    n = cur_counts.sum(axis=1, keepdims=True)
    pooled = (ref_counts + cur_counts) / (m + n)
    e_ref, e_cur = pooled * m, pooled * n
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(e_ref > 0, (ref_counts - e_ref) ** 2 / e_ref, 0.0) + np.where(
            e_cur > 0, (cur_counts - e_cur) ** 2 / e_cur, 0.0
        )
    return np.asarray(terms.sum(axis=1))


def monte_carlo_p(ref_counts: np.ndarray, cur_counts: np.ndarray, observed: float, seed: int = 0) -> float:
    """P(statistic ≥ observed) when both samples come from the pooled shares (parametric bootstrap)."""
    m, n = round(ref_counts.sum()), round(cur_counts.sum())
    pooled = (ref_counts + cur_counts) / (ref_counts.sum() + cur_counts.sum())
    rng = np.random.default_rng(seed)
    sim = chi2_statistic(rng.multinomial(m, pooled, size=MC_REPS), rng.multinomial(n, pooled, size=MC_REPS))
    return float((1 + np.count_nonzero(sim >= observed - 1e-9)) / (MC_REPS + 1))


@register_stattest("chisquare", title="Chi-squared", kind="p_value", threshold=0.05, min_rows=1)
def chisquare_test(ref: ColumnProfile, win: Window) -> Outcome:
    _, rc, cc, _ = aligned_counts(ref, win)
    keep = (rc + cc) > 0
    rc, cc = rc[keep], cc[keep]
    if rc.size < 2:
        return Outcome(0.0, 1.0, "exact")
    stat = float(chi2_statistic(rc, cc)[0])
    m, n = rc.sum(), cc.sum()
    pooled = (rc + cc) / (m + n)
    if min((pooled * m).min(), (pooled * n).min()) < 5:
        return Outcome(stat, monte_carlo_p(rc, cc, stat), "monte-carlo")
    from scipy.special import chdtrc  # the chi-squared survival function, without all of scipy.stats

    return Outcome(stat, float(chdtrc(rc.size - 1, stat)), "asymptotic")
