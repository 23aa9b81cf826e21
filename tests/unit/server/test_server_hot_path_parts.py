"""The pieces the hot prediction path uses instead of Starlette's general ones answer as those do."""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.requests import Request

from mloop.errors import Overloaded
from mloop.server.app import ServingApp
from mloop.server.http import (
    ClientDisconnected,
    PreparedJSON,
    RequestHead,
    json_bytes,
    json_response,
    read_body,
)
from mloop.serving.admission import Admission
from mloop.serving.metrics import ServingMetrics

pytestmark = pytest.mark.anyio

RAW = [
    (b"host", b"t"),
    (b"content-type", b"application/json"),
    (b"content-length", b"12"),
    (b"x-customer", b"a"),
    (b"x-customer", b"b"),
    (b"content-length", b"99"),
]


def _request(messages: list[dict[str, Any]], headers: Iterable[tuple[bytes, bytes]] = RAW) -> Request:
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    scope = {"type": "http", "method": "POST", "path": "/invocations", "headers": headers}
    return Request(scope, receive)


def test_request_head_reads_as_starlette_headers_do() -> None:
    head = RequestHead(RAW)
    starlette = _request([]).headers
    assert head.content_length == starlette["content-length"].encode()  # the first value wins
    assert head.content_type == starlette["content-type"]
    for name in ("X-Customer", "x-customer", "absent"):
        assert head.get(name) == starlette.get(name)
    assert RequestHead([]).content_length is None and RequestHead([]).content_type is None
    once = _request([], headers=iter(RAW))
    assert RequestHead.of(once).content_type == "application/json"
    assert once.headers["x-customer"] == "a"  # the headers are still there for Starlette


async def test_read_body_joins_messages_and_keeps_the_body_for_body() -> None:
    messages = [
        {"type": "http.request", "body": b'{"a": ', "more_body": True},
        {"type": "http.request", "body": b"[1, 2]}", "more_body": False},
    ]
    request = _request(messages)
    assert await read_body(request, 100, head=RequestHead(RAW)) == b'{"a": [1, 2]}'
    assert await request.body() == b'{"a": [1, 2]}'  # read again from the request, no message left


async def test_read_body_turns_a_disconnect_into_client_disconnected() -> None:
    request = _request(
        [{"type": "http.request", "body": b"{", "more_body": True}, {"type": "http.disconnect"}]
    )
    with pytest.raises(ClientDisconnected):
        await read_body(request, 100, head=RequestHead(RAW))


def test_prepared_json_is_json_response_with_the_same_headers() -> None:
    body = {"predictions": [[0.25, 0.75]], "n": 1}
    slow = json_response(body, headers={"X-Mloop-Version": "3", "X-Mloop-Arm": "canary"})
    fast = PreparedJSON(json_bytes(body), [(b"x-mloop-version", b"3"), (b"x-mloop-arm", b"canary")])
    assert (fast.status_code, fast.body, fast.raw_headers) == (slow.status_code, slow.body, slow.raw_headers)
    assert fast.media_type == slow.media_type and fast.background is None


class _Telemetry:
    def __init__(self) -> None:
        self.on = False
        self.asked = 0

    def enabled(self) -> bool:
        self.asked += 1
        return self.on


def test_the_telemetry_check_of_the_direct_path_is_asked_once_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = ServingApp()
    telemetry = _Telemetry()
    monkeypatch.setattr(app, "_native_telemetry", telemetry)
    now = [100.0]
    monkeypatch.setattr("mloop.server.app.time", SimpleNamespace(monotonic=lambda: now[0]))
    scope = {"type": "http", "method": "POST", "path": "/invocations"}
    assert all(app._direct(scope) for _ in range(50))
    assert telemetry.asked == 1
    telemetry.on = True  # a provider is configured while serving
    now[0] += 0.5
    assert app._direct(scope)  # not yet asked again
    now[0] += 0.6
    assert not app._direct(scope)  # traced through FastAPI from the next check on
    assert telemetry.asked == 2
    assert isinstance(app, FastAPI)


def test_admit_decides_as_refusal_does() -> None:
    admission = Admission(max_queue=3, min_queue=1)
    first = admission.admit("predict", b"100")  # nothing in flight: admitted, however large
    assert admission.refusal("predict", b"200") is None
    second = admission.admit("predict", b"200")  # 1 + 2 rows <= 3
    assert admission.pending == 3
    assert admission.refusal("predict", "50") is not None
    with pytest.raises(Overloaded, match="at capacity"):
        admission.admit("predict", "50")
    assert admission.refused == 1
    admission.release(first, 1)
    admission.release(second, 2)
    assert admission.pending == 0


def test_request_metrics_count_each_status_and_version() -> None:
    metrics = ServingMetrics()
    for version, status in [("1", 200), ("1", 200), ("2", 200), ("1", 503), ("1", 422)]:
        metrics.observe_request("m", version, "invocations", status, 0.002)
    labels = {"model": "m", "endpoint": "invocations"}
    assert metrics.sample("mloop_requests_total", {**labels, "version": "1", "status": "200"}) == 2
    assert metrics.sample("mloop_requests_total", {**labels, "version": "2", "status": "200"}) == 1
    assert metrics.sample("mloop_requests_total", {**labels, "version": "1", "status": "503"}) == 1
    assert metrics.sample("mloop_request_latency_seconds_count", {**labels, "status": "2xx"}) == 3
    assert metrics.sample("mloop_request_latency_seconds_count", {**labels, "status": "4xx"}) == 1
