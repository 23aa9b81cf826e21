"""The python_function path: which MLmodel files may load, signature -> contract, output shapes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mloop.errors import ModelRefused
from mloop.tracking.pyfunc import (
    PyfuncClassifier,
    PyfuncModel,
    check_code_trust,
    contract_from_signature,
    is_skops_sklearn,
)


def _meta(
    loader: str = "mlflow.onnx", inputs: Any = None, outputs: Any = None, **conf: Any
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "flavors": {"python_function": {"loader_module": loader, "data": "model", **conf}}
    }
    if inputs is not None:
        meta["signature"] = {
            "inputs": json.dumps(inputs),
            "outputs": json.dumps(outputs) if outputs else None,
        }
    return meta


def _check(meta: dict[str, Any], tmp_path: Path, trusted: list[str] | None = None) -> str | None:
    return check_code_trust(meta, tmp_path, ref="models:/m/3", key="m/3", trusted=trusted or [])


def test_onnx_loads_by_default(tmp_path: Path) -> None:
    assert _check(_meta("mlflow.onnx"), tmp_path) is None


@pytest.mark.parametrize(
    ("loader", "words"),
    [
        ("mlflow.pyfunc.model", "cloudpickle"),
        ("mlflow.pytorch", "torch.save pickle"),
        ("mlflow.sklearn", "pickled scikit-learn"),
        ("mlflow.tensorflow", "Lambda layers"),
        ("some.custom_loader", "'some.custom_loader'"),
    ],
)
def test_loaders_that_run_code_are_refused_naming_the_opt_in(tmp_path: Path, loader: str, words: str) -> None:
    with pytest.raises(ModelRefused) as caught:
        _check(_meta(loader), tmp_path)
    assert words in caught.value.message
    assert "`model.trust_code_of: [m/3]`" in caught.value.message
    assert caught.value.types == (loader,)


def test_the_listed_version_is_trusted_and_only_it(tmp_path: Path) -> None:
    assert _check(_meta("mlflow.pyfunc.model"), tmp_path, ["m/3"]) == "m/3"
    with pytest.raises(ModelRefused):
        _check(_meta("mlflow.pyfunc.model"), tmp_path, ["m/4", "n/3"])


def test_code_directories_make_even_onnx_code(tmp_path: Path) -> None:
    # MLflow puts them on sys.path before importing the loader: an ``onnx.py`` there would run.
    with pytest.raises(ModelRefused, match="code directories"):
        _check(_meta("mlflow.onnx", code="code"), tmp_path)
    assert _check(_meta("mlflow.onnx", code="code"), tmp_path, ["m/3"]) == "m/3"


def test_model_data_outside_the_directory_is_refused_even_when_trusted(tmp_path: Path) -> None:
    meta = _meta("mlflow.pyfunc.model")
    meta["flavors"]["python_function"]["data"] = "../../elsewhere"
    with pytest.raises(ModelRefused, match="outside its own directory"):
        _check(meta, tmp_path, ["m/3"])


def test_a_model_without_python_function_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelRefused, match="no python_function flavor"):
        _check({"flavors": {"spark": {}}}, tmp_path)


def test_skops_sklearn_keeps_its_own_policy() -> None:
    assert is_skops_sklearn({"flavors": {"sklearn": {"serialization_format": "skops"}}})
    assert not is_skops_sklearn({"flavors": {"sklearn": {"serialization_format": "cloudpickle"}}})
    assert not is_skops_sklearn({"flavors": {"python_function": {}}})


def test_colspec_signature_becomes_the_contract() -> None:
    inputs = [
        {"type": "double", "name": "amount", "required": True},
        {"type": "float", "name": "ratio", "required": True},
        {"type": "long", "name": "items", "required": True},
        {"type": "integer", "name": "age", "required": False},
        {"type": "string", "name": "country", "required": True},
        {"type": "boolean", "name": "vip", "required": True},
        {"type": "datetime", "name": "at", "required": True},
    ]
    contract = contract_from_signature(_meta(inputs=inputs), "models:/m/3")
    assert [(c.name, c.dtype, c.nullable) for c in contract.columns] == [
        ("amount", "float", False),
        ("ratio", "float", False),
        ("items", "int", False),
        ("age", "int", True),
        ("country", "string", False),
        ("vip", "bool", False),
        ("at", "datetime", False),
    ]
    assert contract.target is None


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        (None, "neither an mloop contract nor an MLflow input signature"),
        ([{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 4]}}], "tensor signature"),
        ([{"type": "double"}], "without a name"),
        ([{"type": "binary", "name": "image"}], "type 'binary'"),
        ([{"type": "array", "name": "tokens", "items": {"type": "string"}}], "type 'array'"),
        ([{"type": "double", "name": "a\nb"}], "contract rules"),
    ],
)
def test_signatures_mloop_cannot_validate_are_refused(inputs: Any, match: str) -> None:
    with pytest.raises(ModelRefused, match=match) as caught:
        contract_from_signature(_meta(inputs=inputs), "models:/m/3")
    assert "signature" in caught.value.message


class _Fake:
    def __init__(self, out: Any) -> None:
        self.out = out
        self.seen: pd.DataFrame | None = None

    def predict(self, frame: pd.DataFrame) -> Any:
        self.seen = frame
        return self.out


FRAME = pd.DataFrame({"x": [1.0, 2.0], "n": np.array([1, 2], dtype="int64")})
INPUTS = [
    {"type": "float", "name": "x", "required": True},
    {"type": "integer", "name": "n", "required": True},
]


def test_a_regressor_output_becomes_numbers_and_inputs_get_the_signature_dtypes(tmp_path: Path) -> None:
    fake = _Fake(pd.DataFrame({"y": [0.5, 1.5]}))
    model = PyfuncModel(tmp_path, _meta(inputs=INPUTS), fake)
    assert model.predict(FRAME).tolist() == [0.5, 1.5]
    assert fake.seen is not None
    assert fake.seen.dtypes.astype(str).tolist() == ["float32", "int32"]
    assert not hasattr(model, "predict_proba")


def test_non_numeric_output_without_class_columns_says_what_to_do(tmp_path: Path) -> None:
    model = PyfuncModel(tmp_path, _meta(inputs=INPUTS), _Fake(["cat", "dog"]))
    with pytest.raises(TypeError, match="one probability column per class"):
        model.predict(FRAME)


def test_class_columns_in_the_output_signature_make_a_classifier(tmp_path: Path) -> None:
    outputs = [{"type": "double", "name": "0"}, {"type": "double", "name": "1"}]
    # The model answers its columns in another order: they are read by name.
    model = PyfuncClassifier(
        tmp_path,
        _meta(inputs=INPUTS, outputs=outputs),
        _Fake(pd.DataFrame({"1": [0.9, 0.2], "0": [0.1, 0.8]})),
    )
    assert model.classes_.tolist() == [0, 1]
    assert model.predict_proba(FRAME).tolist() == [[0.1, 0.9], [0.8, 0.2]]
    assert model.predict(FRAME).tolist() == [1, 0]
