"""Monitoring gauges: the contract's names and labels, values from a window summary, stale labels dropped."""

from __future__ import annotations

import math
from typing import Any

from prometheus_client import generate_latest

from mloop.monitoring import MonitoringGauges


def _summary(version: str = "3", scores: dict[str, float] | None = None, **quality: Any) -> dict[str, Any]:
    scores = scores if scores is not None else {"amount": 0.31, "country": 0.02}
    return {
        "model": "fraud",
        "version": version,
        "ts": "2025-05-01T12:00:00+00:00",
        "drift": {
            "share_drifted": 0.5,
            "scores": scores,
            "detected": {k: v > 0.1 for k, v in scores.items()},
        },
        "quality": {"metrics": quality or {"accuracy": 0.91, "roc_auc": 0.83}, "labelled_rows": 120},
    }


def test_gauges_follow_the_metrics_contract() -> None:
    g = MonitoringGauges()
    g.update(_summary())
    assert g.sample("mloop_drift_score", {"model": "fraud", "feature": "amount"}) == 0.31
    assert g.sample("mloop_drift_detected", {"model": "fraud", "feature": "amount"}) == 1.0
    assert g.sample("mloop_drift_detected", {"model": "fraud", "feature": "country"}) == 0.0
    assert g.sample("mloop_drift_share", {"model": "fraud"}) == 0.5
    labels = {"model": "fraud", "version": "3", "metric": "roc_auc"}
    assert g.sample("mloop_live_quality", labels) == 0.83
    assert g.sample("mloop_labelled_rows", {"model": "fraud", "version": "3"}) == 120
    text = generate_latest(g.registry).decode()
    for name in ("mloop_drift_score", "mloop_drift_detected", "mloop_drift_share", "mloop_live_quality"):
        assert f"# TYPE {name} gauge" in text
    assert 'mloop_labelled_rows{model="fraud",version="3"} 120.0' in text


def test_features_and_metrics_that_left_are_removed() -> None:
    g = MonitoringGauges()
    g.update(_summary())
    g.update(_summary(scores={"amount": 0.05}, accuracy=0.7))
    assert g.sample("mloop_drift_score", {"model": "fraud", "feature": "country"}) is None
    assert g.sample("mloop_drift_score", {"model": "fraud", "feature": "amount"}) == 0.05
    gone = {"model": "fraud", "version": "3", "metric": "roc_auc"}
    assert g.sample("mloop_live_quality", gone) is None
    assert g.sample("mloop_live_quality", {**gone, "metric": "accuracy"}) == 0.7


def test_untestable_feature_is_nan_and_versions_keep_their_quality() -> None:
    g = MonitoringGauges()
    g.update(_summary())
    summary = _summary(version="4")
    summary["drift"]["scores"]["amount"] = None
    g.update(summary)
    value = g.sample("mloop_drift_score", {"model": "fraud", "feature": "amount"})
    assert value is not None and math.isnan(value)
    assert g.sample("mloop_labelled_rows", {"model": "fraud", "version": "3"}) == 120
    assert g.sample("mloop_labelled_rows", {"model": "fraud", "version": "4"}) == 120
    assert g.last_ts["fraud"] == "2025-05-01T12:00:00+00:00"


def test_every_public_name_is_exported() -> None:
    import mloop.monitoring as monitoring

    assert len(set(monitoring.__all__)) == len(monitoring.__all__)
    for name in monitoring.__all__:
        assert hasattr(monitoring, name), name
    for name in ("run_monitor", "MonitorResult", "MonitoringGauges", "BackgroundMonitor", "LiveQuality"):
        assert name in monitoring.__all__
