import numpy as np
import pandas as pd
import pytest

from mloop.config import GateSettings, SplitSettings
from mloop.errors import TrainingError
from mloop.training import evaluate, evaluate_gates
from mloop.training.split import split_frame


def test_classification_metrics_binary() -> None:
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    m = evaluate("classification", y, proba.argmax(1), proba, [0, 1])
    assert m["accuracy"] == 1.0 and m["roc_auc"] == 1.0 and m["f1"] == 1.0
    assert {"precision", "recall", "pr_auc", "log_loss"} <= set(m)


def test_regression_metrics() -> None:
    m = evaluate("regression", [1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    assert m["mae"] == pytest.approx(1 / 3)
    assert m["rmse"] == pytest.approx((1 / 3) ** 0.5)
    assert "r2" in m


def test_thresholds_respect_direction() -> None:
    gates = GateSettings(thresholds={"roc_auc": 0.8, "log_loss": 0.5})
    ok = evaluate_gates(
        gates,
        {"roc_auc": 0.9, "log_loss": 0.3},
        metric="roc_auc",
        champion_metrics=None,
        champion_version=None,
    )
    assert ok.passed
    bad = evaluate_gates(
        gates,
        {"roc_auc": 0.9, "log_loss": 0.7},
        metric="roc_auc",
        champion_metrics=None,
        champion_version=None,
    )
    assert not bad.passed and "log_loss 0.7000 <= 0.5 NOT met" in bad.reason


def test_beat_champion_by_margin() -> None:
    gates = GateSettings(min_improvement=0.01)
    res = evaluate_gates(
        gates, {"roc_auc": 0.905}, metric="roc_auc", champion_metrics={"roc_auc": 0.9}, champion_version=3
    )
    assert not res.passed and "champion v3" in res.reason
    res = evaluate_gates(
        gates, {"roc_auc": 0.92}, metric="roc_auc", champion_metrics={"roc_auc": 0.9}, champion_version=3
    )
    assert res.passed


def test_threshold_on_unknown_metric() -> None:
    with pytest.raises(TrainingError, match="no such metric"):
        evaluate_gates(
            GateSettings(thresholds={"auc": 0.5}),
            {"roc_auc": 0.9},
            metric="roc_auc",
            champion_metrics=None,
            champion_version=None,
        )


def test_splits() -> None:
    df = pd.DataFrame({"t": range(100), "y": [0, 1] * 50})
    tr, te = split_frame(
        df, "y", SplitSettings(strategy="time", time_column="t", test_size=0.2), task="classification", seed=0
    )
    assert te["t"].min() > tr["t"].max() and len(te) == 20
    tr, te = split_frame(
        df, "y", SplitSettings(strategy="stratified", test_size=0.2), task="classification", seed=0
    )
    assert te["y"].mean() == 0.5
    with pytest.raises(TrainingError, match="time_column"):
        split_frame(df, "y", SplitSettings(strategy="time"), task="classification", seed=0)
    with pytest.raises(TrainingError, match="at least 10"):
        split_frame(df.head(5), "y", SplitSettings(), task="classification", seed=0)
