"""Per-column drift tests, in a registry keyed by name (see :func:`register_stattest`).

Built in: ``ks`` (Kolmogorov-Smirnov), ``chisquare`` (chi-squared over the union of categories),
``z`` (two-proportion Z-test), ``wasserstein`` (normed by the reference std), ``jensenshannon`` and
``psi``. :func:`auto_stattest` picks among them exactly as Evidently's defaults do, but from the
reference alone. :func:`aligned_counts` and :func:`fill_zeros` put a reference and a window on common
bins for other monitoring code and for rollout analysis.
"""

from mloop.monitoring.profile import ColumnProfile
from mloop.monitoring.stattests import chisquare, jensenshannon, ks, psi, wasserstein, ztest
from mloop.monitoring.stattests._base import (
    Outcome,
    StatTest,
    Window,
    get_stattest,
    register_stattest,
    stattest_names,
)
from mloop.monitoring.stattests._binning import aligned_counts, fill_zeros

__all__ = [
    "Outcome",
    "StatTest",
    "Window",
    "aligned_counts",
    "auto_stattest",
    "fill_zeros",
    "get_stattest",
    "register_stattest",
    "stattest_names",
]

_ = (chisquare, jensenshannon, ks, psi, wasserstein, ztest)  # imported for their registrations

SMALL_REFERENCE = 1000
"""References with at most this many non-missing values use the p-value tests."""


def auto_stattest(ref: ColumnProfile) -> str:
    """Evidently's default test for this column, decided by the reference only.

    ≤ 1000 reference values: numeric with ≤ 2 distinct values → ``z``, 3-5 → ``chisquare``,
    more → ``ks``; categorical ≤ 2 → ``z``, else ``chisquare``. Larger references: numeric ≤ 5
    distinct → ``jensenshannon``, more → ``wasserstein``; categorical → ``jensenshannon``.
    """
    if ref.n_valid <= SMALL_REFERENCE:
        if ref.n_unique <= 2:
            return "z"
        if not ref.numeric or ref.n_unique <= 5:
            return "chisquare"
        return "ks"
    if ref.numeric and ref.n_unique > 5:
        return "wasserstein"
    return "jensenshannon"
