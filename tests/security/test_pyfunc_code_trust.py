"""MLflow models that run code when loaded stay unloaded until the project trusts that one version.

The attack: a version registered straight through MLflow whose model file runs code as it loads —
a custom ``PythonModel`` that writes a marker file when it is unpickled and again in
``load_context``, or a scikit-learn model pickled with cloudpickle whose unpickling calls ``exec``.
mloop decides from the ``MLmodel`` file alone, so without ``model.trust_code_of`` the load fails
with :class:`~mloop.errors.ModelRefused` naming the opt-in and the marker never exists. With the
version listed, the same load runs the code (the marker proves the test would have seen it) and the
opt-in is recorded as an event.
"""

from __future__ import annotations

import builtins
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from mloop.config import Settings
from mloop.errors import ModelRefused
from mloop.store import open_store
from mloop.tracking import Registry, configure_mlflow

FRAME = pd.DataFrame({"amount": [1.0, 60.0, 99.0]})


class Trojan(mlflow.pyfunc.PythonModel):
    """Writes ``marker`` as soon as it is unpickled, and again when MLflow calls ``load_context``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        Path(self.marker).write_text("unpickled", encoding="utf-8")

    def load_context(self, context: Any) -> None:
        Path(self.marker).write_text("load_context", encoding="utf-8")

    def predict(self, context, model_input, params=None):
        return pd.DataFrame({"score": model_input["amount"].to_numpy(dtype="float64") / 100.0})


class _Exec:
    """Pickles as a call to ``exec``: unpickling runs ``code``."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (builtins.exec, (self.code,))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pyfunc-trust")


_MODELS = itertools.count(1)


def _settings(root: Path, name: str, **model: Any) -> Settings:
    return Settings.model_validate(
        {"model": {"name": name, **model}, "serving": {"poll_interval_s": 0}, "root": root}
    )


@pytest.fixture
def name() -> str:
    return f"pyfunc-{next(_MODELS)}"


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "pwned"
    yield path
    path.unlink(missing_ok=True)


def _register_pyfunc(settings: Settings, model: Any) -> int:
    experiment = configure_mlflow(settings)  # the project's: its artifacts stay under the project
    signature = mlflow.models.infer_signature(FRAME, FRAME[["amount"]].rename(columns={"amount": "score"}))
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=model,
            signature=signature,
            registered_model_name=settings.model.name,
            pip_requirements=["mlflow"],
        )
    return int(info.registered_model_version or 0)


def test_a_custom_pyfunc_that_runs_code_on_load_is_refused(root: Path, name: str, marker: Path) -> None:
    settings = _settings(root, name)
    version = _register_pyfunc(settings, Trojan(str(marker)))
    marker.unlink(missing_ok=True)  # nothing may have written it before the load under test
    with pytest.raises(ModelRefused) as caught:
        Registry(settings).load(version)
    assert f"model.trust_code_of: [{name}/{version}]" in caught.value.message
    assert not marker.exists()


def test_trusting_another_version_does_not_trust_this_one(root: Path, name: str, marker: Path) -> None:
    settings = _settings(root, name)
    version = _register_pyfunc(settings, Trojan(str(marker)))
    marker.unlink(missing_ok=True)
    other = _settings(root, name, trust_code_of=[f"{name}/{version + 1}", f"other-{name}/{version}"])
    with pytest.raises(ModelRefused):
        Registry(other).load(version)
    assert not marker.exists()


def test_the_opt_in_runs_the_code_and_is_recorded(root: Path, name: str, marker: Path) -> None:
    settings = _settings(root, name)
    version = _register_pyfunc(settings, Trojan(str(marker)))
    marker.unlink(missing_ok=True)
    trusted = _settings(root, name, trust_code_of=[f"{name}/{version}"])
    store = open_store(trusted.store_url)
    try:
        loaded = Registry(trusted, events=store).load(version)
        assert marker.read_text(encoding="utf-8") == "load_context"
        assert loaded.model.predict(FRAME).tolist() == pytest.approx([0.01, 0.6, 0.99])
        (event,) = store.events(kind="model.code_trusted", subject=f"model:{name}/v{version}")
        assert event.data["trusted_by"] == f"model.trust_code_of: {name}/{version}"
        assert event.data["loader"] == "mlflow.pyfunc.model"
    finally:
        store.close()


def test_a_pickled_sklearn_model_is_refused_without_the_opt_in(root: Path, name: str, marker: Path) -> None:
    settings = _settings(root, name)
    experiment = configure_mlflow(settings)
    x = pd.DataFrame({"amount": np.linspace(0, 100, 40)})
    model = Pipeline(
        [
            ("f", FunctionTransformer(func=_Exec(f"open({str(marker)!r}, 'w').write('pwned')"))),
            ("m", LogisticRegression().fit(x, (x["amount"] > 50).astype(int))),
        ]
    )
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            serialization_format="cloudpickle",
            signature=mlflow.models.infer_signature(x),
            registered_model_name=name,
            pip_requirements=["scikit-learn"],
        )
    version = int(info.registered_model_version or 0)
    marker.unlink(missing_ok=True)
    with pytest.raises(ModelRefused, match="pickled scikit-learn") as caught:
        Registry(settings).load(version)
    assert f"model.trust_code_of: [{name}/{version}]" in caught.value.message
    assert not marker.exists()
    # Listed, it loads as the estimator itself (and the pickle's code runs: that is what trust means).
    trusted = _settings(root, name, trust_code_of=[f"{name}/{version}"])
    loaded = Registry(trusted).load(version)
    assert marker.exists()
    assert hasattr(loaded.model, "predict_proba")
