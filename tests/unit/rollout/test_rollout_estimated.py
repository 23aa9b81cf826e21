"""The canary's quality estimated before labels arrive: the check on its own, and in the controller.

Scores, labels and probabilities are generated here (seeded): the versions' estimators are fitted on
simulated holdouts exactly as training fits them (:func:`fit_quality_estimator`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from mloop.config import Settings
from mloop.config.settings import RolloutSettings
from mloop.monitoring.estimation import EstimatedQuality, QualityEstimator
from mloop.predlog import MemoryPredictionLog
from mloop.predlog.record import PredictionRecord, new_prediction_id
from mloop.rollout import RolloutController
from mloop.rollout.checks import look_alpha
from mloop.rollout.estimated import estimate_arm, estimated_quality_check_of
from mloop.training.probability_calibration import fit_quality_estimator

POSITIVES = 0.08


def _scored(n: int, separation: float, seed: int, majority: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Labels and positive-class probabilities of a binormal scorer (``majority``: a constant one)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < POSITIVES).astype(int)
    s = rng.normal(0, 1, n) + y * separation
    if majority:
        s = rng.normal(0, 1, n) * 1e-3 - 5.0
    return y, 1 / (1 + np.exp(-(s - 2.5)))


def _estimator(separation: float, majority: bool = False) -> QualityEstimator:
    y, p = _scored(20_000, separation, seed=99, majority=majority)
    proba = np.column_stack([1 - p, p])
    return fit_quality_estimator(
        "classification", predictions=(p > 0.5).astype(int), proba=proba, classes=[0, 1], y_true=y
    )


def _rows(n: int, separation: float, seed: int, majority: bool = False) -> pd.DataFrame:
    """What the prediction log holds of an arm: predictions and probabilities, no labels."""
    _, p = _scored(n, separation, seed, majority)
    return pd.DataFrame({"prediction": (p > 0.5).astype(int), "proba_0": 1 - p, "proba_1": p})


GOOD, WORSE = 2.0, 1.2  # ROC AUC about 0.92 and 0.80


@pytest.fixture(scope="module")
def estimators() -> dict[str, QualityEstimator]:
    return {"good": _estimator(GOOD), "worse": _estimator(WORSE), "majority": _estimator(GOOD, majority=True)}


def _check(estimators: dict[str, QualityEstimator], canary: str, n: int, metric: str = "roc_auc") -> Any:
    cfg = RolloutSettings(max_quality_drop=0.02)
    base = estimate_arm(_rows(n, GOOD, seed=1), estimators["good"], min_rows=100)
    separation = WORSE if canary == "worse" else GOOD
    can = estimate_arm(
        _rows(n, separation, seed=2, majority=canary == "majority"), estimators[canary], min_rows=100
    )
    return estimated_quality_check_of(base, can, metric, cfg, look_alpha(cfg, 1))


def test_a_clearly_worse_canary_fails_before_any_label(estimators: dict[str, QualityEstimator]) -> None:
    worse = _check(estimators, "worse", 5000)
    assert worse.status == "failed" and "no labels" in worse.detail, worse.detail
    majority = _check(estimators, "majority", 5000)
    assert majority.status == "failed", majority.detail


def test_an_equal_canary_is_never_failed_nor_verified_by_an_estimate(
    estimators: dict[str, QualityEstimator],
) -> None:
    statuses = []
    for seed in range(20):
        cfg = RolloutSettings(max_quality_drop=0.02)
        base = estimate_arm(_rows(3000, GOOD, seed=seed), estimators["good"], min_rows=100)
        can = estimate_arm(_rows(3000, GOOD, seed=1000 + seed), estimators["good"], min_rows=100)
        statuses.append(estimated_quality_check_of(base, can, "roc_auc", cfg, look_alpha(cfg, 1)).status)
    assert set(statuses) == {"inconclusive"}  # "passed" would be a verification without labels


def test_what_cannot_be_estimated_is_not_evaluated(estimators: dict[str, QualityEstimator]) -> None:
    assert _check(estimators, "worse", 5000, metric="pr_auc").status == "not_evaluated"
    cfg = RolloutSettings()
    some = estimate_arm(_rows(500, GOOD, seed=3), estimators["good"], min_rows=100)
    none = estimate_arm(_rows(500, GOOD, seed=4), None, min_rows=100)
    check = estimated_quality_check_of(some, none, "roc_auc", cfg, 0.01)
    assert check.status == "not_evaluated" and "quality estimator" in check.detail
    few = estimate_arm(_rows(50, GOOD, seed=5), estimators["good"], min_rows=100)
    assert estimated_quality_check_of(some, few, "roc_auc", cfg, 0.01).status == "not_evaluated"
    assert isinstance(few, EstimatedQuality) and few.status == "not_available"


def test_the_controller_rolls_back_a_majority_class_canary_before_labels(store, registry, estimators) -> None:
    predlog = MemoryPredictionLog()
    settings = Settings.model_validate(
        {
            "model": {"name": "fraud"},
            "rollout": {"steps": [50, 100], "min_requests_per_step": 2000, "quality_metric": "roc_auc"},
        }
    )
    ctl = RolloutController(
        settings,
        store=store,
        registry=registry,
        predlog=predlog,
        model_name="fraud",
        estimators={"1": estimators["good"], "2": estimators["majority"]},
    )
    r = ctl.start(strategy="canary")
    for arm, version, majority in (("champion", "1", False), ("canary", "2", True)):
        ctl.repo.write_counters(r.id, "p1", {arm: (3000, 0)})
        rows = _rows(3000, GOOD, seed=int(version), majority=majority)
        predlog.write_batch(
            [
                PredictionRecord(
                    new_prediction_id(),
                    "fraud",
                    version,
                    {"x": 1},
                    int(row.prediction),
                    probabilities={0: float(row.proba_0), 1: float(row.proba_1)},
                    latency_ms=5.0,
                    arm=arm,
                )
                for row in rows.itertuples()
            ]
        )
    r = ctl.advance(r.id)
    assert r.state == "rolled_back", r.reason
    assert "estimated_quality check failed" in r.reason and "no labels" in r.reason
