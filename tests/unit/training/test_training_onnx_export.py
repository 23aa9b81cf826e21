"""The ONNX copy of a pipeline: exported and verified, not available, or refused on a mismatch."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier, RandomForestRegressor
from sklearn.neural_network import MLPClassifier

from mloop.tracking.onnx_io import MISSING_STRING, feeds_from_frame, feeds_from_lists
from mloop.training.onnx_export import OnnxTolerance, compare, export_onnx, input_kinds, session
from mloop.training.preprocess import build_pipeline

pytest.importorskip("skl2onnx", reason="the ONNX export needs mloop[onnx] (pip install 'mloop[onnx]')")
pytest.importorskip("onnxruntime", reason="verifying the ONNX copy needs mloop[onnx]")

FEATURES = ["amount", "hour", "flag", "country", "device"]


def _frame(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    amount = rng.uniform(1.0, 500.0, n).round(2)
    x = pd.DataFrame(
        {
            "amount": amount,
            "hour": rng.integers(0, 24, n),
            "flag": rng.random(n) < 0.3,
            "country": rng.choice(["DE", "FR", "US"], n).astype(object),
            "device": rng.choice(["mobile", "desktop"], n).astype(object),
        }
    )
    x.loc[x.index % 7 == 0, "amount"] = np.nan  # missing numbers: the median imputer
    x.loc[x.index % 11 == 0, "country"] = None  # missing categories: the constant imputer
    y = pd.Series(((amount > 250) ^ (x["country"] == "US")).astype(int), name="label")
    return x, y


def _fit(estimator: Any) -> tuple[Any, pd.DataFrame]:
    x, y = _frame()
    model = build_pipeline(["amount", "hour", "flag"], ["country", "device"], estimator)
    model.fit(x, y if hasattr(estimator, "predict_proba") else x["hour"] * 2.0 + y)
    return model, _frame(200, seed=1)[0]


@pytest.mark.parametrize(
    "estimator",
    [
        RandomForestClassifier(n_estimators=20, random_state=0),
        HistGradientBoostingClassifier(max_iter=20, random_state=0),
        MLPClassifier(hidden_layer_sizes=(16,), max_iter=2000, random_state=0),
    ],
    ids=["forest", "hist_gradient_boosting", "mlp"],
)
def test_a_classifier_pipeline_exports_and_verifies(estimator: Any) -> None:
    model, holdout = _fit(estimator)
    result = export_onnx(model, holdout)
    assert result.status == "verified", result.reason
    assert result.model is not None and result.tag == "verified"
    report = result.report
    assert report["rows"] == len(holdout) and report["label_agreement"] >= 0.99
    assert report["max_abs_diff"] <= report["tolerance"]["max_abs_diff"]
    assert report["inputs"] == [[c, "string" if c in ("country", "device") else "double"] for c in FEATURES]
    assert report["max_abs_diff"] < 1e-5
    assert report["classes"] == ["0", "1"] and set(report["versions"]) >= {"onnx", "onnxruntime", "skl2onnx"}
    # The saved copy answers the same rows with the same classes, missing values included.
    proba = session(result.model).run(None, feeds_from_frame(report["inputs"], holdout))[1]
    np.testing.assert_allclose(proba, model.predict_proba(holdout), atol=report["tolerance"]["max_abs_diff"])


def test_a_regressor_pipeline_exports_and_verifies() -> None:
    model, holdout = _fit(RandomForestRegressor(n_estimators=10, random_state=0))
    result = export_onnx(model, holdout)
    assert result.status == "verified", result.reason
    assert result.report["max_rel_diff"] <= 1e-3 and "label_agreement" not in result.report


@pytest.mark.parametrize("booster", ["lightgbm", "xgboost"])
def test_boosters_convert_through_onnxmltools(booster: str) -> None:
    module = pytest.importorskip(booster, reason=f"the {booster} estimator needs mloop[{booster}]")
    estimator = (
        module.LGBMClassifier(n_estimators=20, verbose=-1, random_state=0)
        if booster == "lightgbm"
        else module.XGBClassifier(n_estimators=20, max_depth=3, random_state=0)
    )
    model, holdout = _fit(estimator)
    result = export_onnx(model, holdout)
    assert result.status == "verified", result.reason
    assert result.report["max_abs_diff"] < 1e-4


class _Majority(ClassifierMixin, BaseEstimator):
    """A classifier no converter knows."""

    def fit(self, x: Any, y: Any) -> _Majority:
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, x: Any) -> np.ndarray:
        return np.tile([1.0, 0.0], (len(x), 1))

    def predict(self, x: Any) -> np.ndarray:
        return np.asarray(self.classes_[np.zeros(len(x), dtype=int)])


def test_an_unknown_estimator_is_not_available_and_does_not_raise() -> None:
    model, holdout = _fit(_Majority())
    result = export_onnx(model, holdout)
    assert result.status == "not available" and result.model is None
    assert result.tag.startswith("not available: _Majority could not be converted")


def test_a_date_time_feature_cannot_be_an_input() -> None:
    x, _ = _frame(10)
    x["when"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(x["hour"], unit="h")
    with pytest.raises(ValueError, match="'when' holds date-times"):
        input_kinds(object(), x)
    model, _ = _fit(RandomForestClassifier(n_estimators=5, random_state=0))
    assert [name for name, _ in input_kinds(model, x)] == FEATURES  # a column the model drops is no input


def test_a_copy_that_differs_from_the_pipeline_is_refused() -> None:
    model, holdout = _fit(RandomForestClassifier(n_estimators=20, random_state=0))
    wrong = 1.0 - model.predict_proba(holdout)  # a deliberate mismatch: the classes swapped
    result = export_onnx(model, holdout, reference=wrong)
    assert result.status == "refused" and result.model is None
    assert result.tag.startswith("refused: probabilities differ by up to")
    assert result.report["label_agreement"] < 0.5


def test_tolerance_bounds_probabilities_and_labels() -> None:
    theirs = np.array([[0.9, 0.1], [0.4, 0.6]])
    tol = OnnxTolerance(max_abs_diff=0.05, min_label_agreement=1.0)
    assert compare(theirs + np.array([[-0.01, 0.01], [0, 0]]), theirs, is_classifier=True, tolerance=tol)[0]
    ok, reason, numbers = compare(
        theirs + np.array([[-0.5, 0.5], [0, 0]]), theirs, is_classifier=True, tolerance=tol
    )
    assert not ok and "0.5" in reason and numbers["label_agreement"] == 0.5
    flipped = np.array([[0.9, 0.1], [0.62, 0.38]])  # within 0.05 of nothing: both limits say no
    assert not compare(flipped, theirs, is_classifier=True, tolerance=OnnxTolerance(max_abs_diff=1.0))[0]


def test_missing_values_become_nan_and_the_missing_marker() -> None:
    kinds = [("amount", "float"), ("country", "string")]
    feeds = feeds_from_lists(kinds, {"amount": [1.5, None, True], "country": ["DE", None, 3]})
    assert np.isnan(feeds["amount"][1, 0]) and feeds["amount"][2, 0] == 1.0
    assert feeds["country"][:, 0].tolist() == ["DE", MISSING_STRING, "3"]
    frame = pd.DataFrame({"amount": [1.0, np.nan], "country": pd.Series(["FR", None], dtype="string")})
    feeds = feeds_from_frame(kinds, frame)
    assert feeds["amount"].dtype == np.float32 and feeds["country"][:, 0].tolist() == ["FR", MISSING_STRING]


def test_integer_features_are_scaled_as_scikit_learn_scales_them() -> None:
    # A forest's thresholds often sit exactly on an integer feature's scaled values; scaling in float32
    # (skl2onnx's own converter) moved them an ulp and whole groups of rows took the other branch.
    rng = np.random.default_rng(3)
    x = pd.DataFrame({"hour": rng.integers(0, 24, 600), "count": rng.integers(0, 9, 600)})
    y = ((x["hour"] * 7 + x["count"] * 3) % 5 < 2).astype(int)
    model = build_pipeline(["hour", "count"], [], RandomForestClassifier(n_estimators=50, random_state=0))
    model.fit(x, y)
    result = export_onnx(model, x)
    assert result.status == "verified" and result.report["max_abs_diff"] < 1e-5
