"""The skops trusted-type policy: our types load without MLflow's pickle flag, others are refused."""

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from mloop.errors import TrackingError
from mloop.tracking import load_sklearn_model, parse_version_ref, trusted_types_for


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


def _double(x: object) -> object:
    return x


def test_foreign_types_are_refused_at_save_and_load(tmp_path: Path) -> None:
    model = Pipeline([("f", FunctionTransformer(_double))])
    with pytest.raises(TrackingError, match=r"model\.trusted_types"):
        trusted_types_for(model)
    # trusted on purpose by the user: allowed
    name = f"{__name__}._double"
    assert name in trusted_types_for(model, [name])


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
    assert parse_version_ref(ref) == expected  # type: ignore[arg-type]
