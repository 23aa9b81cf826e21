"""Live quality: labelled rows joined by prediction id, metrics equal to scikit-learn's on those rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from mloop.monitoring import LiveQuality, live_quality


def _window(pred: list[object], proba1: list[float] | None = None) -> pd.DataFrame:
    frame = pd.DataFrame({"prediction_id": [f"p{i}" for i in range(len(pred))], "prediction": pred})
    if proba1 is not None:
        frame["proba_0"] = [1 - p for p in proba1]
        frame["proba_1"] = proba1
    return frame


def test_binary_metrics_match_sklearn_on_the_labelled_rows() -> None:
    rng = np.random.default_rng(0)
    n = 300
    proba = rng.random(n)
    pred = (proba > 0.5).astype(int)
    y = (rng.random(n) < proba).astype(int)
    window = _window(pred.tolist(), proba.tolist())
    labelled = rng.choice(n, 200, replace=False)
    # Labels arrive as JSON: a mix of ints, strings and booleans for the same classes.
    spell = [int, str, bool]
    labels = {f"p{i}": spell[i % 3](int(y[i])) for i in labelled}
    q = live_quality(window, labels, task="classification", classes=[0, 1], min_labelled_rows=30)
    assert q.labelled_rows == 200 and q.rows == n and q.coverage == pytest.approx(200 / 300)
    yt, yp, ps = y[labelled], pred[labelled], proba[labelled]
    assert q.metrics["accuracy"] == pytest.approx(skm.accuracy_score(yt, yp))
    assert q.metrics["precision"] == pytest.approx(skm.precision_score(yt, yp))
    assert q.metrics["recall"] == pytest.approx(skm.recall_score(yt, yp))
    assert q.metrics["f1"] == pytest.approx(skm.f1_score(yt, yp))
    assert q.metrics["roc_auc"] == pytest.approx(skm.roc_auc_score(yt, ps))


def test_one_class_window_has_no_auc_and_no_warning() -> None:
    window = _window([0, 0, 1, 0], [0.1, 0.2, 0.7, 0.3])
    q = live_quality(window, {f"p{i}": 0 for i in range(4)}, task="classification", classes=[0, 1])
    assert "roc_auc" not in q.metrics
    assert q.metrics["accuracy"] == 0.75 and q.metrics["precision"] == 0.0


def test_multiclass_uses_macro_averages() -> None:
    window = _window(["a", "b", "c", "a"])
    for c, p in zip("abc", ([0.8, 0.1, 0.1, 0.6], [0.1, 0.8, 0.2, 0.2], [0.1, 0.1, 0.7, 0.2]), strict=True):
        window[f"proba_{c}"] = p
    labels = {"p0": "a", "p1": "b", "p2": "b", "p3": "c"}
    q = live_quality(window, labels, task="classification", classes=["a", "b", "c"])
    yt, yp = ["a", "b", "b", "c"], ["a", "b", "c", "a"]
    assert q.metrics["f1_macro"] == pytest.approx(skm.f1_score(yt, yp, average="macro"))
    assert "precision" not in q.metrics and "roc_auc" in q.metrics


def test_regression_metrics() -> None:
    window = _window([1.0, 2.0, 3.0, 4.0])
    labels = {"p0": 1.5, "p1": 2.0, "p2": 2.0, "p3": "5"}
    q = live_quality(window, labels, task="regression")
    err = np.array([-0.5, 0.0, 1.0, -1.0])
    assert q.metrics["mae"] == pytest.approx(np.abs(err).mean())
    assert q.metrics["rmse"] == pytest.approx(math.sqrt((err**2).mean()))
    assert "r2" in q.metrics


def test_too_few_or_no_labels_give_counts_only() -> None:
    window = _window([0, 1, 1])
    none = live_quality(window, {}, task="classification", classes=[0, 1])
    assert none.labelled_rows == 0 and none.metrics == {} and "POST /feedback" in none.note
    few = live_quality(window, {"p0": 0, "p2": 1}, task="classification", classes=[0, 1], min_labelled_rows=3)
    assert few.labelled_rows == 2 and few.metrics == {} and "at least 3" in few.note
    empty = live_quality(window.iloc[:0], {}, task="classification")
    assert empty.rows == 0 and empty.coverage == 0.0


def test_round_trip() -> None:
    q = LiveQuality(metrics={"accuracy": 0.9}, labelled_rows=10, rows=20, min_labelled_rows=5, note="x")
    data = q.to_dict()
    assert data["coverage"] == 0.5
    assert LiveQuality.from_dict(data) == q
