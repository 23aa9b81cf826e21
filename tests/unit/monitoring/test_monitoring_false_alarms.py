"""False alarms stay at or below 5% per column at every window size; real shifts are detected.

Windows come from the distribution the reference was drawn from. Small references (500 rows, the
p-value tests) are drawn afresh for each window, since a test's false-positive rate is over both
samples; large references (5000 rows, the distance tests) are shared by 10 windows each so that
calibration (cached per reference and window size) is paid once per reference. A rate counts as
"at or below 5%" unless a one-sided binomial test rejects that at the 0.1% level.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from mloop.monitoring import build_profile, detect_drift

SIZES = (30, 100, 1000, 10_000, 100_000)
COLUMNS = ("x", "y", "d", "c", "b")
LABELS = np.array(list("abcdef"))
SHARES = np.array([0.4, 0.25, 0.15, 0.1, 0.07, 0.03])


def _draw(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": rng.normal(shift, 1, n),
            "y": rng.lognormal(0, 1, n),
            "d": rng.choice([0.0, 1.0, 2.0, 3.0], n, p=[0.5, 0.3, 0.15, 0.05]),
            "c": LABELS[rng.choice(6, n, p=SHARES)],
            "b": (rng.random(n) < 0.2).astype(int),
        }
    )


def _reps(n: int) -> int:
    return 200 if n <= 10_000 else 60


def _sweep(reference_rows: int, refs_shared_by: int, seed: int) -> dict[int, tuple[np.ndarray, int, int]]:
    rng = np.random.default_rng(seed)
    out = {}
    for n in SIZES:
        flags, dataset, reps = np.zeros(len(COLUMNS), dtype=int), 0, _reps(n)
        for i in range(reps):
            if i % refs_shared_by == 0:
                profile = build_profile(_draw(rng, reference_rows))
            report = detect_drift(profile, _draw(rng, n))
            flags += [report.column(c).drifted for c in COLUMNS]
            dataset += report.dataset_drifted
        out[n] = (flags, dataset, reps)
    return out


def _not_above_5pct(k: int, reps: int) -> bool:
    return binomtest(k, reps, 0.05, alternative="greater").pvalue > 0.001


@pytest.mark.slow
@pytest.mark.parametrize(
    ("reference_rows", "shared"), [(500, 1), (5000, 10)], ids=["p-value tests", "distance tests"]
)
def test_false_positive_rate_is_bounded_at_every_window_size(reference_rows: int, shared: int) -> None:
    results = _sweep(reference_rows, shared, seed=reference_rows)
    total = np.zeros(len(COLUMNS), dtype=int)
    for n, (flags, dataset, reps) in results.items():
        for col, k in zip(COLUMNS, flags, strict=True):
            assert _not_above_5pct(int(k), reps), f"{col}: {k}/{reps} false alarms at {n} rows"
        assert _not_above_5pct(dataset, reps), f"dataset (BH): {dataset}/{reps} false alarms at {n} rows"
        total += flags
    pooled = sum(_reps(n) for n in SIZES)
    for col, k in zip(COLUMNS, total, strict=True):
        assert k / pooled <= 0.06, f"{col}: {k}/{pooled} false alarms over all sizes"


def test_evidently_defaults_raise_false_alarms_on_small_windows_that_calibration_avoids() -> None:
    rng = np.random.default_rng(11)
    profile = build_profile(_draw(rng, 5000))
    windows = [_draw(rng, 30) for _ in range(60)]
    default = sum(detect_drift(profile, w, calibrate=False).column("c").drifted for w in windows)
    calibrated = sum(detect_drift(profile, w).column("c").drifted for w in windows)
    assert default / 60 > 0.5 and calibrated / 60 <= 0.1


@pytest.mark.parametrize("reference_rows", [500, 5000])
def test_shifted_windows_are_detected(reference_rows: int) -> None:
    rng = np.random.default_rng(5)
    profile = build_profile(_draw(rng, reference_rows))
    for n in (1000, 10_000):
        hits = [detect_drift(profile, _draw(rng, n, shift=0.5)) for _ in range(10)]
        assert all(r.column("x").drifted for r in hits), n
        assert all(r.dataset_drifted for r in hits), n
        assert not any(r.column("y").drifted for r in hits)
