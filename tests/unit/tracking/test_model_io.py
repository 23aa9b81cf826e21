"""The skops trusted-type policy: our types load without MLflow's pickle flag, others are refused."""

import re
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from mloop.errors import ModelRefused, TrackingError
from mloop.tracking import (
    ALLOWED_TYPES,
    NEVER_TRUSTED,
    load_sklearn_model,
    parse_version_ref,
    refused_types,
    trusted_types_for,
)


def _fitted() -> Pipeline:
    x = pd.DataFrame({"a": np.arange(40.0), "b": np.arange(40.0) % 3})
    return Pipeline([("rf", RandomForestClassifier(n_estimators=3, random_state=0))]).fit(
        x, np.arange(40) % 2
    )


def test_round_trip_through_mlflow_without_pickle_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", raising=False)
    model = _fitted()
    trusted = trusted_types_for(model)
    assert "sklearn.tree._tree.Tree" in trusted
    mlflow.sklearn.save_model(
        model, str(tmp_path / "m"), serialization_format="skops", skops_trusted_types=trusted
    )
    loaded = load_sklearn_model(tmp_path / "m")
    x = pd.DataFrame({"a": [1.0, 5.0], "b": [0.0, 2.0]})
    assert np.allclose(loaded.predict_proba(x), model.predict_proba(x))


@pytest.mark.parametrize(
    "estimator", ["logistic", "random_forest", "hist_gradient_boosting", "xgboost", "lightgbm"]
)
def test_every_built_in_estimator_loads_under_the_policy(tmp_path: Path, estimator: str) -> None:
    """The allowlist holds what mloop's own models need: each built-in saves and loads unchanged."""
    from mloop.training import build_estimator
    from mloop.training.preprocess import build_pipeline

    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=120), "c": rng.choice(["x", "y", "z"], 120)})
    y = (x["a"] > 0).astype(int)
    params = {"n_estimators": 5} if estimator in ("random_forest", "xgboost", "lightgbm") else {}
    model = build_pipeline(["a"], ["c"], build_estimator(estimator, "classification", params, 0)).fit(x, y)
    mlflow.sklearn.save_model(
        model,
        str(tmp_path / "m"),
        serialization_format="skops",
        skops_trusted_types=trusted_types_for(model),
        pip_requirements=["scikit-learn"],
    )
    loaded = load_sklearn_model(tmp_path / "m")
    assert np.allclose(loaded.predict_proba(x), model.predict_proba(x))


def _common_sklearn_models() -> list[Any]:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import GradientBoostingClassifier, StackingClassifier, VotingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC

    return [
        KNeighborsClassifier(n_neighbors=3),
        KNeighborsClassifier(n_neighbors=3, algorithm="ball_tree", metric="manhattan"),
        GradientBoostingClassifier(n_estimators=3),
        SVC(),
        MLPClassifier(hidden_layer_sizes=(4,), max_iter=5),
        CalibratedClassifierCV(LogisticRegression(), method="sigmoid", cv=2),
        StackingClassifier([("a", LogisticRegression()), ("b", GaussianNB())], cv=2),
        VotingClassifier([("a", LogisticRegression()), ("b", GaussianNB())], voting="soft"),
    ]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_common_scikit_learn_estimators_need_no_listing() -> None:
    x = np.random.default_rng(0).normal(size=(60, 3))
    y = (x[:, 0] > 0).astype(int)
    for model in _common_sklearn_models():
        model.fit(x, y)
        types = sio.get_untrusted_types(data=sio.dumps(model))
        assert refused_types(types) == [], type(model).__name__
        assert np.array_equal(
            sio.loads(sio.dumps(model), trusted=sorted(ALLOWED_TYPES)).predict(x), model.predict(x)
        )


def test_a_scikit_learn_function_is_still_a_function() -> None:
    """Functions are trusted only when listed, even scikit-learn's own (here a score function)."""
    from sklearn.feature_selection import SelectKBest, f_classif

    x = np.random.default_rng(0).normal(size=(40, 3))
    model = SelectKBest(f_classif, k=2).fit(x, (x[:, 0] > 0).astype(int))
    name = "sklearn.feature_selection._univariate_selection.f_classif"
    with pytest.raises(ModelRefused, match=re.escape(f"model.trusted_types: [{name}]")):
        trusted_types_for(model)
    assert trusted_types_for(model, [name]) == [name]


def _double(x: object) -> object:
    return x


def test_foreign_types_are_refused_at_save_and_load(tmp_path: Path) -> None:
    model = Pipeline([("f", FunctionTransformer(_double))])
    with pytest.raises(ModelRefused, match=r"model\.trusted_types") as caught:
        trusted_types_for(model)
    name = f"{__name__}._double"
    assert caught.value.types == (name,)
    # trusted on purpose by the user: allowed
    assert name in trusted_types_for(model, [name])


@pytest.mark.parametrize(
    ("types", "extra", "refused"),
    [
        (["sklearn.tree._tree.Tree", "numpy.dtype"], [], []),
        (["xgboost.core.Booster", "lightgbm.sklearn.LGBMClassifier"], [], []),
        # Prefixes mean nothing: only exact names are trusted.
        (["builtins.sorted", "builtins.eval"], [], ["builtins.eval", "builtins.sorted"]),
        (["sklearn.utils._testing.assert_allclose"], [], ["sklearn.utils._testing.assert_allclose"]),
        (["numpy.testing.assert_equal"], [], ["numpy.testing.assert_equal"]),
        (["mloop.tracking.model_io.refused_types"], [], ["mloop.tracking.model_io.refused_types"]),
        # Listed by the project: trusted, except code-running callables and dangerous modules.
        (["builtins.sorted"], ["builtins.sorted"], []),
        (["builtins.eval"], ["builtins.eval"], ["builtins.eval"]),
        (["posix.system", "os.popen"], ["posix.system", "os.popen"], ["os.popen", "posix.system"]),
        (["subprocess.run"], ["subprocess.run"], ["subprocess.run"]),
        (["operator.attrgetter"], ["operator.attrgetter"], ["operator.attrgetter"]),
        (["mymodels.Forest"], ["mymodels.Forest"], []),
    ],
)
def test_policy_is_exact_names(types: list[str], extra: list[str], refused: list[str]) -> None:
    assert refused_types(types, extra) == refused


def test_nothing_on_the_allowlist_is_a_function() -> None:
    import importlib
    import inspect

    for name in sorted(ALLOWED_TYPES):
        module, _, attr = name.rpartition(".")
        obj = getattr(importlib.import_module(module), attr)
        assert inspect.isclass(obj), name
    assert not ALLOWED_TYPES & NEVER_TRUSTED


def test_a_model_file_saved_as_pickle_is_refused(tmp_path: Path) -> None:
    (tmp_path / "MLmodel").write_text(
        "flavors:\n  sklearn:\n    pickled_model: model.pkl\n    serialization_format: cloudpickle\n",
        encoding="utf-8",
    )
    with pytest.raises(ModelRefused, match="only loads skops"):
        load_sklearn_model(tmp_path)


def test_a_model_file_outside_the_model_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "MLmodel").write_text(
        "flavors:\n  sklearn:\n    pickled_model: ../other.skops\n    serialization_format: skops\n",
        encoding="utf-8",
    )
    with pytest.raises(ModelRefused, match="outside its own directory"):
        load_sklearn_model(tmp_path / "m")


def test_a_corrupt_model_file_is_a_tracking_error(tmp_path: Path) -> None:
    (tmp_path / "MLmodel").write_text(
        "flavors:\n  sklearn:\n    pickled_model: model.skops\n    serialization_format: skops\n",
        encoding="utf-8",
    )
    (tmp_path / "model.skops").write_bytes(b"not a zip file")
    with pytest.raises(TrackingError, match="cannot be read as a skops file"):
        load_sklearn_model(tmp_path, ref="models:/m/1")


def test_not_a_model_dir(tmp_path: Path) -> None:
    with pytest.raises(TrackingError, match="not an MLflow scikit-learn model"):
        load_sklearn_model(tmp_path)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("3", ("version", "3")),
        ("v12", ("version", "12")),
        (4, ("version", "4")),
        ("@champion", ("alias", "champion")),
        ("challenger", ("alias", "challenger")),
    ],
)
def test_parse_version_ref(ref: object, expected: tuple[str, str]) -> None:
    assert parse_version_ref(ref) == expected
