"""A monitoring cycle estimates quality before labels arrive; realized quality catches what it cannot see."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from monitoring_live_helpers import features, reference, score, send, settings, truth

from mloop.monitoring import ModelReference, MonitoringGauges, run_monitor
from mloop.monitoring.history import latest_window
from mloop.predlog import MemoryPredictionLog
from mloop.store import open_store
from mloop.training.probability_calibration import fit_quality_estimator


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Any]:
    with open_store(f"sqlite:///{tmp_path / 'mloop.db'}") as s:
        yield s


def _reference() -> ModelReference:
    """The toy reference with an estimator fitted on its holdout, as `mloop train` saves it."""
    ref = reference()
    holdout = features(1500, 2)
    p = score(holdout)
    ref.estimator = fit_quality_estimator(
        "classification",
        predictions=(p >= 0.5).astype(int),
        proba=np.column_stack([1 - p, p]),
        classes=[0, 1],
        y_true=truth(holdout, 2),
    )
    ref.metric = "roc_auc"
    return ref


def test_a_window_without_labels_gets_an_estimate_a_gauge_and_a_plot(tmp_path: Path, store: Any) -> None:
    log = MemoryPredictionLog()
    recs = send(log, store, 800, seed=21, label_share=0.0)
    cfg = settings(tmp_path, multivariate=False)  # not under test here, and the slowest part
    result = run_monitor(cfg, reference=_reference(), store=store, prediction_log=log, reports=True)
    assert result.quality.labelled_rows == 0 and result.quality.metrics == {}
    est = result.estimated
    assert est.status == "ok" and est.method == "cbpe" and est.rows == 800
    assert set(est.metrics) == {"accuracy", "precision", "recall", "f1", "roc_auc"}
    # The labels that will arrive later (drawn from the toy model's own probabilities).
    frame = features(800, 21)
    y, pred = truth(frame, 21), np.array([r.prediction for r in recs])
    realized = float((y == pred).mean())
    assert est.lower["accuracy"] <= realized <= est.upper["accuracy"]
    stored = latest_window(store, "toy", "1")
    assert stored is not None
    assert stored["estimated_quality"]["metrics"]["accuracy"] == pytest.approx(est.metrics["accuracy"])
    gauges = MonitoringGauges()
    gauges.update(stored)
    labels = {"model": "toy", "version": "1", "metric": "roc_auc"}
    assert gauges.sample("mloop_estimated_quality", labels) == pytest.approx(est.metrics["roc_auc"])
    upper = gauges.sample("mloop_estimated_quality_bound", {**labels, "bound": "upper"})
    assert upper == pytest.approx(est.upper["roc_auc"])
    html = result.reports["html"].read_text(encoding="utf-8")
    assert "Estimated quality" in html and "Estimated (no labels" in html


def test_a_changed_concept_is_invisible_to_the_estimate_and_caught_once_labels_arrive(
    tmp_path: Path, store: Any
) -> None:
    log = MemoryPredictionLog()
    # Same inputs as the training data, but the outcome is inverted: P(y|x) changed, P(x) did not.
    send(log, store, 800, seed=22, label_share=1.0, flip=True)
    rule = {"name": "acc", "when": "quality", "metric": "accuracy", "below": 0.6}
    cfg = settings(tmp_path, alerts=[rule], multivariate=False)
    result = run_monitor(cfg, reference=_reference(), store=store, prediction_log=log, notify=False)
    assert result.drift is not None and not result.drift.dataset_drifted
    est, live = result.estimated.metrics["accuracy"], result.quality.metrics["accuracy"]
    assert est > 0.7  # as confident as on the holdout: the inputs look the same
    assert live < 0.4  # the labels say otherwise
    assert result.estimated.lower["accuracy"] > live
    assert [a.rule for a in result.alerts] == ["acc"]
