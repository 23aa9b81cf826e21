"""Population Stability Index over the union of levels (continuous columns: reference deciles).

PSI = Σ (ref - cur) · ln(ref / cur) with Evidently's empty-bin filling; default threshold 0.1
(the usual "moderate shift" line). Not chosen by ``auto``; ask for it per column or for all.
"""

from __future__ import annotations

import numpy as np

from mloop.monitoring.profile import ColumnProfile
from mloop.monitoring.stattests._base import Outcome, Window, register_stattest
from mloop.monitoring.stattests._binning import aligned_counts, fill_zeros
from mloop.monitoring.stattests.jensenshannon import two_sample_null_shares

__all__ = ["psi_test", "psi_value"]


def psi_value(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Rows of PSI between shares ``p`` (reference) and ``q`` (current), both without zeros."""
    return np.asarray(((p - q) * np.log(p / q)).sum(axis=-1))


def _null(ref: ColumnProfile, n: int, reps: int, rng: np.random.Generator) -> np.ndarray:
    return psi_value(*two_sample_null_shares(ref, n, reps, rng))


@register_stattest(
    "psi", title="Population Stability Index", kind="distance", threshold=0.1, min_rows=1, null=_null
)
def psi_test(ref: ColumnProfile, win: Window) -> Outcome:
    _, rc, cc, _ = aligned_counts(ref, win)
    p, q = fill_zeros(rc / rc.sum()), fill_zeros(cc / max(cc.sum(), 1.0))
    return Outcome(float(psi_value(p, q)), None, "binned")
