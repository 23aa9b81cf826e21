"""Properties of the compiled tree path: bit-for-bit the library's answers, not only on easy inputs.

Fully grown forests answer whole votes out of the number of trees, which hides summation-order and
threshold errors. These properties use depth-limited trees (fractional class shares, continuous
regression leaves), probe every learned threshold exactly and one float32/float64 step either side,
draw float64 values across the whole float32 range (subnormals to overflow), and put NaN where the
model routes missing values itself. Gradient-boosted models are not compiled; that is checked too.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sklearn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from mloop.serving.fastpath import CompiledTrees, compile_model, compile_trees
from mloop.training.preprocess import build_pipeline

CLASSIFIERS = {"rf": RandomForestClassifier, "et": ExtraTreesClassifier}
REGRESSORS = {"rf": RandomForestRegressor, "et": ExtraTreesRegressor}
SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
F32_MAX = float(np.finfo(np.float32).max)


def _data(seed: int, n_features: int, n: int = 80) -> np.ndarray:
    """Continuous features on a few scales, so thresholds are not round numbers."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, n_features)) * 10.0 ** rng.integers(-3, 4, n_features)


def _threshold_rows(X: np.ndarray, compiled: CompiledTrees) -> np.ndarray:
    """Rows with one feature set to a learned threshold, or to a value next to it.

    Next to it: one float64 step and one float32 step either side, and the two float64 values that
    round to the float32 neighbours of the threshold (they differ from the threshold in float64 but
    cross it only once cast to float32, as scikit-learn casts them).
    """
    inner = ~compiled.is_leaf
    edges: list[np.ndarray] = []
    for f, t in zip(compiled.feature[inner], compiled.threshold[inner], strict=True):
        t32 = np.float32(t)
        below32 = float(np.nextafter(t32, np.float32(-np.inf)))
        above32 = float(np.nextafter(t32, np.float32(np.inf)))
        candidates = [
            t,
            np.nextafter(t, -np.inf),
            np.nextafter(t, np.inf),
            float(t32),
            below32,
            above32,
            (below32 + float(t32)) / 2,  # a float64 midway between two float32: rounds to even
            (above32 + float(t32)) / 2,
        ]
        rows = np.repeat(X[:1], len(candidates), axis=0)
        rows[:, f] = candidates
        edges.append(rows)
    return np.vstack([X, *edges]) if edges else X


def _fit_classifier(kind: str, seed: int, n_features: int, n_classes: int, n_trees: int, depth: int) -> Any:
    X = _data(seed, n_features)
    rng = np.random.default_rng(seed + 1)
    y = rng.integers(0, n_classes, X.shape[0])
    y[:n_classes] = np.arange(n_classes)
    est = CLASSIFIERS[kind](n_estimators=n_trees, max_depth=depth, random_state=seed)
    return est.fit(X, y), X


@contextlib.contextmanager
def _refused_by_the_library() -> Iterator[None]:
    """scikit-learn's own float32 cast warns about the overflow before it raises the ValueError."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "overflow encountered in cast", RuntimeWarning)
        with pytest.raises(ValueError, match="infinity or a value too large"):
            yield


def _same(fast: np.ndarray | None, slow: np.ndarray) -> None:
    assert fast is not None
    assert fast.shape == slow.shape and fast.dtype == slow.dtype
    assert np.array_equal(fast, slow), np.max(np.abs(fast - slow))


@SETTINGS
@given(
    seed=st.integers(0, 10_000),
    kind=st.sampled_from(sorted(CLASSIFIERS)),
    n_features=st.integers(1, 5),
    n_classes=st.integers(2, 4),
    n_trees=st.integers(1, 8),
    depth=st.integers(1, 6),
)
def test_depth_limited_classifiers_on_thresholds_are_bit_identical(
    seed: int, kind: str, n_features: int, n_classes: int, n_trees: int, depth: int
) -> None:
    est, X = _fit_classifier(kind, seed, n_features, n_classes, n_trees, depth)
    compiled = compile_trees(est)
    assert compiled is not None
    probe = _threshold_rows(X, compiled)
    slow = est.predict_proba(probe)
    # Depth-limited bootstrapped trees have fractional leaves: the property is not about whole votes.
    assert depth == 6 or not np.all(np.isin(slow * n_trees, np.arange(n_trees + 1)))
    _same(compiled.mean_value(probe), slow)
    _same(compiled.mean_value(probe[:1]), slow[:1])


@SETTINGS
@given(
    seed=st.integers(0, 10_000),
    kind=st.sampled_from(sorted(REGRESSORS)),
    n_features=st.integers(1, 5),
    n_trees=st.integers(1, 8),
    depth=st.integers(1, 6),
)
def test_regressors_with_continuous_leaves_on_thresholds_are_bit_identical(
    seed: int, kind: str, n_features: int, n_trees: int, depth: int
) -> None:
    X = _data(seed, n_features)
    y = np.random.default_rng(seed + 1).normal(size=X.shape[0]) * 1e3
    est = REGRESSORS[kind](n_estimators=n_trees, max_depth=depth, random_state=seed).fit(X, y)
    compiled = compile_trees(est)
    assert compiled is not None and not compiled.is_classifier
    probe = _threshold_rows(X, compiled)
    fast = compiled.mean_value(probe)
    assert fast is not None
    _same(fast[:, 0], est.predict(probe))


_FLOAT32_RANGE = st.one_of(
    st.floats(-F32_MAX, F32_MAX, allow_nan=False),  # includes subnormals, tiny and huge magnitudes
    st.floats(-1e3, 1e3, allow_nan=False),
    st.floats(-1e-30, 1e-30, allow_nan=False),
)


@SETTINGS
@given(
    seed=st.integers(0, 10_000),
    kind=st.sampled_from(sorted(CLASSIFIERS)),
    depth=st.integers(1, 6),
    values=st.lists(_FLOAT32_RANGE, min_size=3, max_size=30),
)
def test_float32_edge_values_are_bit_identical(seed: int, kind: str, depth: int, values: list[float]) -> None:
    est, _ = _fit_classifier(kind, seed, 3, 3, 4, depth)
    compiled = compile_trees(est)
    assert compiled is not None
    probe = np.array(values[: len(values) // 3 * 3], dtype=np.float64).reshape(-1, 3)
    _same(compiled.mean_value(probe), est.predict_proba(probe))


@SETTINGS
@given(
    seed=st.integers(0, 10_000),
    column=st.integers(0, 2),
    value=st.sampled_from([np.inf, -np.inf, 1e39, -1e39, 2.0**128 - 2.0**103, F32_MAX * (1 + 2**-24)]),
)
def test_values_beyond_float32_are_not_answered_by_the_compiled_trees(
    seed: int, column: int, value: float
) -> None:
    """scikit-learn refuses a value that overflows float32; the compiled walk must not answer it."""
    est, X = _fit_classifier("rf", seed, 3, 2, 3, 4)
    compiled = compile_trees(est)
    assert compiled is not None
    probe = X[:4].copy()
    probe[1, column] = value
    with _refused_by_the_library():
        est.predict_proba(probe)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning from the cast either
        assert compiled.mean_value(probe) is None
    # Under assume_finite (the server's frame path) scikit-learn walks the overflowed ±inf: so does this.
    with sklearn.config_context(assume_finite=True):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "overflow encountered in cast", RuntimeWarning)
            slow = est.predict_proba(probe)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _same(compiled.mean_value(probe), slow)
            holed = probe.copy()
            holed[2, 0] = np.nan  # NaN is still routed per node by scikit-learn only
            assert compiled.mean_value(holed) is None
    # The largest float64 that still rounds to a finite float32 is answered, and equal.
    probe[1, column] = np.copysign(np.nextafter(2.0**128 - 2.0**103, 0.0), value)
    _same(compiled.mean_value(probe), est.predict_proba(probe))


def test_values_beyond_float32_fall_back_through_the_pipeline() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    y = (frame["a"] > 0).astype(int)
    pipe = build_pipeline(["a", "b"], [], RandomForestClassifier(n_estimators=4, max_depth=3, random_state=0))
    pipe.fit(frame, y)
    compiled = compile_model(pipe)
    assert compiled is not None and compiled.columns is not None
    probe = frame.iloc[:3].reset_index(drop=True).copy()
    probe.loc[1, "a"] = 1e300  # finite as float64, too large once scaled and cast to float32
    assert compiled.mean_lists({k: probe[k].tolist() for k in probe.columns}, 3) is None
    with _refused_by_the_library():
        pipe.predict_proba(probe)
    with _refused_by_the_library():
        compiled.predict_proba(probe)  # the library's own answer to the batch, through the fallback
    assert compiled.fallbacks == 1
    with sklearn.config_context(assume_finite=True):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "overflow encountered in cast", RuntimeWarning)
            slow = pipe.predict_proba(probe)
        _same(compiled.predict_proba(probe), slow)
    assert compiled.fallbacks == 1


@SETTINGS
@given(
    seed=st.integers(0, 10_000),
    kind=st.sampled_from(sorted(CLASSIFIERS)),
    depth=st.integers(1, 6),
    train_holes=st.booleans(),
    holes=st.lists(st.tuples(st.integers(0, 11), st.integers(0, 2)), min_size=1, max_size=8),
)
def test_missing_values_are_routed_as_the_library_routes_them(
    seed: int, kind: str, depth: int, train_holes: bool, holes: list[tuple[int, int]]
) -> None:
    """Trees fitted with (or without) NaN route it per node; the compiled path defers to them."""
    rng = np.random.default_rng(seed)
    X = _data(seed, 3)
    y = (X[:, 0] > np.median(X[:, 0])).astype(int) ^ (rng.random(X.shape[0]) < 0.2)
    if train_holes:
        X[rng.random(X.shape) < 0.15] = np.nan
    est = CLASSIFIERS[kind](n_estimators=3, max_depth=depth, random_state=seed)
    pipe = Pipeline([("scale", StandardScaler()), ("trees", est)]).fit(X, y)
    compiled = compile_model(pipe)
    assert compiled is not None
    probe = _data(seed + 7, 3, n=12)
    for row, col in holes:
        probe[row, col] = np.nan
    frame_free = pipe.predict_proba(np.nan_to_num(probe))
    _same(compiled.predict_proba(np.nan_to_num(probe)), frame_free)
    assert compiled.fallbacks == 0
    _same(compiled.predict_proba(probe), pipe.predict_proba(probe))
    assert compiled.fallbacks == 1
    assert compiled.trees.mean_value(pipe[:-1].transform(probe)) is None


def _gradient_boosted() -> list[Any]:
    models: list[Any] = [HistGradientBoostingClassifier(max_iter=5, max_depth=3)]
    lightgbm = pytest.importorskip("lightgbm")
    xgboost = pytest.importorskip("xgboost")
    models.append(lightgbm.LGBMClassifier(n_estimators=5, max_depth=3, verbose=-1))
    models.append(xgboost.XGBClassifier(n_estimators=5, max_depth=3, n_jobs=1))
    return models


def test_gradient_boosted_models_are_not_compiled_and_keep_their_own_answers() -> None:
    """Continuous-leaf boosting (HGB, LightGBM, XGBoost) is served by the library itself, unchanged."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=120), "b": rng.normal(size=120)})
    y = (frame["a"] + rng.normal(scale=0.5, size=120) > 0).astype(int)
    for est in _gradient_boosted():
        pipe = build_pipeline(["a", "b"], [], est).fit(frame, y)
        proba = pipe.predict_proba(frame)
        assert not np.all(np.isin(proba, [0.0, 0.5, 1.0]))  # continuous answers
        assert compile_trees(pipe.steps[-1][1]) is None
        assert compile_model(pipe) is None, type(est).__name__


def test_the_server_answers_a_value_beyond_float32_as_its_pipeline_does(tmp_path: Any) -> None:
    """A finite request value that overflows float32 once scaled: same answer, and no overflow warning."""
    from test_serving_fastpath_runtime import _loaded, _records

    from mloop.serving.runtime import ModelRuntime, build_frame

    est = RandomForestClassifier(n_estimators=6, max_depth=4, random_state=0)
    rt = ModelRuntime(_loaded(tmp_path, est, "classification"))
    assert rt.compiled is not None
    records = _records(4, 0)
    records[1]["amount"] = 1e300
    columns = rt.validator.from_records(records)
    predictions, proba = rt.predict_columns([columns])  # filterwarnings=error: a warning would raise
    with sklearn.config_context(assume_finite=True), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "overflow encountered in cast", RuntimeWarning)
        expected = rt.model.predict_proba(build_frame(rt.specs, [columns]))
    assert proba is not None
    _same(np.asarray(proba), expected)
    assert predictions == [rt.classes[i] for i in expected.argmax(axis=1)]
