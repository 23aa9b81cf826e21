"""The prediction distribution kept per monitoring window: class shares or quantiles."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from monitoring_live_helpers import NAME, reference, send, settings

from mloop.monitoring import run_monitor
from mloop.monitoring.cycle_result import MAX_CLASS_SHARES, prediction_summary
from mloop.monitoring.history import window_history
from mloop.predlog import MemoryPredictionLog
from mloop.store import open_store


def test_classifiers_keep_the_share_of_each_predicted_class() -> None:
    outputs = pd.DataFrame({"prediction": ["a", "b", "a", "a", None]})
    found = prediction_summary(outputs, "classification")
    assert found == {"kind": "classes", "rows": 4, "shares": {"a": 0.75, "b": 0.25}}


def test_rare_classes_beyond_the_cap_are_summed_as_other() -> None:
    labels = [f"c{i:02d}" for i in range(MAX_CLASS_SHARES + 5)]
    outputs = pd.DataFrame({"prediction": labels + ["c00"] * 10})
    found = prediction_summary(outputs, "classification")
    assert found is not None
    shares = found["shares"]
    assert len(shares) == MAX_CLASS_SHARES + 1 and shares["c00"] == pytest.approx(11 / 35)
    assert shares["(other)"] == pytest.approx(5 / 35)
    assert sum(shares.values()) == pytest.approx(1.0)


def test_regressors_keep_three_quantiles() -> None:
    outputs = pd.DataFrame({"prediction": [float(v) for v in range(101)]})
    found = prediction_summary(outputs, "regression")
    assert found == {"kind": "quantiles", "rows": 101, "quantiles": {"p10": 10.0, "p50": 50.0, "p90": 90.0}}


def test_no_predictions_no_summary() -> None:
    assert prediction_summary(None, "classification") is None
    assert prediction_summary(pd.DataFrame({"prediction": [None, None]}), "regression") is None


def test_each_window_records_its_prediction_distribution(tmp_path: Path) -> None:
    log = MemoryPredictionLog()
    with open_store(f"sqlite:///{tmp_path / 'mloop.db'}") as store:
        send(log, store, 300, seed=3)
        result = run_monitor(
            settings(tmp_path), reference=reference(), store=store, prediction_log=log, reports=False
        )
        stored = window_history(store, NAME, "1")[-1]
    assert result.outputs_frame is not None
    expected = result.outputs_frame["prediction"].astype(str).value_counts(normalize=True)
    assert stored["predictions"]["kind"] == "classes" and stored["predictions"]["rows"] == 300
    assert stored["predictions"]["shares"] == pytest.approx({str(k): float(v) for k, v in expected.items()})
