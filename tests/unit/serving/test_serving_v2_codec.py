"""The Open Inference Protocol codec: binary tensor data in and out, requested outputs, and the
CSV/Parquet bodies of ``/invocations`` read as ``mlflow models serve`` reads them."""

from __future__ import annotations

import io
import json
import math
import struct
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.utils import serialize_byte_tensor

from mloop.data.schema import DataContract
from mloop.errors import PayloadTooLarge, RequestValidationError
from mloop.serving.codecs import Table, decode_mlflow, parse_csv, parse_parquet
from mloop.serving.stats import InferenceStats
from mloop.serving.v2 import decode_v2, encode_response, output_plan, read_request
from mloop.serving.validation import ContractValidator

CONTRACT = DataContract.from_dict(
    {
        "columns": [
            {"name": "amount", "dtype": "float", "nullable": True},
            {"name": "hour", "dtype": "int", "nullable": False},
            {"name": "country", "dtype": "category", "nullable": False, "categories": ["DE", "FR"]},
            {"name": "weekend", "dtype": "bool", "nullable": False},
        ],
        "target": None,
    }
)


@pytest.fixture
def v() -> ContractValidator:
    return ContractValidator(CONTRACT)


def _binary_request(tensors: list[tuple[str, str, bytes, int]], **extra: Any) -> tuple[bytes, str]:
    """What tritonclient sends: the JSON part, then each input's bytes; and the header's value."""
    head = json.dumps(
        {
            "inputs": [
                {"name": n, "shape": [count], "datatype": t, "parameters": {"binary_data_size": len(b)}}
                for n, t, b, count in tensors
            ],
            **extra,
        }
    ).encode()
    return head + b"".join(b for _, _, b, _ in tensors), str(len(head))


def test_binary_tensors_of_every_layout_read_as_json_tensors(v: ContractValidator) -> None:
    amount = np.array([1.5, np.nan], dtype=np.float32)
    raw, header = _binary_request(
        [
            ("amount", "FP32", amount.tobytes(), 2),
            ("hour", "INT8", np.array([3, -4], dtype=np.int8).tobytes(), 2),
            (
                "country",
                "BYTES",
                serialize_byte_tensor(np.array([b"DE", b"FR"], dtype=object)).item(),
                2,
            ),
            ("weekend", "BOOL", np.array([True, False]).tobytes(), 2),
        ]
    )
    body = read_request(raw, header)
    assert [t["data"] for t in body["inputs"]] == [[1.5, None], [3, -4], ["DE", "FR"], [True, False]]
    columns = decode_v2(body, v, 100)
    assert columns.n == 2 and columns.values["hour"] == [3, -4] and columns.values["country"] == ["DE", "FR"]
    missing = columns.values["amount"][1]
    assert missing is None or math.isnan(missing)  # NaN in a binary float tensor: a missing value


@pytest.mark.parametrize(
    ("datatype", "array"),
    [
        ("INT16", np.array([1, -2], dtype="<i2")),
        ("INT32", np.array([1, -2], dtype="<i4")),
        ("INT64", np.array([1, -2], dtype="<i8")),
        ("UINT8", np.array([1, 2], dtype="<u1")),
        ("UINT16", np.array([1, 2], dtype="<u2")),
        ("UINT32", np.array([1, 2], dtype="<u4")),
        ("UINT64", np.array([1, 2], dtype="<u8")),
        ("FP16", np.array([0.5, -2.0], dtype="<f2")),
        ("FP64", np.array([0.5, -2.0], dtype="<f8")),
    ],
)
def test_binary_numbers_match_numpy(datatype: str, array: np.ndarray) -> None:
    raw, header = _binary_request([("x", datatype, array.tobytes(), 2)])
    assert read_request(raw, header)["inputs"][0]["data"] == array.tolist()


@pytest.mark.parametrize(
    ("raw", "header", "words"),
    [
        (b'{"inputs": []}', "99", "Inference-Header-Content-Length is '99'"),
        (b'{"inputs": []}', "x", "Inference-Header-Content-Length is 'x'"),
        (b'{"inp', "5", "not valid JSON"),
        (b'{"inputs": []}xyz', "14", "3 bytes after the JSON part"),
    ],
)
def test_malformed_binary_bodies_are_refused(raw: bytes, header: str, words: str) -> None:
    with pytest.raises(RequestValidationError, match=words):
        read_request(raw, header)


def test_binary_sizes_must_fit_the_body_and_the_layout() -> None:
    raw, header = _binary_request([("x", "FP64", b"\x00" * 12, 1)])
    with pytest.raises(RequestValidationError, match="8 bytes per value"):
        read_request(raw, header)
    tensor = {"name": "x", "shape": [1], "datatype": "FP64", "parameters": {"binary_data_size": 16}}
    head = json.dumps({"inputs": [tensor]}).encode()
    with pytest.raises(RequestValidationError, match="binary_data_size 16, but 8 bytes"):
        read_request(head + b"\x00" * 8, str(len(head)))
    raw, header = _binary_request([("x", "BYTES", struct.pack("<I", 10) + b"abc", 1)])
    with pytest.raises(RequestValidationError, match="runs past"):
        read_request(raw, header)
    raw, header = _binary_request([("x", "BYTES", struct.pack("<I", 2) + b"\xff\xfe", 1)])
    with pytest.raises(RequestValidationError, match="not UTF-8"):
        read_request(raw, header)
    tensor = {**tensor, "data": [1.0], "parameters": {"binary_data_size": 8}}
    head = json.dumps({"inputs": [tensor]}).encode()
    with pytest.raises(RequestValidationError, match="both data and binary_data_size"):
        read_request(head + b"\x00" * 8, str(len(head)))


def _prediction(classifier: bool = True) -> Any:
    runtime = SimpleNamespace(class_labels=["0", "1"], is_classifier=classifier)
    output = SimpleNamespace(
        predictions=[1, 0], probabilities=[[0.25, 0.75], [0.5, 0.5]] if classifier else None
    )
    return SimpleNamespace(
        runtime=runtime, output=output, model="m", version="3", ids=["a", "b"], arm="champion"
    )


def test_requested_outputs_and_binary_answers() -> None:
    p = _prediction()
    body = {"outputs": [{"name": "predict_proba", "parameters": {"binary_data": True}}], "id": "r"}
    content, length = encode_response(p, body, output_plan(body, True))
    assert length is not None
    head = json.loads(content[:length])
    assert head["id"] == "r" and [o["name"] for o in head["outputs"]] == ["predict_proba"]
    out = head["outputs"][0]
    assert out["parameters"]["binary_data_size"] == 32 and "data" not in out
    assert np.frombuffer(content[length:], dtype="<f8").reshape(out["shape"]).tolist() == [
        [0.25, 0.75],
        [0.5, 0.5],
    ]

    body = {"parameters": {"binary_data_output": True}}
    content, length = encode_response(p, body, output_plan(body, True))
    assert length is not None and len(content) - length == 16 + 32  # INT64 labels, then probabilities

    content, length = encode_response(p, {}, output_plan({}, True))
    assert length is None and [o["data"] for o in json.loads(content)["outputs"]] == [
        [1, 0],
        [0.25, 0.75, 0.5, 0.5],
    ]


@pytest.mark.parametrize(
    ("outputs", "words"),
    [
        ([{"name": "score"}], "no output 'score'"),
        ([{"name": "predict"}, {"name": "predict"}], "requested twice"),
        ([{"name": "predict_proba", "parameters": {"classification": 2}}], "classification extension"),
        ("predict", "must be a list"),
    ],
)
def test_output_plan_refusals(outputs: Any, words: str) -> None:
    with pytest.raises(RequestValidationError, match=words):
        output_plan({"outputs": outputs}, True)
    with pytest.raises(RequestValidationError, match="no output 'predict_proba'"):
        output_plan({"outputs": [{"name": "predict_proba"}]}, False)


def test_csv_reads_as_mlflow_reads_it(v: ContractValidator) -> None:
    frame = pd.DataFrame(
        {
            "amount": [1.5, None],
            "hour": [3, 4],
            "country": ["DE", "FR"],
            "weekend": [True, False],
            "x": [1, 2],
        }
    )
    columns = decode_mlflow(parse_csv(frame.to_csv()), v, 100)  # with the index column pandas writes
    assert columns.n == 2
    assert columns.values["hour"] == [3, 4] and columns.values["weekend"] == [True, False]
    assert columns.values["amount"][0] == 1.5 and columns.values["country"] == ["DE", "FR"]
    with pytest.raises(RequestValidationError, match="'hour'"):
        decode_mlflow(parse_csv("amount,hour,country,weekend\n1.0,three,DE,true\n"), v, 100)
    with pytest.raises(RequestValidationError, match="3 fields; the header names 2"):
        parse_csv("a,b\n1,2,3\n")
    with pytest.raises(RequestValidationError, match="empty"):
        parse_csv("\n")


def test_parquet_reads_typed_columns(v: ContractValidator) -> None:
    frame = pd.DataFrame(
        {"amount": [1.5, float("nan")], "hour": [3, 4], "country": ["DE", "FR"], "weekend": [True, False]}
    )
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    table = parse_parquet(buffer.getvalue())
    assert isinstance(table, Table) and table.columns["amount"] == [1.5, None]
    assert decode_mlflow(table, v, 100).values["hour"] == [3, 4]
    with pytest.raises(RequestValidationError, match="Parquet body could not be read"):
        parse_parquet(b"not parquet")


def test_inference_statistics_in_tritons_form() -> None:
    stats = InferenceStats()
    stats.request(True, 0.002, 0.0005, 0.0012, 0.001)
    stats.request(False, 0.001, 0.001, 0.0, 0.0)
    stats.batch(3, 0.001)
    stats.output(0.0001)
    doc = stats.to_triton("m", "2")
    inference = doc["inference_stats"]
    assert inference["success"] == {"count": 1, "ns": 2_000_000}
    assert inference["fail"] == {"count": 1, "ns": 1_000_000}
    assert inference["queue"]["ns"] == pytest.approx(200_000, abs=1)
    assert inference["compute_infer"] == {"count": 1, "ns": 1_000_000}
    assert doc["inference_count"] == 3 and doc["execution_count"] == 1
    assert doc["batch_stats"] == [
        {
            "batch_size": 3,
            "compute_input": {"count": 0, "ns": 0},
            "compute_infer": {"count": 1, "ns": 1_000_000},
            "compute_output": {"count": 0, "ns": 0},
        }
    ]


@pytest.mark.parametrize("datatype", [{}, [], None, 3])
def test_a_datatype_that_is_not_a_name_is_refused(v: ContractValidator, datatype: Any) -> None:
    tensor = {"name": "amount", "shape": [1], "datatype": datatype, "data": [1.0]}
    with pytest.raises(RequestValidationError, match="expected one of BOOL"):
        decode_v2({"inputs": [tensor]}, v, 100)
    with pytest.raises(RequestValidationError, match="expected one of BOOL"):
        decode_v2({"inputs": [tensor, {**tensor, "name": "hour"}]}, v, 100)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)
_tensors = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["amount", "hour", "x"]) | _json_values,
        "shape": st.lists(st.integers(-1, 3), max_size=3) | _json_values,
        "datatype": st.sampled_from(["FP64", "INT8", "BYTES", "BOOL", "FP16"]) | _json_values,
        "data": st.lists(_json_values, max_size=4) | _json_values,
        "parameters": _json_values,
    },
)


def _refusal(call: Any) -> str | None:
    """None when ``call`` succeeds; the message of a client refusal otherwise (anything else fails)."""
    try:
        call()
    except (RequestValidationError, PayloadTooLarge) as exc:
        return exc.message
    return None


@settings(max_examples=300, deadline=None)
@given(inputs=st.lists(_tensors, max_size=3) | _json_values, outputs=_json_values)
def test_any_json_request_is_answered_or_refused_as_the_clients(inputs: Any, outputs: Any) -> None:
    v = ContractValidator(CONTRACT)
    body = {"inputs": inputs, "outputs": outputs}
    raw = json.dumps(body).encode()
    for call in (
        lambda: decode_v2(body, v, 100),
        lambda: output_plan(body, True),
        lambda: read_request(raw + b"\x00" * 8, str(len(raw))),
    ):
        message = _refusal(call)
        assert message is None or len(message) > 20  # a refusal says what was wrong
