"""The compiled fast path answers exactly as scikit-learn: random forests, pipelines, fallbacks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from mloop.serving.fastpath import compile_columns, compile_model, compile_trees
from mloop.training.preprocess import build_pipeline

CLASSIFIERS = {"rf": RandomForestClassifier, "et": ExtraTreesClassifier, "dt": DecisionTreeClassifier}
REGRESSORS = {"rf": RandomForestRegressor, "et": ExtraTreesRegressor, "dt": DecisionTreeRegressor}


def _estimator(cls: type, n_trees: int, depth: int | None, seed: int) -> Any:
    params: dict[str, Any] = {"max_depth": depth, "random_state": seed}
    if cls not in (DecisionTreeClassifier, DecisionTreeRegressor):
        params["n_estimators"] = n_trees
    return cls(**params)


def _probe_rows(X: np.ndarray, compiled: Any, rng: np.random.Generator) -> np.ndarray:
    """Fresh rows plus rows sitting on (and one float step around) the learned thresholds."""
    fresh = rng.normal(size=(16, X.shape[1])) * X.std(axis=0) + X.mean(axis=0)
    inner = ~compiled.is_leaf
    feats, thrs = compiled.feature[inner], compiled.threshold[inner]
    edge = np.repeat(X[:1], 3 * min(len(thrs), 20), axis=0)
    for i, (f, t) in enumerate(zip(feats[:20], thrs[:20], strict=False)):
        edge[3 * i : 3 * i + 3, f] = [t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf)]
    return np.vstack([X, fresh, edge])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    kind=st.sampled_from(sorted(CLASSIFIERS)),
    n_classes=st.integers(2, 4),
    n_features=st.integers(1, 6),
    n_trees=st.integers(1, 12),
    depth=st.one_of(st.none(), st.integers(1, 8)),
)
def test_classifiers_match_sklearn(
    seed: int, kind: str, n_classes: int, n_features: int, n_trees: int, depth: int | None
) -> None:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(60, n_features)).round(rng.integers(0, 4))
    y = rng.integers(0, n_classes, 60)
    y[:n_classes] = np.arange(n_classes)  # every class present
    est = _estimator(CLASSIFIERS[kind], n_trees, depth, seed).fit(X, y)
    compiled = compile_trees(est)
    assert compiled is not None and compiled.is_classifier
    probe = _probe_rows(X, compiled, rng)
    fast, slow = compiled.mean_value(probe), est.predict_proba(probe)
    assert fast.shape == slow.shape
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)
    assert np.array_equal(fast.argmax(axis=1), slow.argmax(axis=1))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    kind=st.sampled_from(sorted(REGRESSORS)),
    n_features=st.integers(1, 6),
    n_trees=st.integers(1, 12),
    depth=st.one_of(st.none(), st.integers(1, 8)),
)
def test_regressors_match_sklearn(
    seed: int, kind: str, n_features: int, n_trees: int, depth: int | None
) -> None:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(60, n_features)) * 100
    y = X @ rng.normal(size=n_features) + rng.normal(size=60)
    est = _estimator(REGRESSORS[kind], n_trees, depth, seed).fit(X, y)
    compiled = compile_trees(est)
    assert compiled is not None and not compiled.is_classifier
    probe = _probe_rows(X, compiled, rng)
    np.testing.assert_allclose(compiled.mean_value(probe)[:, 0], est.predict(probe), rtol=0, atol=1e-12)


def test_sums_are_bit_identical_for_a_larger_forest() -> None:
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(300, 5)), rng.integers(0, 3, 300)
    est = RandomForestClassifier(n_estimators=40, random_state=0).fit(X, y)
    compiled = compile_trees(est)
    assert compiled is not None
    probe = rng.normal(size=(130, 5))
    assert np.array_equal(compiled.mean_value(probe), est.predict_proba(probe))
    assert np.array_equal(compiled.mean_value(probe[:1]), est.predict_proba(probe[:1]))


def test_unsupported_estimators_are_not_compiled() -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    assert compile_trees(LogisticRegression().fit(X, y)) is None
    assert compile_trees(HistGradientBoostingClassifier(max_iter=3).fit(X, y)) is None
    assert compile_trees(RandomForestClassifier(n_estimators=2)) is None  # not fitted
    multi = RandomForestRegressor(n_estimators=2, random_state=0).fit(X, rng.normal(size=(40, 2)))
    assert compile_trees(multi) is None


class _Shifted(RandomForestClassifier):
    """A user's subclass that changes the answer: compiling its trees would skip the override."""

    def predict_proba(self, X: Any) -> Any:
        return 1.0 - super().predict_proba(X)


def test_subclasses_that_may_override_prediction_are_not_compiled() -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    assert compile_trees(_Shifted(n_estimators=2, random_state=0).fit(X, y)) is None
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    model = build_pipeline(["a", "b", "c"], [], _Shifted(n_estimators=2, random_state=0)).fit(frame, y)
    assert compile_model(model) is None


# -- the mloop pipeline: preprocessing + forest -------------------------------------------------------
def _frame(n: int, seed: int, *, holes: bool) -> pd.DataFrame:
    """Columns typed as mloop's training and serving frames type them (pandas' str for categories)."""
    rng = np.random.default_rng(seed)
    amount = rng.uniform(1.0, 500.0, n).round(2)
    hours = pd.array(rng.integers(0, 24, n), dtype="Int64")
    country: list[Any] = rng.choice(["DE", "FR", "US", "NL"], n).tolist()
    if holes:
        amount[rng.random(n) < 0.1] = np.nan
        hours[rng.random(n) < 0.1] = pd.NA
        country = [None if r < 0.1 else c for c, r in zip(country, rng.random(n), strict=True)]
    return pd.DataFrame(
        {
            "amount": amount,
            "hour": hours,
            "vip": rng.integers(0, 2, n).astype(bool),
            "country": pd.Series(country, dtype="str"),
            "device": pd.Series(rng.choice(["mobile", "web"], n).tolist(), dtype="str"),
        }
    )


def _fitted(estimator: Any, seed: int = 0) -> tuple[Any, pd.DataFrame]:
    train = _frame(300, seed, holes=True)
    y = (train["amount"].fillna(0) > 250).astype(int) + (train["country"] == "US").astype(int)
    if not hasattr(estimator, "predict_proba"):
        y = train["amount"].fillna(0) * 2.0
    pipe = build_pipeline(["amount", "hour", "vip"], ["country", "device"], estimator)
    return pipe.fit(train, y), train


def _serving_frame(seed: int) -> pd.DataFrame:
    frame = _frame(80, seed, holes=True)
    frame.loc[3, "country"] = "ZZ"  # unseen at training: all-zero one-hot
    frame.loc[4, "device"] = "__missing__"
    return frame


def _lists(frame: pd.DataFrame) -> dict[str, list[Any]]:
    """The frame as the validator hands it over: plain lists, None for missing values."""
    out: dict[str, list[Any]] = {}
    for name in frame.columns:
        col = frame[name].astype(object).where(frame[name].notna(), None)
        out[name] = col.tolist()
    return out


@pytest.mark.parametrize(
    "estimator",
    [
        RandomForestClassifier(n_estimators=15, random_state=0),
        ExtraTreesClassifier(n_estimators=10, max_depth=6, random_state=0),
        DecisionTreeClassifier(random_state=0),
        RandomForestRegressor(n_estimators=10, random_state=0),
    ],
    ids=["rf", "extra-trees", "tree", "rf-regressor"],
)
def test_pipeline_matches_sklearn_on_frames_and_lists(estimator: Any) -> None:
    pipe, _ = _fitted(estimator)
    compiled = compile_model(pipe)
    assert compiled is not None and compiled.columns is not None
    frame = _serving_frame(7)
    expected_X = pipe[:-1].transform(frame)
    assert np.array_equal(compiled.columns.transform(frame), expected_X)
    assert np.array_equal(compiled.columns.transform_lists(_lists(frame), len(frame)), expected_X)
    if hasattr(estimator, "predict_proba"):
        expected = pipe.predict_proba(frame)
        assert np.array_equal(compiled.predict_proba(frame), expected)
        assert np.array_equal(compiled.mean_lists(_lists(frame), len(frame)), expected)
        assert np.array_equal(compiled.predict(frame), pipe.predict(frame))
    else:
        expected = pipe.predict(frame)
        assert np.array_equal(compiled.predict(frame), expected)
        assert np.array_equal(compiled.mean_lists(_lists(frame), len(frame))[:, 0], expected)
    assert compiled.fallbacks == 0


def test_preprocessing_it_cannot_reproduce_stays_sklearn_with_same_answers() -> None:
    from sklearn.preprocessing import MinMaxScaler

    pipe, _ = _fitted(RandomForestClassifier(n_estimators=5, random_state=0))
    pipe.set_params(preprocess__num__scale=MinMaxScaler())
    train = _frame(300, 0, holes=True)
    pipe.fit(train, (train["amount"].fillna(0) > 250).astype(int))
    assert compile_columns(pipe.steps[0][1]) is None
    compiled = compile_model(pipe)
    assert compiled is not None and compiled.columns is None and compiled.inputs is None
    frame = _serving_frame(3)
    assert compiled.mean_lists(_lists(frame), len(frame)) is None  # the caller builds a frame
    assert np.array_equal(compiled.predict_proba(frame), pipe.predict_proba(frame))


def test_batches_it_cannot_reproduce_fall_back() -> None:
    pipe, _ = _fitted(RandomForestClassifier(n_estimators=5, random_state=0))
    compiled = compile_model(pipe)
    assert compiled is not None
    frame = _serving_frame(5)
    values = _lists(frame)
    values["country"][0] = 12  # not a string: scikit-learn decides what that means
    assert compiled.mean_lists(values, len(frame)) is None
    values = _lists(frame)
    values["amount"][0] = "12.5"
    assert compiled.mean_lists(values, len(frame)) is None


def test_non_pipelines_and_other_models_are_not_compiled() -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    assert compile_model(RandomForestClassifier(n_estimators=2).fit(X, y)) is None
    pipe, _ = _fitted(LogisticRegression(max_iter=300))
    assert compile_model(pipe) is None


def test_the_mloop_fraud_model_matches(tmp_path: Any) -> None:
    from mloop.project import init_project
    from mloop.training.estimators import build_estimator
    from mloop.training.preprocess import feature_kinds

    init_project(tmp_path, template="fraud", rows=800)
    data = pd.read_csv(next((tmp_path / "data").glob("*.csv")))
    from mloop.data import infer_contract

    contract = infer_contract(
        data.drop(columns=["transaction_id", "customer_id", "timestamp"]),
        target="is_fraud",
        task="classification",
    )
    kinds = [(c.name, c.dtype) for c in contract.columns if c.name != "is_fraud"]
    numeric, categorical, _ = feature_kinds(kinds)
    estimator = build_estimator("random_forest", "classification", {"n_estimators": 20, "n_jobs": 1})
    pipe = build_pipeline(numeric, categorical, estimator).fit(data, data["is_fraud"])
    compiled = compile_model(pipe)
    assert compiled is not None and compiled.columns is not None
    frame = data.head(200)
    expected = pipe.predict_proba(frame)
    assert np.array_equal(compiled.predict_proba(frame), expected)
    assert np.array_equal(compiled.mean_lists(_lists(frame[numeric + categorical]), 200), expected)
