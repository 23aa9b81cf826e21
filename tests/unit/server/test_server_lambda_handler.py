"""The Lambda handler: API Gateway HTTP API (v2) events answered as `mloop serve` answers them, and the
prediction log written before the handler returns."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mloop.config.settings import Settings
from mloop.predlog import MemoryPredictionLog
from mloop.server import create_app
from mloop.server.lambda_handler import LambdaApp
from mloop.serving import PredictionService, StaticSource
from mloop.tracking import LoadedModel
from testkit.toy_model import RECORD, make_loaded

pytest.importorskip("mangum", reason="the Lambda handler needs Mangum: pip install 'mloop[lambda]'")


def _model(tmp: Path) -> LoadedModel:
    """A fitted classifier on amount/hour/country (no MLflow)."""
    return make_loaded(tmp)


def _settings(root: Path, flush_interval_s: float = 30) -> Settings:
    # What `mloop deploy lambda` configures: synchronous durability; the monitor runs elsewhere.
    # A long flush_interval_s: only the handler's flush can write records to the backend in time.
    return Settings.model_validate(
        {
            "root": root,
            "serving": {"poll_interval_s": 0},
            "prediction_log": {
                "url": "memory://",
                "durability": "sync",
                "flush_interval_s": flush_interval_s,
            },
            "monitoring": {"interval_s": 0},
        }
    )


def _service(root: Path, model: LoadedModel, flush_interval_s: float = 30) -> PredictionService:
    settings = _settings(root, flush_interval_s)
    return PredictionService(settings, source=StaticSource("toy", {1: model}, {"champion": 1}))


def http_event(method: str, path: str, body: Any = None, *, raw: str | None = None) -> dict[str, Any]:
    """An API Gateway HTTP API event (payload format 2.0), as Lambda receives it."""
    text = raw if raw is not None else (json.dumps(body) if body is not None else None)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "abc123.execute-api.eu-west-1.amazonaws.com"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.eu-west-1.amazonaws.com",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "test",
            },
            "requestId": "req-1",
            "routeKey": "$default",
            "stage": "$default",
            "timeEpoch": 0,
        },
        "isBase64Encoded": False,
    }
    if text is not None:
        event["body"] = text
    return event


@pytest.fixture
def lambda_app(tmp_path: Path) -> Iterator[LambdaApp]:
    service = _service(tmp_path / "lambda", _model(tmp_path / "model"))
    app = LambdaApp(create_app(service.settings, service=service), ready_timeout_s=30)
    yield app
    app.close()


def _served(tmp_path: Path, requests: list[tuple[str, str, Any]]) -> list[tuple[int, Any]]:
    """The answers of the in-process app (`mloop serve`'s) to ``requests``."""
    service = _service(tmp_path / "serve", _model(tmp_path / "model-serve"))
    app = create_app(service.settings, service=service)

    async def run() -> list[tuple[int, Any]]:
        await service.start(wait=True)
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                answers = []
                for method, path, content in requests:
                    r = await client.request(
                        method, path, content=content, headers={"content-type": "application/json"}
                    )
                    answers.append((r.status_code, r.json()))
                return answers
        finally:
            await service.stop()

    return asyncio.run(run())


def _body(response: dict[str, Any]) -> Any:
    text = response["body"]
    if response.get("isBase64Encoded"):
        text = base64.b64decode(text).decode()
    return json.loads(text)


_VOLATILE = {"id", "uptime_s", "started_at", "latency_ms", "request_id"}


def _stable(value: Any) -> Any:
    """``value`` without prediction ids and clock readings."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


REQUESTS: list[tuple[str, str, Any]] = [
    ("POST", "/predict", json.dumps({"features": RECORD})),
    ("POST", "/predict", json.dumps({"features": [RECORD, {**RECORD, "amount": 5.0}]})),
    ("POST", "/predict", json.dumps({"features": {**RECORD, "country": "XX"}})),
    ("POST", "/invocations", json.dumps({"dataframe_records": [RECORD]})),
    ("POST", "/predict", json.dumps({"features": {"amount": "lots", "hour": 3, "country": "DE"}})),
    ("POST", "/predict", json.dumps({"rows": []})),
    ("POST", "/predict", "{not json"),
    ("GET", "/health", None),
    ("GET", "/ready", None),
]


def test_events_get_the_answers_mloop_serve_gives(lambda_app: LambdaApp, tmp_path: Path) -> None:
    expected = _served(tmp_path, REQUESTS)
    got = []
    for method, path, content in REQUESTS:
        response = lambda_app(http_event(method, path, raw=content), None)
        got.append((response["statusCode"], _body(response)))
    assert [status for status, _ in got] == [status for status, _ in expected]
    assert [status for status, _ in got][:4] == [200, 200, 200, 200]
    assert {status for status, _ in got[4:7]} == {422}
    for (method, path, _), (_, body), (_, want) in zip(REQUESTS, got, expected, strict=True):
        if path == "/ready":  # a status report: counters (requests, records written) differ by design
            assert body["ready"] is want["ready"] is True and set(body) == set(want)
        else:
            assert _stable(body) == _stable(want), (method, path)
    ids = [p["id"] for p in got[0][1]["predictions"]]
    assert len(ids) == 1 and len(ids[0]) == 32


def test_a_prediction_is_in_the_log_when_the_handler_returns(lambda_app: LambdaApp) -> None:
    service = lambda_app.app.state.service
    backend = service.logger.backend
    assert isinstance(backend, MemoryPredictionLog)
    response = lambda_app(http_event("POST", "/predict", {"features": [RECORD, RECORD]}), None)
    assert response["statusCode"] == 200
    ids = [p["id"] for p in _body(response)["predictions"]]
    # No wait: flush_interval_s is 30 s, so only the handler's flush can have written them.
    logged = {r.prediction_id for r in backend.records}
    assert set(ids) <= logged
    assert service.logger.pending == 0


def test_a_bad_body_is_422_and_logs_nothing(lambda_app: LambdaApp) -> None:
    backend = lambda_app.app.state.service.logger.backend
    response = lambda_app(http_event("POST", "/predict", {"features": {"amount": "x"}}), None)
    assert response["statusCode"] == 422
    assert "detail" in _body(response) or "error" in _body(response)
    assert list(backend.records) == []


def test_the_handler_survives_asyncio_run_between_events(lambda_app: LambdaApp) -> None:
    asyncio.run(asyncio.sleep(0))  # unsets the current event loop, as other code in the process may
    response = lambda_app(http_event("GET", "/health"), None)
    assert response["statusCode"] == 200


def test_the_module_handler_builds_the_app_once_per_cold_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mloop.server.app as app_module
    from mloop.server import lambda_handler

    built: list[PredictionService] = []

    def app_from_env() -> Any:  # what `mloop serve` calls, on a model that needs no MLflow
        service = _service(tmp_path / f"env{len(built)}", _model(tmp_path / "model"))
        built.append(service)
        return create_app(service.settings, service=service)

    monkeypatch.setattr(app_module, "app_from_env", app_from_env)
    monkeypatch.setattr(lambda_handler, "_current", None)
    try:
        first = lambda_handler.handler(http_event("POST", "/predict", {"features": RECORD}), None)
        second = lambda_handler.handler(http_event("GET", "/ready"), None)
    finally:
        current = lambda_handler._current
        if current is not None:
            current.close()
    assert first["statusCode"] == 200 and second["statusCode"] == 200
    assert len(built) == 1


class _Context:
    """What Lambda passes as ``context``: here, only the time left."""

    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def test_a_backend_that_is_down_does_not_hold_the_answer_past_the_deadline(tmp_path: Path) -> None:
    # The write-ahead log retries a failed backend after flush_interval_s, doubling: keep it short.
    service = _service(tmp_path / "lambda", _model(tmp_path / "model"), flush_interval_s=0.1)
    lambda_app = LambdaApp(create_app(service.settings, service=service), ready_timeout_s=30)
    try:
        _check_a_backend_that_is_down(lambda_app)
    finally:
        lambda_app.close()


def _check_a_backend_that_is_down(lambda_app: LambdaApp) -> None:
    service = lambda_app.app.state.service
    backend = service.logger.backend
    backend.fail_next(10_000)  # every write fails until told otherwise
    response = lambda_app(http_event("POST", "/predict", {"features": RECORD}), _Context(1_500))
    assert response["statusCode"] == 200  # answered (the record is in the write-ahead file)
    (prediction,) = _body(response)["predictions"]
    assert prediction["id"] not in {r.prediction_id for r in backend.records}
    backend.fail_next(0)  # the backend is back: the next event's flush ships what waited
    lambda_app(http_event("GET", "/health"), _Context(30_000))
    assert prediction["id"] in {r.prediction_id for r in backend.records}
