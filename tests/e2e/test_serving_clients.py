"""The clients users already run, against `mloop serve`: Triton's ``tritonclient[http]`` (binary and
JSON tensors, every call it makes for metadata, readiness, configuration, the repository index and
statistics) and MLflow's ``ScoringServerClient``; and the same bodies, valid and not, sent to
`mlflow models serve` and `mloop serve` side by side, with the same status and body shape.

One small model is trained and both servers start once for the module (about a minute in all).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from testkit.processes import mloop_server, server

th = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is in the dev extra")
from mlflow.pyfunc.scoring_server.client import ScoringServerClient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

MODEL = "fraud-detector"
BIN = Path(sys.executable).parent


@dataclass
class Servers:
    project: Path
    mloop: str  # host:port
    mlflow: str | None  # host:port, None when `mlflow models serve` did not start
    records: list[dict[str, Any]]


def _run(cwd: Path, *args: str) -> None:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    root = tmp_path_factory.mktemp("clients")
    _run(root, sys.executable, "-m", "mloop", "init", "demo", "--template", "fraud", "--rows", "600")
    project = root / "demo"
    config = project / "mloop.yaml"
    text = config.read_text().replace("estimator: train:build_model", "estimator: random_forest")
    config.write_text(text.replace("model:\n", "model:\n  params: {n_estimators: 10}\n", 1))
    _run(project, sys.executable, "-m", "mloop", "train")
    example = json.loads(next((project / ".mloop").rglob("input_example.json")).read_text())
    records = [dict(zip(example["columns"], row, strict=True)) for row in example["data"]]

    # No MLOOP_* and no MLFLOW_* from this process: mlflow.set_tracking_uri/set_registry_uri export
    # MLFLOW_TRACKING_URI/MLFLOW_REGISTRY_URI, and an earlier module's registry once answered here.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOOP_", "MLFLOW_"))}
    mlflow_env = {
        **env,
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / '.mloop' / 'mlflow.db'}",
        "MLFLOW_REGISTRY_URI": f"sqlite:///{project / '.mloop' / 'mlflow.db'}",
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # it runs `uvicorn` from PATH
    }

    def mlflow_serve(port: int) -> list[str]:
        model = f"models:/{MODEL}@champion"
        serve = [str(BIN / "mlflow"), "models", "serve", "-m", model, "--env-manager", "local"]
        return [*serve, "-h", "127.0.0.1", "-p", str(port), "-w", "1"]

    with contextlib.ExitStack() as stack:
        mloop = stack.enter_context(mloop_server(project, "--log-level", "warning", env=env, timeout=150))
        try:
            mlflow = stack.enter_context(
                server(mlflow_serve, project, env=mlflow_env, ready_path="/ping", timeout=150)
            )
        except AssertionError:  # the side-by-side tests skip, saying so
            mlflow_address = None
        else:
            mlflow_address = f"127.0.0.1:{mlflow.port}"
        yield Servers(project, f"127.0.0.1:{mloop.port}", mlflow_address, records)


# -- Triton's client ------------------------------------------------------------------------------
def _inputs(meta: dict[str, Any], records: list[dict[str, Any]], binary: bool) -> list[Any]:
    """One tensor per field, built from numpy arrays as users of tritonclient do."""
    out = []
    for spec in meta["inputs"]:
        values = [r[spec["name"]] for r in records]
        dtype = {"FP64": np.float64, "INT64": np.int64, "BOOL": np.bool_, "BYTES": np.object_}[
            spec["datatype"]
        ]
        array = np.array([v.encode() if isinstance(v, str) else v for v in values], dtype=dtype)
        tensor = th.InferInput(spec["name"], list(array.shape), spec["datatype"])
        tensor.set_data_from_numpy(array, binary_data=binary)
        out.append(tensor)
    return out


def _native_probabilities(servers: Servers, records: list[dict[str, Any]]) -> tuple[list[Any], np.ndarray]:
    answer = httpx.post(f"http://{servers.mloop}/predict", json={"features": records}, timeout=30).json()
    classes = list(answer["predictions"][0]["probabilities"])
    proba = np.array([[p["probabilities"][c] for c in classes] for p in answer["predictions"]])
    return [p["prediction"] for p in answer["predictions"]], proba


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_calls(servers: Servers, binary: bool) -> None:
    client = th.InferenceServerClient(servers.mloop)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready(MODEL, "99") and not client.is_model_ready("other")

    meta = client.get_model_metadata(MODEL, "1")
    assert meta["name"] == MODEL and meta["versions"] == ["1"]
    assert [o["name"] for o in meta["outputs"]] == ["predict", "predict_proba"]
    assert client.get_model_metadata(MODEL) == meta
    config = client.get_model_config(MODEL)
    assert config["name"] == MODEL and [i["name"] for i in config["input"]] == [
        i["name"] for i in meta["inputs"]
    ]
    assert client.get_model_config(MODEL, "1") == config
    assert client.get_model_repository_index() == [
        {"name": MODEL, "version": "1", "state": "READY", "reason": ""}
    ]
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]

    before = client.get_inference_statistics(MODEL, "1")["model_stats"][0]
    records = servers.records[:3]
    labels, proba = _native_probabilities(servers, records)

    # Every output, by default (binary unless JSON outputs are asked for).
    outputs = (
        None
        if binary
        else [th.InferRequestedOutput(n, binary_data=False) for n in ("predict", "predict_proba")]
    )
    result = client.infer(MODEL, _inputs(meta, records, binary), outputs=outputs, request_id="r-1")
    response = result.get_response()
    assert response["id"] == "r-1" and response["model_version"] == "1"
    assert all(("data" in o) != binary for o in response["outputs"])
    assert result.as_numpy("predict").tolist() == labels
    np.testing.assert_array_equal(result.as_numpy("predict_proba"), proba)

    # Only the requested output, on a named version.
    only = client.infer(
        MODEL,
        _inputs(meta, records, binary),
        model_version="1",
        outputs=[th.InferRequestedOutput("predict_proba", binary_data=binary)],
    )
    assert [o["name"] for o in only.get_response()["outputs"]] == ["predict_proba"]
    assert only.as_numpy("predict") is None
    np.testing.assert_array_equal(only.as_numpy("predict_proba"), proba)

    after = client.get_inference_statistics(MODEL, "1")["model_stats"][0]
    assert after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"] == 3
    assert after["inference_count"] - before["inference_count"] == 9  # /predict's 3 rows too
    assert {s["name"] for s in client.get_inference_statistics()["model_stats"]} == {MODEL}
    assert client.get_inference_statistics(MODEL)["model_stats"][0]["version"] == "1"


def test_tritonclient_sees_the_servers_reasons(servers: Servers) -> None:
    client = th.InferenceServerClient(servers.mloop)
    meta = client.get_model_metadata(MODEL)
    inputs = _inputs(meta, servers.records[:2], binary=True)

    def refusal(**kwargs: Any) -> InferenceServerException:
        with pytest.raises(InferenceServerException) as caught:
            client.infer(MODEL, **{"inputs": inputs, **kwargs})
        return caught.value

    unknown = refusal(outputs=[th.InferRequestedOutput("score")])
    assert unknown.status() == "400" and "no output 'score'" in unknown.message()
    assert "predict_proba" in unknown.message()

    duplicate = refusal(inputs=[*inputs, inputs[0]])
    assert duplicate.status() == "400" and "appear more than once" in duplicate.message()

    shaped = th.InferInput(meta["inputs"][0]["name"], [3], "FP64")
    shaped.set_data_from_numpy(np.array([1.0, 2.0, 3.0]))
    shape = refusal(inputs=[shaped, *inputs[1:]])
    assert shape.status() == "400" and "same length" in shape.message()

    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("other")
    assert caught.value.status() == "404" and "not 'other'" in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        client.infer(MODEL, inputs, model_version="99")
    assert caught.value.status() == "404" and "'99'" in caught.value.message()


def test_a_declared_json_tensor_that_disagrees_with_its_data_is_refused(servers: Servers) -> None:
    meta = httpx.get(f"http://{servers.mloop}/v2/models/{MODEL}", timeout=10).json()
    record = servers.records[0]
    tensors = [
        {"name": s["name"], "shape": [1], "datatype": s["datatype"], "data": [record[s["name"]]]}
        for s in meta["inputs"]
    ]
    url = f"http://{servers.mloop}/v2/models/{MODEL}/infer"
    assert httpx.post(url, json={"inputs": tensors}, timeout=10).status_code == 200
    wrong_shape = [{**tensors[0], "shape": [2]}, *tensors[1:]]
    r = httpx.post(url, json={"inputs": wrong_shape}, timeout=10)
    assert r.status_code == 400 and "shape [2] (2 values)" in r.json()["error"]
    wrong_type = [{**tensors[0], "datatype": "INT8"}, *tensors[1:]]
    r = httpx.post(url, json={"inputs": wrong_type}, timeout=10)
    assert r.status_code == 400 and list(r.json()) == ["error"] and "INT8" in r.json()["error"]


# -- MLflow's client and server -------------------------------------------------------------------
def _client(hostport: str) -> ScoringServerClient:
    host, port = hostport.split(":")
    return ScoringServerClient(host, int(port))


def test_mlflow_scoring_server_client(servers: Servers) -> None:
    client = _client(servers.mloop)
    client.wait_server_ready(timeout=10)
    import mlflow

    assert client.get_version() == mlflow.__version__
    frame = pd.DataFrame(servers.records)
    mine = client.invoke(frame)
    assert len(mine.get_predictions()) == len(frame)
    if servers.mlflow is not None:
        theirs = _client(servers.mlflow).invoke(frame)
        assert mine == theirs
        assert _client(servers.mlflow).get_version() == client.get_version()
    with pytest.raises(Exception, match="error code 400"):
        client.invoke(frame.assign(amount="lots"))


def _bodies(records: list[dict[str, Any]]) -> list[tuple[str, str, bytes]]:
    """(case, content type, body): every form MLflow reads, and the refusals it answers."""
    record, columns = records[0], list(records[0])
    frame = pd.DataFrame(records[:2])
    parquet = io.BytesIO()
    frame.to_parquet(parquet)
    j = "application/json"

    def dumps(x: Any) -> bytes:
        return json.dumps(x).encode()

    return [
        (
            "dataframe_split",
            j,
            dumps({"dataframe_split": {"columns": columns, "data": [list(record.values())]}}),
        ),
        ("dataframe_records", j, dumps({"dataframe_records": records[:2]})),
        ("instances", j, dumps({"instances": [record]})),
        ("inputs columnar", j, dumps({"inputs": {k: [v] for k, v in record.items()}})),
        ("charset utf-8", j + "; charset=utf-8", dumps({"dataframe_records": [record]})),
        ("csv", "text/csv", frame.to_csv(index=False).encode()),
        ("csv with index", "text/csv", frame.to_csv().encode()),
        ("parquet", "application/vnd.apache.parquet", parquet.getvalue()),
        ("not json", j, b"{not json"),
        ("a list", j, dumps([record])),
        ("no input key", j, dumps({"data": [record]})),
        ("two input keys", j, dumps({"instances": [record], "inputs": [record]})),
        ("wrong type", j, dumps({"dataframe_records": [{**record, "amount": "lots"}]})),
        (
            "missing column",
            j,
            dumps({"dataframe_records": [{k: v for k, v in record.items() if k != "amount"}]}),
        ),
        ("csv not numbers", "text/csv", b"amount,hour\nabc,3\n"),
        ("text/plain", "text/plain", b"hello"),
        ("xml", "application/xml", b"<a/>"),
        ("latin-1", j + "; charset=latin-1", dumps({"dataframe_records": [record]})),
        ("unknown parameter", j + "; format=pandas-split", dumps({"dataframe_records": [record]})),
    ]


def _shape(r: httpx.Response) -> tuple[int, str, Any]:
    media = r.headers.get("content-type", "").partition(";")[0]
    if media != "application/json":
        return r.status_code, media, None
    body = r.json()
    if r.status_code == 200:
        return r.status_code, media, body
    # MLflow's error body: error_code and message (MLflow adds null error_class and sqlstate).
    assert {"error_code", "message"} <= set(body), body
    return r.status_code, media, "error"


def test_same_bodies_same_answers_as_mlflow_models_serve(servers: Servers) -> None:
    if servers.mlflow is None:
        pytest.fail("mlflow models serve did not start (it is a core dependency)")
    cases = _bodies(servers.records)
    with httpx.Client(timeout=60) as http:
        for case, content_type, body in cases:
            headers = {"content-type": content_type}
            theirs = http.post(f"http://{servers.mlflow}/invocations", content=body, headers=headers)
            mine = http.post(f"http://{servers.mloop}/invocations", content=body, headers=headers)
            assert _shape(mine) == _shape(theirs), (case, mine.text[:300], theirs.text[:300])
            if mine.status_code == 400:  # MLflow's codes for a body it cannot score
                assert mine.json()["error_code"] == "BAD_REQUEST", case
                assert theirs.json()["error_code"] in ("BAD_REQUEST", "INVALID_PARAMETER_VALUE"), case
    statuses = [
        httpx.post(f"http://{servers.mloop}/invocations", content=b, headers={"content-type": t}).status_code
        for _, t, b in cases
    ]
    assert statuses == [200] * 8 + [400] * 7 + [415] * 4
