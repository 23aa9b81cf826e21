"""control.retrain_on_estimated_quality: a retrain when the estimate's whole interval is on the wrong side."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from mloop.config import Settings
from mloop.control.triggers import estimated_quality_trigger
from mloop.control.watch import TriggerWatch
from mloop.monitoring.estimation import EstimatedQuality


def _result(metric: str, value: float, lower: float, upper: float, gate: str | None = None) -> Any:
    est = EstimatedQuality("ok", "cbpe", {metric: value}, {metric: lower}, {metric: upper}, 900)
    ref = SimpleNamespace(metric=gate or metric)
    return SimpleNamespace(model="fraud", version="3", estimated=est, reference=ref, alerts=[])


def _settings(tmp_path: Path, threshold: float | None) -> Settings:
    return Settings(root=tmp_path, control={"retrain_on_estimated_quality": threshold})


def test_an_estimate_clearly_below_the_threshold_triggers_once_per_version(tmp_path: Path) -> None:
    trig = estimated_quality_trigger(_settings(tmp_path, 0.8), _result("roc_auc", 0.71, 0.68, 0.74))
    assert trig is not None and trig.kind == "estimated_quality"
    assert trig.key == "estimated_quality:fraud/v3"
    assert "estimated roc_auc of v3 is 0.71" in trig.reason and "below" in trig.reason
    assert trig.data["threshold"] == 0.8 and trig.data["upper"] == 0.74
    # Through the loop's watch, with no alert fired by the cycle.
    watch = TriggerWatch(_settings(tmp_path, 0.8), cast(Any, None), clock=cast(Any, None))
    assert watch.monitor_trigger(_result("roc_auc", 0.71, 0.68, 0.74)) == trig


def test_no_trigger_when_the_interval_reaches_the_threshold_or_it_is_off(tmp_path: Path) -> None:
    assert estimated_quality_trigger(_settings(tmp_path, 0.8), _result("roc_auc", 0.78, 0.75, 0.81)) is None
    assert estimated_quality_trigger(_settings(tmp_path, None), _result("roc_auc", 0.5, 0.4, 0.6)) is None
    # The gate metric is not one that is estimated (PR AUC): nothing to compare.
    assert (
        estimated_quality_trigger(_settings(tmp_path, 0.8), _result("f1", 0.1, 0.05, 0.2, "pr_auc")) is None
    )
    not_available = SimpleNamespace(model="m", version="1", estimated=EstimatedQuality(), reference=None)
    assert estimated_quality_trigger(_settings(tmp_path, 0.8), not_available) is None


def test_lower_is_better_metrics_trigger_above_the_threshold(tmp_path: Path) -> None:
    trig = estimated_quality_trigger(_settings(tmp_path, 10.0), _result("rmse", 14.0, 12.5, 15.5))
    assert trig is not None and "above" in trig.reason
    assert estimated_quality_trigger(_settings(tmp_path, 10.0), _result("rmse", 11.0, 9.5, 12.5)) is None
