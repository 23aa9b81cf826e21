"""One way to call a model: serving, batch and training agree on classes, predictions and probabilities."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression

from mloop.batch.scorer import Scorer
from mloop.data import infer_contract
from mloop.data.predict import model_classes, predict_with_proba
from mloop.serving.runtime import ModelRuntime
from mloop.tracking import LoadedModel, VersionInfo
from mloop.training.metrics import score_model
from mloop.training.preprocess import build_pipeline

FEATURES = ["amount", "hour", "country"]
LABELS: dict[str, list[Any]] = {
    "int": [0, 1, 2],
    "str": ["fraud", "ok"],
    "bool": [False, True],
}


def _frame(labels: list[Any], n: int = 240) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    amount = rng.uniform(1.0, 500.0, n).round(2)
    # The label follows the amount (so the models learn something) with some noise.
    bucket = np.minimum((amount / 500.0 * len(labels)).astype(int), len(labels) - 1)
    noisy = np.where(rng.random(n) < 0.1, rng.integers(0, len(labels), n), bucket)
    return pd.DataFrame(
        {
            "amount": amount,
            "hour": rng.integers(0, 24, n),
            "country": rng.choice(["DE", "FR", "US"], n),
            "label": pd.Series([labels[i] for i in noisy], dtype=type(labels[0])),
        }
    )


def _loaded(tmp: Path, model: Any, df: pd.DataFrame, task: str) -> LoadedModel:
    info = VersionInfo(
        name="toy",
        version=1,
        run_id=None,
        aliases=(),
        tags={},
        metrics={},
        created_at=0,
        status="READY",
        source=str(tmp),
    )
    contract = infer_contract(df, target="label", task=task)
    evaluation = {"features": {"numeric": ["amount", "hour"], "categorical": ["country"]}}
    return LoadedModel(
        info=info, model=model, contract=contract.to_dict(), profile=None, evaluation=evaluation, path=tmp
    )


@pytest.mark.parametrize("estimator", ["logistic", "forest"])
@pytest.mark.parametrize("kind", sorted(LABELS))
def test_serving_batch_and_training_agree(tmp_path: Path, kind: str, estimator: str) -> None:
    labels = LABELS[kind]
    df = _frame(labels)
    est = (
        LogisticRegression(max_iter=500)
        if estimator == "logistic"
        else RandomForestClassifier(5, random_state=0)
    )
    model = build_pipeline(["amount", "hour"], ["country"], est).fit(df[FEATURES], df["label"])
    loaded = _loaded(tmp_path, model, df, "classification")
    x = df[FEATURES]

    runtime = ModelRuntime(loaded)
    served, served_proba = runtime.predict_frame(x)
    columns = runtime.validator.from_records(x.to_dict(orient="records"))
    listed, listed_proba = runtime.predict_columns([columns])  # the compiled path, for the forest
    scorer = Scorer.from_loaded(loaded)
    batch, batch_proba = scorer.predict(x)
    trained = score_model(model, "classification", x, df["label"])

    # Classes: the same plain Python values everywhere, in the model's order.
    assert runtime.classes == scorer.classes == trained.classes == sorted(labels)
    assert all(type(c) is type(labels[0]) for c in runtime.classes + scorer.classes)
    assert all(type(c) is type(labels[0]) for c in trained.classes or [])
    # Predictions: what scikit-learn's predict says, as the same values on every path.
    expected = model.predict(x).tolist()
    assert served == listed == batch.tolist() == trained.predictions.tolist() == expected
    assert all(type(p) is type(labels[0]) for p in served + listed)
    json.dumps(served)  # plain values: no numpy scalars reach a response
    # Probabilities: one column per class, in the order of the classes.
    proba = model.predict_proba(x)
    assert served_proba is not None and listed_proba is not None and batch_proba is not None
    assert trained.proba is not None
    for got in (np.asarray(served_proba), np.asarray(listed_proba), batch_proba, trained.proba):
        np.testing.assert_allclose(got, proba, rtol=1e-7, atol=1e-9)
    # The batch output names its probability columns after the same classes.
    scored = scorer.score(df[FEATURES]).scored
    assert scored["prediction"].tolist() == expected
    assert [c for c in scored.columns if c.startswith("proba_")] == [f"proba_{c}" for c in sorted(labels)]


def test_a_regressor_is_called_through_predict_everywhere(tmp_path: Path) -> None:
    df = _frame([0, 1, 2]).astype({"label": "float64"})
    model = build_pipeline(["amount", "hour"], ["country"], RandomForestRegressor(5, random_state=0))
    model.fit(df[FEATURES], df["label"])
    loaded = _loaded(tmp_path, model, df, "regression")
    x = df[FEATURES]
    served, served_proba = ModelRuntime(loaded).predict_frame(x)
    batch, batch_proba = Scorer.from_loaded(loaded).predict(x)
    trained = score_model(model, "regression", x, df["label"])
    assert served_proba is None and batch_proba is None and trained.proba is None and trained.classes is None
    np.testing.assert_allclose(served, model.predict(x))
    np.testing.assert_allclose(batch, model.predict(x))
    np.testing.assert_allclose(trained.predictions, model.predict(x))


class _Proba:
    """A classifier-shaped model with numpy classes and fixed probabilities."""

    def __init__(self, classes: np.ndarray) -> None:
        self.classes_ = classes

    def predict_proba(self, frame: Any) -> list[list[float]]:
        return [[0.2, 0.8], [0.9, 0.1]][: len(frame)]

    def predict(self, frame: Any) -> list[Any]:
        return [self.classes_[1], self.classes_[0]][: len(frame)]


@pytest.mark.parametrize(
    ("classes", "kind"),
    [(np.array([3, 7]), int), (np.array(["a", "b"]), str), (np.array([False, True]), bool)],
)
def test_model_classes_are_plain_python_values(classes: np.ndarray, kind: type) -> None:
    model = _Proba(classes)
    found = model_classes(model)
    assert found == classes.tolist() and all(type(c) is kind for c in found)
    predictions, proba = predict_with_proba(model, [0, 1], found)
    assert predictions.tolist() == [classes[1].item(), classes[0].item()]
    assert proba is not None and proba.dtype == np.float64 and proba.shape == (2, 2)


def test_the_task_decides_how_a_model_is_called() -> None:
    model = _Proba(np.array([0, 1]))
    assert model_classes(model, "classification") == [0, 1]
    assert model_classes(model, None) == [0, 1]  # no task in the contract: predict_proba decides
    assert model_classes(model, "regression") is None
    assert model_classes(object(), "classification") is None  # no predict_proba: called through predict
    predictions, proba = predict_with_proba(model, [0, 1], None)
    assert proba is None and predictions.tolist() == [1, 0]
