"""Jensen-Shannon distance (natural log) between reference and current shares.

Evidently's choice for categorical columns and numeric columns with at most 5 distinct values when
the reference has more than 1000 rows; default threshold 0.1. Shares are taken over the union of
levels (continuous columns: the reference's deciles) with Evidently's empty-bin filling.
"""

from __future__ import annotations

import numpy as np

from mloop.monitoring.profile import ColumnProfile
from mloop.monitoring.stattests._base import Outcome, Window, register_stattest
from mloop.monitoring.stattests._binning import aligned_counts, fill_zeros

__all__ = ["js_distance", "jensenshannon_test", "two_sample_null_shares"]


def js_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Rows of Jensen-Shannon distances (like ``scipy.spatial.distance.jensenshannon``)."""
    p = p / p.sum(axis=-1, keepdims=True)
    q = q / q.sum(axis=-1, keepdims=True)
    mid = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log(p / mid), 0.0).sum(axis=-1)
        kl_q = np.where(q > 0, q * np.log(q / mid), 0.0).sum(axis=-1)
    return np.asarray(np.sqrt(np.maximum((kl_p + kl_q) / 2, 0.0)))


def two_sample_null_shares(
    ref: ColumnProfile, n: int, reps: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Shares of a re-drawn reference and of an n-row window, both from the reference's shares."""
    empty = Window(numeric=ref.numeric, n=0, values=np.empty(0), counts={})
    _, rc, _, _ = aligned_counts(ref, empty)
    m = round(rc.sum())
    probs = rc / rc.sum()
    ref_draw = rng.multinomial(m, probs, size=reps) / m
    cur_draw = rng.multinomial(n, probs, size=reps) / n
    return fill_zeros(ref_draw), fill_zeros(cur_draw)


def _null(ref: ColumnProfile, n: int, reps: int, rng: np.random.Generator) -> np.ndarray:
    return js_distance(*two_sample_null_shares(ref, n, reps, rng))


@register_stattest(
    "jensenshannon", title="Jensen-Shannon distance", kind="distance", threshold=0.1, min_rows=1, null=_null
)
def jensenshannon_test(ref: ColumnProfile, win: Window) -> Outcome:
    _, rc, cc, _ = aligned_counts(ref, win)
    p, q = fill_zeros(rc / rc.sum()), fill_zeros(cc / max(cc.sum(), 1.0))
    return Outcome(float(js_distance(p, q)), None, "binned")
