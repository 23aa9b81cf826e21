"""Calibrate a classifier's probabilities on the holdout, for estimating quality without labels.

:func:`fit_quality_estimator` turns the holdout's answers and labels into the
:class:`~mloop.monitoring.estimation.QualityEstimator` saved with the version as
``quality_estimator.json`` (numbers only: the model trust policy loads no code, so no pickle).

Which calibration: **isotonic** regression (scikit-learn's ``IsotonicRegression``) when the holdout
has at least :data:`ISOTONIC_MIN_ROWS` rows and :data:`ISOTONIC_MIN_CLASS` of each class, else
**Platt** scaling (a logistic regression on the probability's logit). Isotonic makes no assumption on
the shape of the miscalibration — tree ensembles are rarely sigmoid-shaped — but overfits small
samples; Platt has two parameters and is safe on a few hundred rows (Niculescu-Mizil & Caruana,
"Predicting good probabilities with supervised learning", 2005, find isotonic better above about a
thousand calibration rows). NannyML's CBPE calibrates with isotonic regression as well.

Calibrating on the holdout the model was evaluated on is deliberate: it is the only labelled data the
model never saw, and the calibration changes no prediction, only the confidence attached to it.

Regressors get :class:`~mloop.monitoring.estimation.ErrorBins`: the holdout's absolute and squared
errors by quantile bin of the prediction. A model without ``predict_proba`` gets ``not_available``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from mloop.monitoring.estimation import Calibrator, ErrorBins, QualityEstimator, isotonic_blocks
from mloop.monitoring.window import label_key

__all__ = ["ERROR_BINS", "ISOTONIC_MIN_CLASS", "ISOTONIC_MIN_ROWS", "fit_calibrator", "fit_quality_estimator"]

ISOTONIC_MIN_ROWS = 1000
ISOTONIC_MIN_CLASS = 50
ERROR_BINS = 10
"""Quantile bins of a regressor's prediction (fewer when the holdout has under 30 rows per bin)."""


def fit_calibrator(score: np.ndarray, positive: np.ndarray) -> Calibrator:
    """Isotonic or Platt calibration of ``score`` (a probability) for the 0/1 outcome ``positive``."""
    score = np.clip(np.asarray(score, dtype=float), 0.0, 1.0)
    y = np.asarray(positive, dtype=float)
    n_pos = int(y.sum())
    if min(n_pos, len(y) - n_pos) == 0:
        return Calibrator("identity")
    if len(y) >= ISOTONIC_MIN_ROWS and min(n_pos, len(y) - n_pos) >= ISOTONIC_MIN_CLASS:
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(score, y)
        x, level = iso.X_thresholds_.astype(float), iso.y_thresholds_.astype(float)
        # Holdout rows behind each knot's block (consecutive knots of one level): the block's level
        # is a mean of that many outcomes, whose error the estimates' intervals carry.
        block = isotonic_blocks(level)
        knot = np.clip(np.searchsorted(x, score, side="right") - 1, 0, None)
        counts = np.bincount(block[knot], minlength=int(block[-1]) + 1).astype(float)
        return Calibrator("isotonic", tuple(x), tuple(level), n=tuple(counts[block].tolist()))
    from sklearn.linear_model import LogisticRegression

    q = np.clip(score, 1e-12, 1 - 1e-12)
    logit = np.log(q / (1 - q)).reshape(-1, 1)
    lr = LogisticRegression(C=1e4).fit(logit, y)
    return Calibrator("sigmoid", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))


def _brier(proba: np.ndarray, truth: np.ndarray) -> float:
    onehot = np.eye(proba.shape[1])[truth]
    return float(np.mean(np.sum((proba - onehot) ** 2, axis=1)))


def _classifier(proba: np.ndarray, classes: Sequence[Any], y_true: Any) -> QualityEstimator:
    keys = [label_key(c) or "" for c in classes]
    position = {k: i for i, k in enumerate(keys)}
    # Each distinct label spelled once, not each row; a missing label (code -1) takes the last entry.
    codes, uniques = pd.factorize(np.asarray(y_true))
    lookup = [position.get(label_key(v) or "", -1) for v in uniques.tolist()]
    truth = np.asarray([*lookup, position.get("", -1)])[codes]
    ok = (truth >= 0) & np.isfinite(proba).all(axis=1)
    proba, truth = proba[ok], truth[ok]
    if len(truth) == 0:
        return QualityEstimator.not_available("classification", "no holdout labels among the model's classes")
    if len(keys) == 2:
        calibrators = [fit_calibrator(proba[:, 1], truth == 1)]
    else:
        calibrators = [fit_calibrator(proba[:, k], truth == k) for k in range(len(keys))]
    est = QualityEstimator("classification", "ok", classes=keys, calibrators=calibrators)
    est.holdout = {
        "rows": float(len(truth)),
        "brier_before": _brier(proba, truth),
        "brier_after": _brier(est.calibrate(proba), truth),
    }
    return est


def _regressor(predictions: np.ndarray, y_true: Any) -> QualityEstimator:
    pred = np.asarray(predictions, dtype=float)
    y = np.asarray(y_true, dtype=float)
    ok = np.isfinite(pred) & np.isfinite(y)
    pred, err = pred[ok], (y - pred)[ok]
    if len(pred) < 2:
        return QualityEstimator.not_available("regression", "under two holdout rows with a numeric label")
    n_bins = max(1, min(ERROR_BINS, len(pred) // 30))
    edges = np.unique(np.quantile(pred, np.linspace(0, 1, n_bins + 1)[1:-1]))
    idx = np.searchsorted(edges, pred, side="right")
    stats: dict[str, list[float]] = {"mean_abs": [], "var_abs": [], "mean_sq": [], "var_sq": []}
    for b in range(len(edges) + 1):
        e = err[idx == b]
        e = e if e.size else err  # an empty bin (ties at an edge) borrows the whole holdout's errors
        stats["mean_abs"].append(float(np.mean(np.abs(e))))
        stats["var_abs"].append(float(np.var(np.abs(e))))
        stats["mean_sq"].append(float(np.mean(e**2)))
        stats["var_sq"].append(float(np.var(e**2)))
    bins = ErrorBins(tuple(edges.tolist()), *(tuple(v) for v in stats.values()))
    return QualityEstimator(
        "regression",
        "ok",
        bins=bins,
        holdout={
            "rows": float(len(pred)),
            "mae": float(np.mean(np.abs(err))),
            "rmse": math.sqrt(np.mean(err**2)),
        },
    )


def fit_quality_estimator(
    task: str, *, predictions: Any, proba: np.ndarray | None, classes: Sequence[Any] | None, y_true: Any
) -> QualityEstimator:
    """The estimator for a version, from its holdout answers (``Scored``) and the holdout's labels."""
    if task == "regression":
        return _regressor(np.asarray(predictions), y_true)
    if proba is None or not classes:
        return QualityEstimator.not_available(
            "classification",
            "the model has no class probabilities (predict_proba), so its quality cannot be estimated "
            "before labels arrive; only the realized quality from /feedback labels is available",
        )
    return _classifier(np.asarray(proba, dtype=float), classes, y_true)
