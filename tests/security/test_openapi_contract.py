"""Requests the OpenAPI schema forbids are refused, and the schema says what the server enforces.

V2 tensors whose shape or datatype disagree with their data, duplicate or empty tensor names,
``{"features": []}``, empty feedback ids and non-object ``params`` were answered 200 (or failed the
model call); each is now the request's own 422 and the schema documents the rule.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from keyed_app import served

from mloop.data.schema import DataContract
from mloop.errors import PayloadTooLarge, RequestValidationError
from mloop.serving.codecs import decode_mlflow, decode_native
from mloop.serving.schemas import openapi_components
from mloop.serving.v2 import decode_v2
from mloop.serving.validation import ContractValidator

CONTRACT = DataContract.from_dict(
    {
        "columns": [
            {"name": "amount", "dtype": "float", "nullable": False, "min": 0.0, "max": 100.0},
            {"name": "hour", "dtype": "int", "nullable": False, "min": 0, "max": 23},
            {"name": "country", "dtype": "category", "nullable": False, "categories": ["DE", "FR"]},
            {"name": "note", "dtype": "string", "nullable": True},
        ],
        "target": None,
    }
)


@pytest.fixture
def v() -> ContractValidator:
    return ContractValidator(CONTRACT)


def _tensor(
    name: str, data: list[Any], shape: list[int] | None = None, datatype: str = "FP64"
) -> dict[str, Any]:
    return {
        "name": name,
        "shape": shape if shape is not None else [len(data)],
        "datatype": datatype,
        "data": data,
    }


def _good() -> list[dict[str, Any]]:
    return [
        _tensor("amount", [1.0, 2.0]),
        _tensor("hour", [3, 4], datatype="INT64"),
        _tensor("country", ["DE", "FR"], datatype="BYTES"),
    ]


def test_v2_named_tensors_are_decoded(v: ContractValidator) -> None:
    columns = decode_v2({"inputs": _good()}, v, 100)
    assert columns.n == 2 and columns.values["hour"] == [3, 4]


@pytest.mark.parametrize(
    ("tensor", "words"),
    [
        (_tensor("amount", [1.0, 2.0], shape=[3]), "shape [3] (3 values) but its data holds 2"),
        (_tensor("amount", [1.0, 2.0], shape=[2, 2]), "shape [2, 2] (4 values)"),
        (_tensor("amount", [1.0, 2.0], datatype="BOOL"), "is BOOL but holds 1.0"),
        (_tensor("amount", [1.0, "x"]), "is FP64 but holds 'x'"),
        (_tensor("amount", [True, False]), "is FP64 but holds True"),
        (_tensor("amount", [1.0, 2.0], datatype="FP8"), "datatype 'FP8'"),
        (_tensor("amount", [1.0, 70000.0], datatype="FP16"), "is FP16 but holds 70000.0"),
        (_tensor("hour", [3, 300], datatype="INT8"), "is INT8 but holds 300"),
        (_tensor("hour", [3, -1], datatype="UINT32"), "is UINT32 but holds -1"),
        (_tensor("amount", [1.0, 2.0], shape=[-2]), "non-negative integers"),
        (_tensor("amount", [[{"x": 1.0}], [2.0]], shape=[2, 1]), "not objects"),
        (_tensor("", [1.0, 2.0]), "non-empty string name"),
    ],
)
def test_v2_tensor_that_disagrees_with_its_data_is_a_422(
    v: ContractValidator, tensor: dict[str, Any], words: str
) -> None:
    inputs = [tensor, *_good()[1:]]
    with pytest.raises(RequestValidationError, match=re.escape(words)):
        decode_v2({"inputs": inputs}, v, 100)


def test_v2_duplicate_tensor_names_are_a_422(v: ContractValidator) -> None:
    inputs = [*_good(), _tensor("amount", [5.0, 6.0])]
    with pytest.raises(RequestValidationError, match="'amount' appear more than once"):
        decode_v2({"inputs": inputs}, v, 100)


def test_v2_request_id_and_parameters_are_typed(v: ContractValidator) -> None:
    with pytest.raises(RequestValidationError, match="id must be a string"):
        decode_v2({"id": 5, "inputs": _good()}, v, 100)
    with pytest.raises(RequestValidationError, match="parameters must be an object"):
        decode_v2({"parameters": [1], "inputs": _good()}, v, 100)


def test_v2_row_tensor_needs_its_shape(v: ContractValidator) -> None:
    rows = {"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": [[1.0, 2, "DE", None]]}
    with pytest.raises(RequestValidationError, match=r"is BYTES but holds 1\.0"):
        decode_v2({"inputs": [rows]}, v, 100)
    rows = {"name": "x", "shape": [2, 4], "datatype": "FP64", "data": [1.0, 2, 3.0, 4]}
    with pytest.raises(RequestValidationError, match="8 values"):
        decode_v2({"inputs": [rows]}, v, 100)


def test_empty_features_and_empty_rows_are_refused(v: ContractValidator) -> None:
    with pytest.raises(RequestValidationError, match="no rows"):
        decode_native({"features": []}, v, 100)
    with pytest.raises(RequestValidationError):
        decode_native({"features": [[]]}, v, 100)
    with pytest.raises((RequestValidationError, PayloadTooLarge)):
        decode_mlflow({"instances": []}, v, 100)


def test_mlflow_params_must_be_an_object(v: ContractValidator) -> None:
    record = {"amount": 1.0, "hour": 2, "country": "DE"}
    assert decode_mlflow({"dataframe_records": [record], "params": {"x": 1}}, v, 100).n == 1
    with pytest.raises(RequestValidationError, match='"params" must be an object'):
        decode_mlflow({"dataframe_records": [record], "params": [None, None]}, v, 100)


# ---- the schema states the same rules ---------------------------------------------------------


def _validator(name: str, v: ContractValidator | None) -> jsonschema.Draft202012Validator:
    components = openapi_components(v, "toy")
    root = {"components": {"schemas": components}, **components[name]}
    return jsonschema.Draft202012Validator(root)


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"features": {"amount": 1.0, "hour": 2, "country": "DE"}}, True),
        ({"features": [1.0, 2, "DE", None]}, True),
        ({"features": [[1.0, 2, "DE", "x"], [2.0, 3, "FR", None]]}, True),
        ({"features": []}, False),
        ({"features": [[]]}, False),
        ({"features": [1.0, 2, "DE"]}, False),  # a positional row lists every field
        ({"features": {"amount": 1.0, "hour": 2**63, "country": "DE"}}, False),  # beyond int64
        ({"features": {"amount": 1.0, "hour": 2, "country": "D\x00E"}}, False),  # NUL
        ({"features": {"amount": 1.0, "hour": 2}}, False),  # a required field is missing
        ({"features": {"amount": 1.0, "hour": 2, "country": "DE", "note": None}}, True),  # optional
        ({"features": {"amount": None, "hour": 2, "country": "DE"}}, False),
    ],
)
def test_predict_schema_matches_the_validator(
    v: ContractValidator, body: dict[str, Any], valid: bool
) -> None:
    assert _validator("PredictRequest", v).is_valid(body) is valid
    if valid:
        assert decode_native(body, v, 100)[0].n >= 1
    else:
        with pytest.raises(RequestValidationError):
            decode_native(body, v, 100)


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"inputs": _good()}, True),
        ({"inputs": []}, False),
        ({"inputs": [_tensor("", [1.0])]}, False),
        ({"inputs": [_tensor("amount", [1.0, "x"])]}, False),
        ({"inputs": [_tensor("amount", [True], datatype="FP64")]}, False),
        ({"inputs": [_tensor("hour", [1.5], datatype="INT64")]}, False),
    ],
)
def test_v2_schema_states_the_datatype_rules(v: ContractValidator, body: dict[str, Any], valid: bool) -> None:
    assert _validator("InferenceRequest", v).is_valid(body) is valid


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"feedback": [{"prediction_id": "p1", "label": 1}]}, True),
        ({"prediction_id": "p1", "label": "fraud"}, True),
        ([{"prediction_id": "p1", "label": True}], True),
        ({"feedback": []}, False),
        ({"feedback": [{"prediction_id": "", "label": 1}]}, False),
        ({"feedback": [{"prediction_id": "   ", "label": 1}]}, False),
        ({"feedback": [{"prediction_id": "p1", "label": None}]}, False),
        ({"feedback": [{"prediction_id": "p1", "label": [1]}]}, False),
    ],
)
def test_feedback_schema_refuses_empty_ids(body: Any, valid: bool) -> None:
    assert _validator("FeedbackRequest", None).is_valid(body) is valid


def test_any_printable_column_name_is_documented() -> None:
    contract = DataContract.from_dict(
        {
            "columns": [
                {"name": "_id", "dtype": "string", "nullable": False},
                {"name": "model_config", "dtype": "float", "nullable": False},
                {"name": "a b: c", "dtype": "int", "nullable": True},
            ],
            "target": None,
        }
    )
    v = ContractValidator(contract)
    check = _validator("PredictRequest", v)
    assert check.is_valid({"features": {"_id": "x", "model_config": 1.0}})
    assert not check.is_valid({"features": {"_id": "x"}})
    assert decode_native({"features": {"_id": "x", "model_config": 1.0}}, v, 10)[0].n == 1


def test_invocations_schema_takes_exactly_one_input_key(v: ContractValidator) -> None:
    check = _validator("InvocationsRequest", v)
    record = {"amount": 1.0, "hour": 2, "country": "DE"}
    assert check.is_valid({"dataframe_records": [record]})
    assert not check.is_valid({"dataframe_records": [record], "instances": [record]})
    assert not check.is_valid({"dataframe_records": [record], "params": [None]})
    assert not check.is_valid({})


# ---- the served document ----------------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_routes_that_need_a_key_declare_it(tmp_path: Path) -> None:
    keys = {"predict": ["predict-key-0001"], "read": ["read-key-0000001"], "admin": ["admin-key-000001"]}
    async with served(tmp_path, keys=keys) as s:
        r = await s.client.get("/openapi.json", headers={"Authorization": "Bearer read-key-0000001"})
        spec = r.json()
    paths = spec["paths"]
    bearer = [{"bearer": []}]
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["bearer"]["description"],
    }
    for path in ("/predict", "/invocations", "/v2/models/{name}/infer", "/admin/reload"):
        assert paths[path]["post"]["security"] == bearer, path
    assert paths["/v2/models/{name}"]["get"]["security"] == bearer
    assert "security" not in paths["/feedback"]["post"]  # no feedback key: open
    for path in ("/health", "/ready", "/metrics"):
        assert "security" not in paths[path]["get"], path
    assert list(paths["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    # Every route documents each status it answers with; errors share one body.
    for path, ops in paths.items():
        for op in ops.values():
            for status, answer in op["responses"].items():
                # Plain text: Prometheus, and MLflow's /version and 415 answers (as mlflow models serve).
                plain = path in ("/metrics", "/version") or (path, status) == ("/invocations", "415")
                assert "application/json" in answer["content"] or plain, (path, status)
    assert {"400", "401", "404", "413", "503"} <= set(paths["/v2/models/{name}/infer"]["post"]["responses"])
    assert {"400", "401", "413", "415", "503"} <= set(paths["/invocations"]["post"]["responses"])
    assert paths["/v2/models/{name}/infer"]["post"]["parameters"][0]["schema"]["enum"] == ["toy"]
