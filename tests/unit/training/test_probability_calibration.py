"""The quality estimator fitted at training time and saved with the version as JSON (no pickle)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import mlflow
import numpy as np
import pandas as pd
import pytest

from mloop.config import load_settings
from mloop.monitoring import ModelReference
from mloop.monitoring.estimation import ESTIMATOR_FILE, estimate_quality
from mloop.project import init_project
from mloop.training.artifacts import log_run_files
from mloop.training.pipeline import STEPS
from mloop.training.probability_calibration import fit_calibrator, fit_quality_estimator
from mloop.training.run import TrainRun


class _NoRegistry:
    def by_alias(self, alias: str) -> None:
        return None


def test_the_calibration_travels_with_the_version_and_reads_back_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    init_project(tmp_path / "p", template="fraud", rows=1500)
    fast = {"model": {"estimator": "random_forest", "params": {"n_estimators": 10}}, "tuning": {"trials": 0}}
    settings = load_settings(tmp_path / "p" / "mloop.yaml", overrides=fast)
    run = TrainRun(settings, store=cast(Any, None), registry=cast(Any, _NoRegistry()), run_id="r", say=print)
    for name, step in STEPS:
        step(run)
        if name == "calibrate":
            break
    est = run.quality_estimator
    assert est.status == "ok" and est.classes == [str(c) for c in run.scored.classes or []]
    assert est.calibrators[0].method == "sigmoid"  # 300 holdout rows: too few for isotonic
    # The log step writes it beside the contract, profile and evaluation (MLflow calls stubbed).
    monkeypatch.setattr(mlflow, "log_artifact", lambda *a, **k: None)
    out = tmp_path / "extra_files"
    out.mkdir()
    files = log_run_files(run, out)
    assert out / ESTIMATOR_FILE in files
    text = (out / ESTIMATOR_FILE).read_text(encoding="utf-8")
    assert json.loads(text)["format"] == 1  # plain JSON: numbers and names, nothing to execute
    loaded = cast(Any, type("Loaded", (), {}))()
    loaded.info = type("Info", (), {"name": "fraud-detector", "version": 1})()
    loaded.profile = json.loads((out / "profile.json").read_text(encoding="utf-8"))
    loaded.evaluation = json.loads((out / "evaluation.json").read_text(encoding="utf-8"))
    loaded.path = tmp_path
    ref = ModelReference.from_loaded(loaded)
    assert ref.estimator is not None and ref.metric == run.holdout.metric
    proba = run.scored.proba
    assert proba is not None
    assert np.array_equal(ref.estimator.calibrate(proba), est.calibrate(proba))
    frame = pd.DataFrame({"prediction": run.scored.predictions})
    for k, c in enumerate(est.classes):
        frame[f"proba_{c}"] = proba[:, k]
    assert estimate_quality(frame, ref.estimator).metrics == estimate_quality(frame, est).metrics


def test_isotonic_on_large_holdouts_platt_on_small_ones() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, 5000)
    y = rng.random(5000) < p**2  # the model overstates every probability
    iso = fit_calibrator(p, y)
    assert iso.method == "isotonic"
    assert abs(float(iso.apply(np.array([0.5]))[0]) - 0.25) < 0.05
    platt = fit_calibrator(p[:400], y[:400])
    assert platt.method == "sigmoid" and float(platt.apply(np.array([0.5]))[0]) < 0.4
    assert fit_calibrator(p[:50], np.zeros(50, dtype=bool)).method == "identity"  # one class only


def test_holdout_labels_in_any_spelling_count_and_missing_ones_are_left_out() -> None:
    rng = np.random.default_rng(2)
    p = rng.uniform(0, 1, 1200)
    y = (rng.random(1200) < p).astype(int)
    spellings = np.array([[0, "0", 0.0, False], [1, "1", 1.0, True]], dtype=object)
    mixed = spellings[y, rng.integers(0, 4, 1200)]
    mixed[::10] = None  # no label: the row is left out
    mixed[5::10] = "2"  # not one of the model's classes: left out too
    proba = np.column_stack([1 - p, p])
    est = fit_quality_estimator("classification", predictions=None, proba=proba, classes=[0, 1], y_true=mixed)
    keep = np.ones(1200, dtype=bool)
    keep[::10] = keep[5::10] = False
    clean = fit_quality_estimator(
        "classification", predictions=None, proba=proba[keep], classes=[0, 1], y_true=y[keep]
    )
    assert est.holdout == clean.holdout and est.holdout["rows"] == 960
    assert est.calibrators == clean.calibrators
