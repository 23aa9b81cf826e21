"""The HTTP app over an in-memory model source: every endpoint, error codes, metrics, swaps, logging."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from mloop.config.settings import ServingSettings, Settings
from mloop.predlog import MemoryPredictionLog, PredictionLogger
from mloop.server import create_app
from mloop.serving import PredictionService, StaticSource
from mloop.store import open_store
from mloop.tracking import LoadedModel
from testkit.toy_model import RECORD

pytestmark = pytest.mark.anyio
TOKEN = "admin-secret-123"


class Served:
    def __init__(
        self,
        client: httpx.AsyncClient,
        service: PredictionService,
        source: StaticSource,
        log: MemoryPredictionLog,
    ) -> None:
        self.client, self.service, self.source, self.log = client, service, source, log


@pytest.fixture
async def served(
    tmp_path: Path, loaded_factory: Callable[..., LoadedModel], request: pytest.FixtureRequest
) -> AsyncIterator[Served]:
    extra: dict[str, Any] = getattr(request, "param", {})
    options: dict[str, Any] = {
        "admin_token": TOKEN,
        "poll_interval_s": 0,
        "max_request_rows": 50,
        "max_body_bytes": 20_000,
        **extra,
    }
    serving = ServingSettings(**options)
    settings = Settings(root=tmp_path, serving=serving)
    source = StaticSource("toy", {1: loaded_factory(1), 2: loaded_factory(2, constant=1)}, {"champion": 1})
    log = MemoryPredictionLog()
    logger = PredictionLogger(log, flush_interval_s=0.05)
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    service = PredictionService(settings, source=source, logger=logger, store=store)
    app = create_app(settings, service=service)
    await service.start(wait=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        yield Served(client, service, source, log)
    await service.stop()


async def test_predict_forms_return_ids_probabilities_and_version(served: Served) -> None:
    c = served.client
    one = (await c.post("/predict", json={"features": RECORD})).json()
    assert one["model"] == "toy" and one["version"] == "1" and one["arm"] == "champion"
    (item,) = one["predictions"]
    assert len(item["id"]) == 32 and item["prediction"] in (0, 1)
    assert set(item["probabilities"]) == {"0", "1"} and abs(sum(item["probabilities"].values()) - 1) < 1e-9
    many = (await c.post("/predict", json={"features": [RECORD, {**RECORD, "amount": 5.0}]})).json()
    assert len(many["predictions"]) == 2 and many["predictions"][0]["id"] != many["predictions"][1]["id"]
    positional = (await c.post("/predict", json={"features": [300.0, 3, "DE"]})).json()
    assert positional["predictions"][0]["probabilities"] == item["probabilities"]
    flagged = (await c.post("/predict", json={"features": {**RECORD, "country": "XX"}})).json()
    assert flagged["predictions"][0]["flags"] == {"unseen_category": ["country"]}


async def test_mlflow_protocol_answers_like_mlflow(served: Served) -> None:
    c = served.client
    bodies = [
        {"dataframe_split": {"columns": list(RECORD), "data": [list(RECORD.values())]}},
        {"dataframe_records": [RECORD]},
        {"instances": [RECORD]},
        {"inputs": {k: [v] for k, v in RECORD.items()}},
    ]
    answers = [(await c.post("/invocations", json=b)).json() for b in bodies]
    assert all(a == answers[0] for a in answers)
    assert list(answers[0]) == ["predictions"] and len(answers[0]["predictions"]) == 1


async def test_v2_protocol(served: Served) -> None:
    c = served.client
    assert (await c.get("/v2/health/live")).status_code == 200
    assert (await c.get("/v2/health/ready")).json() == {"ready": True}
    meta = (await c.get("/v2/models/toy")).json()
    assert [i["name"] for i in meta["inputs"]] == ["amount", "hour", "country"] and meta["versions"] == ["1"]
    req = {
        "id": "r1",
        "inputs": [
            {"name": k, "shape": [2], "datatype": "BYTES" if isinstance(v, str) else "FP64", "data": [v, v]}
            for k, v in RECORD.items()
        ],
    }
    out = (await c.post("/v2/models/toy/infer", json=req)).json()
    assert out["id"] == "r1" and out["model_version"] == "1"
    proba = next(o for o in out["outputs"] if o["name"] == "predict_proba")
    assert proba["shape"] == [2, 2] and len(proba["data"]) == 4
    # One [N, F] tensor of rows holds one datatype: numbers here (country 7 is read as the code "7").
    tensor = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [300.0, 3, 7]}]}
    assert (await c.post("/v2/models/toy/infer", json=tensor)).status_code == 200
    mixed = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "BYTES", "data": [300.0, 3, "DE"]}]}
    refused = await c.post("/v2/models/toy/infer", json=mixed)
    # The protocol's refusal: 400 with {"error": message} (tritonclient shows the message).
    assert refused.status_code == 400 and list(refused.json()) == ["error"]
    assert "BYTES but holds 300.0" in refused.json()["error"]
    other = await c.post("/v2/models/other/infer", json=req)
    assert other.status_code == 404 and "not 'other'" in other.json()["error"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 422),
        (b'{"features": {"amount": "x", "hour": 1, "country": "DE"}}', 422),
        (b'{"nope": 1}', 422),
        (b'{"features": []}', 422),
        (b'{"features": 3}', 422),
        (b'{"features": [[1.0, 2]]}', 422),
        (b'{"dataframe_split": {"data": 1}}', 422),
        (b"[]", 422),
        (b'{"features": [' + b",".join([b'{"amount":1,"hour":1,"country":"DE"}'] * 51) + b"]}", 413),
        (b'{"features": "' + b"x" * 30_000 + b'"}', 413),
    ],
)
async def test_bad_input_gets_4xx_never_5xx(served: Served, body: bytes, status: int) -> None:
    r = await served.client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["message"]


async def test_validation_errors_are_counted_by_field(served: Served) -> None:
    await served.client.post("/predict", json={"features": {"amount": "x", "hour": 1, "country": "DE"}})
    text = (await served.client.get("/metrics")).text
    assert 'mloop_validation_errors_total{field="amount",model="toy",rule="type"} 1.0' in text
    assert 'mloop_requests_total{endpoint="predict",model="toy",status="422",version="1"} 1.0' in text


async def test_metrics_names_follow_the_contract(served: Served) -> None:
    await served.client.post("/predict", json={"features": RECORD})
    text = (await served.client.get("/metrics")).text
    for name in (
        "mloop_requests_total",
        "mloop_request_latency_seconds_bucket",
        "mloop_model_latency_seconds_bucket",
        "mloop_batch_size_bucket",
        "mloop_queue_depth",
        "mloop_predictions_total",
        "mloop_model_info",
        "mloop_prediction_log_dropped_total",
    ):
        assert name in text, name
    assert 'alias="champion"' in text and 'version="1"' in text


async def test_predictions_are_logged_and_feedback_is_stored(served: Served) -> None:
    r = (await served.client.post("/predict", json={"features": [RECORD, RECORD]})).json()
    ids = [p["id"] for p in r["predictions"]]
    served.service.logger.flush()
    frame = served.log.read(model_name="toy")
    assert set(ids) <= set(frame["prediction_id"]) and set(frame["model_version"]) == {"1"}
    assert "amount" in frame.columns and "proba_1" in frame.columns
    fb = await served.client.post(
        "/feedback", json={"feedback": [{"prediction_id": i, "label": 1} for i in ids]}
    )
    assert fb.json() == {"received": 2, "stored": 2}
    assert served.service.store.feedback(ids) == dict.fromkeys(ids, 1)
    bad = await served.client.post("/feedback", json={"prediction_id": "", "label": 1})
    assert bad.status_code == 422


async def test_admin_requires_the_bearer_token(served: Served) -> None:
    c = served.client
    assert (await c.post("/admin/reload")).status_code == 401
    assert (await c.post("/admin/reload", headers={"Authorization": "Bearer wrong"})).status_code == 401
    ok = await c.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.json() == {"changed": False, "version": "1", "previous": "1"}


@pytest.mark.parametrize("served", [{"admin_token": None, "api_key": "k1"}], indirect=True)
async def test_admin_disabled_without_token_and_api_key_enforced(served: Served, monkeypatch: Any) -> None:
    monkeypatch.delenv("MLOOP_ADMIN_TOKEN", raising=False)
    c = served.client
    forbidden = await c.post("/admin/reload", headers={"Authorization": "Bearer x"})
    assert forbidden.status_code == 403 and "MLOOP_ADMIN_TOKEN" in forbidden.json()["message"]
    assert (await c.post("/predict", json={"features": RECORD})).status_code == 401
    assert (
        await c.post("/predict", json={"features": RECORD}, headers={"X-API-Key": "k1"})
    ).status_code == 200


async def test_swap_under_load_fails_nothing_and_each_response_names_its_version(served: Served) -> None:
    c = served.client

    async def client_loop(stop: asyncio.Event) -> list[tuple[int, str, Any]]:
        seen = []
        while not stop.is_set():
            r = await c.post("/predict", json={"features": {**RECORD, "amount": 5.0}})
            body = r.json()
            seen.append(
                (r.status_code, body.get("version"), body.get("predictions", [{}])[0].get("prediction"))
            )
        return seen

    stop = asyncio.Event()
    tasks = [asyncio.create_task(client_loop(stop)) for _ in range(8)]
    await asyncio.sleep(0.2)
    served.source.aliases["champion"] = 2
    swapped = await c.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert swapped.json() == {"changed": True, "version": "2", "previous": "1"}
    await asyncio.sleep(0.2)
    stop.set()
    seen = [x for t in tasks for x in await t]
    assert all(status == 200 for status, _, _ in seen)
    versions = {v for _, v, _ in seen}
    assert versions == {"1", "2"}
    # Version 2 always predicts 1; version 1 predicts 0 for this small amount: answers match their version.
    assert all(pred == (1 if v == "2" else 0) for _, v, pred in seen)
    assert served.service.champion().version == "2"


async def test_openapi_lists_contract_fields_types_and_categories(served: Served) -> None:
    spec = (await served.client.get("/openapi.json")).json()
    features = spec["components"]["schemas"]["Features"]
    assert set(features["properties"]) == {"amount", "hour", "country"}
    assert features["properties"]["hour"]["type"] == "integer"
    assert "DE" in features["properties"]["country"]["description"]
    assert "/predict" in spec["paths"] and "/v2/models/{name}/infer" in spec["paths"]
