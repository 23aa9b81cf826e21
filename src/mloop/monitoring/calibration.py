"""Thresholds calibrated for the window size, by resampling the reference.

Distance tests (Wasserstein, Jensen-Shannon, PSI) have fixed default thresholds (0.1) that are
sensible for large samples but far below the noise of small windows: Evidently's defaults flag most
no-drift windows of 30-100 rows. Here each distance test simulates its statistic on windows of the
same size drawn from the reference itself (a re-drawn reference and a window, both multinomial from
the reference shares, for binned tests; windows drawn from the reference sample against its
quantile grid, at the effective size ``m·n/(m+n)``, for Wasserstein). The threshold used is the larger
of the default and an upper confidence bound on the null's 95th percentile, so:

* small windows get a threshold above their noise (false alarms stay at or below 5%);
* large windows keep the default threshold, so verdicts match Evidently's where it is reliable.

The same draws give each distance column a p-value (Monte Carlo, with a Gaussian tail beyond the
simulated range) for the Benjamini-Hochberg dataset verdict. Draws are cached on the column profile
per (test, window rows), so a monitor that checks same-sized windows pays for them once.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from mloop.monitoring.profile import ColumnProfile
from mloop.monitoring.stattests import StatTest

__all__ = ["NULL_REPS", "Calibration", "calibrate", "null_distribution"]

NULL_REPS = 1000
"""Simulated no-drift windows per (column, test, window size)."""
_CONFIDENCE = 0.9
_CACHE_MAX = 32


@dataclass(frozen=True)
class Calibration:
    """Result of calibrating one column: the quantile found, the threshold used, and a p-value."""

    null_quantile: float
    threshold: float
    p_value: float
    method: str


def null_distribution(
    test: StatTest, ref: ColumnProfile, n: int, *, seed: int = 0, reps: int = NULL_REPS
) -> np.ndarray:
    """Sorted statistics of ``reps`` simulated ``n``-row windows without drift (cached)."""
    if test.null is None:
        raise ValueError(f"test {test.name!r} has no null simulator")
    key = (test.name, n, seed, reps)
    cached = ref.cache.get(key)
    if cached is not None:
        return np.asarray(cached)
    rng = np.random.default_rng([seed, n, zlib.crc32(f"{ref.name}\x00{test.name}".encode())])
    draws = np.sort(test.null(ref, n, reps, rng))
    if len(ref.cache) >= _CACHE_MAX:
        ref.cache.pop(next(iter(ref.cache)))
    ref.cache[key] = draws
    return draws


def _tail_p(draws: np.ndarray, statistic: float) -> float:
    reps = draws.size
    above = int(reps - np.searchsorted(draws, statistic - 1e-12, side="left"))
    if above:
        return (1 + above) / (reps + 1)
    # Beyond every draw: extrapolate with a Gaussian fitted to the draws, never above 1/(R+1).
    sd = float(draws.std())
    floor = 1 / (reps + 1)
    if sd <= 0:
        return 0.0
    return float(min(floor, 0.5 * math.erfc((statistic - float(draws.mean())) / sd / math.sqrt(2))))


def calibrate(
    test: StatTest,
    ref: ColumnProfile,
    n: int,
    statistic: float,
    *,
    alpha: float = 0.05,
    seed: int = 0,
    apply: bool = True,
) -> Calibration:
    """Threshold for an ``n``-row window: max(default, upper bound of the null's 1-alpha quantile).

    With ``apply=False`` the default threshold is kept (Evidently's behaviour) and only the p-value
    is computed.
    """
    draws = null_distribution(test, ref, n, seed=seed)
    reps = draws.size
    # Order statistic that bounds the (1 - alpha) quantile from above with 90% confidence.
    # Normal approximation of the binomial (R >= 200 draws): z_0.9 = 1.2816.
    k = math.ceil(reps * (1 - alpha) + 1.2816 * math.sqrt(reps * alpha * (1 - alpha))) + 1
    q = float(draws[min(k, reps) - 1])
    threshold = max(test.threshold, q) if apply else test.threshold
    method = "calibrated" if apply and q > test.threshold else "default"
    p = _tail_p(draws, statistic) if statistic >= threshold else 1.0
    return Calibration(
        null_quantile=q, threshold=threshold, p_value=p if math.isfinite(p) else 1.0, method=method
    )
