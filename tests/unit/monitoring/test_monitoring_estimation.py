"""Quality estimated without labels: the CBPE-style math, its interval's coverage, regressors, format."""

from __future__ import annotations

import json
from itertools import product

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata
from sklearn import metrics as skm

from mloop.errors import MonitoringError
from mloop.monitoring.estimation import (
    BINARY_METRICS,
    Calibrator,
    QualityEstimator,
    _binary_draws,
    _estimate_binary,
    _percentiles,
    _standard_normal,
    _weighted_auc,
    estimate_classification,
    estimate_quality,
)
from mloop.training.probability_calibration import fit_quality_estimator

IDENTITY = QualityEstimator("classification", "ok", classes=["0", "1"], calibrators=[Calibrator("identity")])


def _realized(y: np.ndarray, pred: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """The window's realized metrics (numpy, checked against scikit-learn in the first test)."""
    tp, fp, fn = (y * pred).sum(), ((1 - y) * pred).sum(), (y * (1 - pred)).sum()
    n1 = y.sum()
    return {
        "accuracy": float((y == pred).mean()),
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn),
        "f1": 2 * tp / (2 * tp + fp + fn),
        "roc_auc": (rankdata(p)[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * (len(y) - n1)),
    }


def test_expected_confusion_matrix_and_auc_match_their_definitions() -> None:
    rng = np.random.default_rng(0)
    p = rng.beta(1, 4, 12).round(2)  # rounded: ties in the scores, counted one half
    pred = (p > 0.3).astype(int)
    est = estimate_classification(np.column_stack([1 - p, p]), pred, IDENTITY)
    tp, fp, fn = (p * pred).sum(), ((1 - p) * pred).sum(), (p * (1 - pred)).sum()
    assert est.metrics["accuracy"] == pytest.approx((p * pred + (1 - p) * (1 - pred)).mean())
    assert est.metrics["precision"] == pytest.approx(tp / (tp + fp))
    assert est.metrics["recall"] == pytest.approx(tp / (tp + fn))
    assert est.metrics["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    # ROC AUC: E[pairs ranked right] / E[#pos * #neg] over every pair of distinct rows.
    right = pairs = 0.0
    for i, j in product(range(len(p)), repeat=2):
        if i != j:
            w = p[i] * (1 - p[j])
            pairs += w
            right += w * (1.0 if p[i] > p[j] else 0.5 if p[i] == p[j] else 0.0)
    assert _weighted_auc(p, p) == pytest.approx(right / pairs)
    assert est.metrics["roc_auc"] == pytest.approx(right / pairs)
    y = (rng.random(12) < p).astype(int)
    mine = _realized(y, pred, p)
    assert mine["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert mine["f1"] == pytest.approx(skm.f1_score(y, pred))


@pytest.mark.parametrize("rows", [150, 3000])  # every row's label drawn, then the normal approximation
def test_the_interval_covers_the_realized_metric_at_the_nominal_rate(rows: int) -> None:
    rng = np.random.default_rng(rows)
    windows, hits = 120, dict.fromkeys(["accuracy", "precision", "recall", "f1", "roc_auc"], 0)
    for w in range(windows):
        p = rng.beta(1, 6, rows)  # calibrated by construction: labels are drawn from p
        y = (rng.random(rows) < p).astype(int)
        pred = (p > 0.25).astype(int)
        est = estimate_classification(np.column_stack([1 - p, p]), pred, IDENTITY, seed=w)
        for name, value in _realized(y, pred, p).items():
            hits[name] += est.lower[name] <= value <= est.upper[name]
    # 95 % nominal; with 120 windows the binomial 99.9 % range of the hit rate is about 0.88-1.0.
    for name, count in hits.items():
        assert 0.88 <= count / windows <= 1.0, (name, count / windows)


def test_miscalibrated_probabilities_are_corrected_by_the_holdout_calibration() -> None:
    rng = np.random.default_rng(3)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        p = rng.beta(1, 5, n)
        return p, (rng.random(n) < p).astype(int)

    p, y = sample(4000)
    raw = np.sqrt(p)  # an over-confident model: its scores rank well but overstate the positives
    est = fit_quality_estimator(
        "classification", predictions=None, proba=np.column_stack([1 - raw, raw]), classes=[0, 1], y_true=y
    )
    assert est.calibrators[0].method == "isotonic"
    assert est.holdout["brier_after"] < est.holdout["brier_before"]
    p, y = sample(3000)
    raw = np.sqrt(p)
    pred = (raw > 0.5).astype(int)
    frame = pd.DataFrame({"prediction": pred, "proba_0": 1 - raw, "proba_1": raw})
    calibrated = estimate_quality(frame, est)
    naive = estimate_quality(frame, IDENTITY)
    truth = _realized(y, pred, raw)
    for name in ("accuracy", "precision", "f1"):
        assert abs(calibrated.metrics[name] - truth[name]) < abs(naive.metrics[name] - truth[name])
        assert calibrated.lower[name] - 0.02 <= truth[name] <= calibrated.upper[name] + 0.02


def test_three_classes_get_macro_metrics_and_an_interval() -> None:
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(2500, 3)) * 1.5
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = (rng.random((2500, 1)) > np.cumsum(p, axis=1)[:, :-1]).sum(axis=1)
    est = fit_quality_estimator(
        "classification",
        predictions=None,
        proba=p,
        classes=["a", "b", "c"],
        y_true=np.array(["a", "b", "c"])[y],
    )
    assert len(est.calibrators) == 3
    frame = pd.DataFrame({"prediction": np.array(["a", "b", "c"])[p.argmax(axis=1)]})
    for k, c in enumerate("abc"):
        frame[f"proba_{c}"] = p[:, k]
    out = estimate_quality(frame, est)
    assert set(out.metrics) == {"accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc"}
    real = skm.accuracy_score(y, p.argmax(axis=1))
    assert out.lower["accuracy"] - 0.02 <= real <= out.upper["accuracy"] + 0.02


def test_a_regressor_gets_mae_and_rmse_from_the_holdout_error_bins() -> None:
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 10, 3000)
    y = x + rng.normal(0, 0.2 + 0.3 * x)  # errors grow with the prediction
    est = QualityEstimator.from_dict(
        json.loads(
            json.dumps(
                fit_quality_estimator(
                    "regression", predictions=x, proba=None, classes=None, y_true=y
                ).to_dict()
            )
        )
    )
    x_new = rng.uniform(6, 10, 2000)  # traffic moved to where the model errs more
    y_new = x_new + rng.normal(0, 0.2 + 0.3 * x_new)
    out = estimate_quality(pd.DataFrame({"prediction": x_new}), est)
    assert out.status == "ok" and out.method == "error_bins"
    mae = float(np.mean(np.abs(y_new - x_new)))
    assert out.metrics["mae"] > est.holdout["mae"] * 1.3  # it saw the shift to the harder region
    assert abs(out.metrics["mae"] - mae) < 0.1 * mae


def test_not_available_and_unusable_windows_say_why() -> None:
    est = fit_quality_estimator("classification", predictions=[0, 1], proba=None, classes=None, y_true=[0, 1])
    assert est.status == "not_available" and "predict_proba" in est.reason
    out = estimate_quality(pd.DataFrame({"prediction": [1, 0]}), est.to_dict())
    assert out.status == "not_available" and "predict_proba" in out.note
    assert "no quality estimator" in estimate_quality(pd.DataFrame({"prediction": [1]}), None).note
    few = pd.DataFrame({"prediction": [1, 0], "proba_0": [0.2, 0.9], "proba_1": [0.8, 0.1]})
    assert "needs at least 100" in estimate_quality(few, IDENTITY, min_rows=100).note
    assert "proba_1" in estimate_quality(pd.DataFrame({"prediction": [1]}), IDENTITY).note


def test_a_malformed_estimator_file_is_refused_with_the_reason() -> None:
    good = IDENTITY.to_dict()
    with pytest.raises(MonitoringError, match="format"):
        QualityEstimator.from_dict({**good, "format": 99})
    bad = {**good, "calibrators": [{"method": "isotonic", "x": [0.1, 0.0], "y": [0.1, 0.2]}]}
    with pytest.raises(MonitoringError, match="x increasing"):
        QualityEstimator.from_dict(bad)
    with pytest.raises(MonitoringError, match="calibration method"):
        QualityEstimator.from_dict({**good, "calibrators": [{"method": "pickle"}]})


def test_the_interval_carries_the_calibrations_own_error_where_the_holdout_was_thin() -> None:
    # Traffic that moved to scores the holdout had few rows of: the calibrated values there are
    # means of few outcomes, and the interval widens by their error (counts kept per knot).
    rng = np.random.default_rng(11)
    score = rng.beta(1, 6, 3000)  # a holdout with few high scores
    y = (rng.random(3000) < score).astype(int)
    est = fit_quality_estimator(
        "classification",
        predictions=(score > 0.5).astype(int),
        proba=np.column_stack([1 - score, score]),
        classes=[0, 1],
        y_true=y,
    )
    cal = est.calibrators[0]
    assert cal.method == "isotonic" and len(cal.n) == len(cal.x) and sum(set(cal.n)) <= 3000
    high = rng.uniform(0.6, 0.95, 2000)
    frame = pd.DataFrame({"prediction": (high > 0.5).astype(int), "proba_0": 1 - high, "proba_1": high})
    with_error = estimate_quality(frame, est)
    without = estimate_quality(
        frame,
        QualityEstimator.from_dict(
            {**est.to_dict(), "calibrators": [{k: v for k, v in cal.to_dict().items() if k != "n"}]}
        ),
    )
    assert with_error.metrics == without.metrics  # the point estimate does not change
    width = {m: with_error.upper[m] - with_error.lower[m] for m in ("accuracy", "precision", "roc_auc")}
    narrow = {m: without.upper[m] - without.lower[m] for m in width}
    assert all(width[m] > 1.3 * narrow[m] for m in width), (width, narrow)
    # The counts survive the file, and a file without them (older versions) still loads.
    again = QualityEstimator.from_dict(json.loads(json.dumps(est.to_dict())))
    assert again.calibrators[0].n == cal.n
    with pytest.raises(MonitoringError, match="one count"):
        QualityEstimator.from_dict({**est.to_dict(), "calibrators": [{**cal.to_dict(), "n": [1.0]}]})


def _binary_by_definition(
    score: np.ndarray, positive: np.ndarray, cal: Calibrator, samples: int, seed: int
) -> tuple[dict[str, float], np.ndarray]:
    """The binary estimate computed row by row in the window's own order: the expected confusion
    matrix, the expected ROC AUC of every pair, average ranks by scipy, the calibration's error summed
    per block by bincount."""
    p = cal.apply(score)
    n = len(p)
    pred = positive.astype(float)
    tp, fp, fn = (p * pred).sum(), ((1 - p) * pred).sum(), (p * (1 - pred)).sum()
    metrics = {
        "accuracy": float((p * pred + (1 - p) * (1 - pred)).sum() / n),
        "precision": float(tp / (tp + fp)),
        "recall": float(tp / (tp + fn)),
        "f1": float(2 * tp / (2 * tp + fp + fn)),
        "roc_auc": _weighted_auc(score, p),
    }
    v = np.column_stack([np.ones(n), pred, rankdata(score)])
    mean = p @ v
    cov = (v * (p * (1 - p))[:, None]).T @ v
    blocks = cal.blocks(score)
    if blocks is not None:
        block, se = blocks
        per_block = np.column_stack(
            [np.bincount(block, weights=v[:, j], minlength=len(se)) for j in range(3)]
        )
        cov = cov + (per_block * (se**2)[:, None]).T @ per_block
    z = np.random.default_rng(seed).standard_normal((samples, 3))
    return metrics, _binary_draws(mean, cov, n, float(pred.sum()), z)


@pytest.mark.parametrize("decimals", [None, 2])  # unique scores, and many ties
def test_the_binary_estimate_on_sorted_rows_equals_the_row_by_row_definition(decimals: int | None) -> None:
    rng = np.random.default_rng(21)
    score = rng.beta(1, 4, 5000)
    y = (rng.random(5000) < score**1.5).astype(int)
    est = fit_quality_estimator(
        "classification",
        predictions=None,
        proba=np.column_stack([1 - score, score]),
        classes=[0, 1],
        y_true=y,
    )
    cal = est.calibrators[0]
    assert cal.method == "isotonic" and cal.blocks(score) is not None
    window = rng.beta(1.5, 3, 1500)
    if decimals is not None:
        window = window.round(decimals)
    positive = window > 0.35
    got, got_draws = _estimate_binary(window, positive, cal, samples=300, seed=4)
    want, want_draws = _binary_by_definition(window, positive, cal, samples=300, seed=4)
    assert list(got) == list(BINARY_METRICS)
    for name in BINARY_METRICS:
        assert got[name] == pytest.approx(want[name], rel=1e-12), name
    np.testing.assert_allclose(got_draws, want_draws, rtol=1e-9, atol=1e-12)
    # The window's interval comes from these draws, through estimate_classification.
    out = estimate_classification(
        np.column_stack([1 - window, window]), positive.astype(int), est, samples=300, seed=4
    )
    ends = np.percentile(want_draws, [2.5, 97.5], axis=1).T
    for name, (lo, hi) in zip(BINARY_METRICS, ends, strict=True):
        assert out.lower[name] == pytest.approx(min(lo, want[name]), rel=1e-9, abs=1e-12)
        assert out.upper[name] == pytest.approx(max(hi, want[name]), rel=1e-9, abs=1e-12)


def test_the_normal_draws_are_drawn_once_per_seed_and_cannot_be_changed() -> None:
    z = _standard_normal(3, 50)
    assert np.array_equal(z, np.random.default_rng(3).standard_normal((50, 3)))
    assert _standard_normal(3, 50) is z and not z.flags.writeable
    with pytest.raises(ValueError):
        z[0, 0] = 1.0


@pytest.mark.parametrize("samples", [1, 2, 3, 40, 400, 401])
def test_interval_ends_equal_numpys_percentile(samples: int) -> None:
    rng = np.random.default_rng(samples)
    rows = rng.normal(size=(5, samples))
    rows[1] = rows[1].round(1)  # ties
    for tail in (2.5, 5.0, 0.0, 25.0):
        got = _percentiles(rows.copy(), (tail, 100 - tail))
        assert np.array_equal(got, np.percentile(rows, [tail, 100 - tail], axis=1).T), tail
