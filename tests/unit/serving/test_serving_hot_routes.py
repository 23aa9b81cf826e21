"""The hot prediction endpoints, served in front of FastAPI's routing, answer exactly as through it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from mloop.config.settings import ServingSettings, Settings
from mloop.predlog import MemoryPredictionLog, PredictionLogger
from mloop.server import create_app
from mloop.server.app import ServingApp
from mloop.serving import PredictionService, StaticSource
from mloop.tracking import LoadedModel
from testkit.toy_model import RECORD

pytestmark = pytest.mark.anyio
_ID = re.compile(rb"[0-9a-f]{32}")

CASES: list[tuple[str, dict[str, Any]]] = [
    ("/invocations", {"json": {"dataframe_records": [RECORD]}}),
    ("/invocations", {"json": {"dataframe_split": {"columns": ["amount"], "data": [[1.0]]}}}),
    ("/invocations", {"json": {"dataframe_records": [{**RECORD, "amount": "lots"}]}}),
    ("/predict", {"json": {"features": [RECORD, {**RECORD, "country": "XX"}]}}),
    ("/predict", {"json": {"features": {**RECORD, "hour": None}}}),
    ("/predict", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
    ("/predict", {"content": b"x" * 30_000, "headers": {"content-type": "application/json"}}),
    ("/predict", {"json": {"features": RECORD}, "headers": {"x-api-key": "wrong"}}),
    (
        "/v2/models/toy/infer",
        {"json": {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1.0, 3, 7]}]}},
    ),
    (
        "/v2/models/toy/infer",
        {"json": {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [1.0]}]}},
    ),
    (
        "/invocations",
        {"content": b"amount,hour,country\n1.0,3,DE\n", "headers": {"content-type": "text/csv"}},
    ),
    ("/invocations", {"content": b"<x/>", "headers": {"content-type": "application/xml"}}),
]


@pytest.fixture
async def app_and_client(
    tmp_path: Path, loaded_factory: Callable[..., LoadedModel]
) -> AsyncIterator[tuple[ServingApp, httpx.AsyncClient]]:
    serving = ServingSettings(poll_interval_s=0, max_body_bytes=20_000, api_key="k")
    settings = Settings(root=tmp_path, serving=serving)
    source = StaticSource("toy", {1: loaded_factory(1)}, {"champion": 1})
    service = PredictionService(
        settings, source=source, logger=PredictionLogger(MemoryPredictionLog(), flush_interval_s=0.05)
    )
    app = create_app(settings, service=service)
    await service.start(wait=True)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield app, client
    await service.stop()


async def _answers(client: httpx.AsyncClient) -> list[tuple[int, dict[str, str], bytes]]:
    out = []
    for path, kw in CASES:
        headers = {"x-api-key": "k", **kw.get("headers", {})}
        r = await client.post(path, **{**kw, "headers": headers})
        out.append((r.status_code, dict(r.headers), _ID.sub(b"<id>", r.content)))
    return out


async def test_hot_routes_answer_as_fastapi_routing_does(
    app_and_client: tuple[ServingApp, httpx.AsyncClient],
) -> None:
    app, client = app_and_client
    assert set(app.hot_routes) == {"/invocations", "/predict", "/v2/models/toy/infer"}
    direct = await _answers(client)
    hot, app.hot_routes = app.hot_routes, {}  # everything through FastAPI's routing
    routed = await _answers(client)
    app.hot_routes = hot
    assert direct == routed
    assert [status for status, _, _ in direct] == [200, 400, 400, 200, 422, 422, 413, 401, 200, 400, 200, 415]
    schema = (await client.get("/openapi.json")).json()
    assert {"/invocations", "/predict"} <= set(schema["paths"])


async def test_unexpected_error_on_a_hot_route_is_a_logged_500(
    app_and_client: tuple[ServingApp, httpx.AsyncClient], caplog: pytest.LogCaptureFixture
) -> None:
    app, client = app_and_client
    service: PredictionService = app.state.service

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    service.predict = broken
    answers = []
    for hot in (app.hot_routes, {}):
        app.hot_routes = hot
        r = await client.post(
            "/invocations", json={"dataframe_records": [RECORD]}, headers={"x-api-key": "k"}
        )
        answers.append((r.status_code, r.json()))
    assert answers[0] == answers[1]
    assert answers[0] == (
        500,
        {"error": "ServingError", "message": "Unexpected server error: RuntimeError. See the server log."},
    )
    assert sum("Unexpected error on POST /invocations" in m for m in caplog.messages) == 2
