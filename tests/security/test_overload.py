"""Overload and slow clients, against a real uvicorn server running mloop's app and HTTP protocol.

Attacks: a 200 MB header line (it was accepted and grew the server by 400 MB); a client that trickles
its headers or its body (its connection was never closed); requests sent while the server is at
capacity (they were parsed, validated and only then refused, so an overloaded server spent its CPU on
requests it refused); a client that goes away mid-body (two tracebacks in the log).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import uvicorn
from keyed_app import SMALL_DATA, wrap_model

from mloop.config.settings import MonitoringSettings, ServingSettings, Settings
from mloop.predlog import MemoryPredictionLog, PredictionLogger
from mloop.server import create_app
from mloop.server.protocol import LimitedHttpProtocol
from mloop.serving import PredictionService, StaticSource

_JSON = {"content-type": "application/json"}
RECORD = b'{"features": {"amount": 12.5, "hour": 3, "country": "DE"}}'
WAIT = 20.0
"""Generous bound for anything the server must do "soon" (the machine may be loaded)."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Gated:
    """A small classifier whose calls wait while ``gate`` is clear: keeps a request in flight."""

    classes_ = np.array([0, 1])

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        self.gate.wait(WAIT)
        high = (frame["amount"].to_numpy(dtype="float64") > 250).astype("float64")
        return np.column_stack([1.0 - high, high])


class Server:
    """``mloop serve``'s app on uvicorn with mloop's HTTP protocol, in a thread of the test process."""

    def __init__(self, tmp: Path, **serving: Any) -> None:
        self.model = Gated()
        settings = Settings(
            root=tmp,
            serving=ServingSettings(poll_interval_s=0, **serving),
            monitoring=MonitoringSettings(interval_s=0),
        )
        source = StaticSource(
            "gated", {1: wrap_model(tmp / "v1", self.model, SMALL_DATA, name="gated")}, {"champion": 1}
        )
        logger = PredictionLogger(MemoryPredictionLog(), flush_interval_s=0.05)
        self.service = PredictionService(settings, source=source, logger=logger)
        app = create_app(settings, service=self.service)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            http=LimitedHttpProtocol,
            log_level="info",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + WAIT
        while not (self.server.started and self.service.ready):
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.model.gate.set()
        self.server.should_exit = True
        self.thread.join(WAIT)

    def connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=WAIT)
        return s


def _read_all(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or resets it)."""
    out = b""
    while True:
        try:
            data = s.recv(65536)
        except ConnectionResetError:
            return out
        if not data:
            return out
        out += data


def _head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def _peak_rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    serving = getattr(request, "param", {})
    with Server(tmp_path, **serving) as s:
        yield s


def test_a_200_mb_header_line_is_refused_early_without_growing_the_server(server: Server) -> None:
    peak_before = _peak_rss_mb()
    s = server.connect()
    s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Padding: ")
    chunk = b"a" * 65536
    sent = 0
    try:
        while sent < 200 * 1024 * 1024:
            s.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server closed the connection: what it had not read is refused
    answer = _read_all(s)
    s.close()
    assert sent < 50 * 1024 * 1024, f"the server read {sent} bytes of one header line"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 ")
    assert _peak_rss_mb() - peak_before < 100
    # The server goes on answering.
    with server.connect() as ok:
        ok.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert _read_all(ok).startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("server", [{"header_timeout_s": 1.0}], indirect=True)
def test_a_client_trickling_its_headers_is_disconnected_after_the_timeout(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    s = server.connect()
    s.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\n")  # and nothing more
    answer = _read_all(s)  # returns once the server closes (WAIT bounds it)
    s.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"serving.header_timeout_s" in answer
    # A connection that never sends a byte is closed the same way.
    with server.connect() as idle:
        assert _read_all(idle).startswith(b"HTTP/1.1 408 ")


@pytest.mark.parametrize("server", [{"body_timeout_s": 1.0}], indirect=True)
def test_a_client_trickling_its_body_is_disconnected_after_the_timeout(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    s = server.connect()
    s.sendall(_head("/predict", len(RECORD)) + RECORD[:10])  # the rest never comes
    assert _read_all(s) == b""
    s.close()
    _wait_for(lambda: any("did not arrive within" in r.getMessage() for r in caplog.records))
    assert not [r for r in caplog.records if r.exc_info]


@pytest.mark.parametrize("server", [{"max_queue": 1}], indirect=True)
def test_requests_beyond_capacity_are_refused_503_before_their_body_is_read(server: Server) -> None:
    server.model.gate.clear()  # the first request stays in the model
    first = server.connect()
    first.sendall(_head("/predict", len(RECORD)) + RECORD)
    runtime = server.service.champion()
    assert runtime is not None
    _wait_for(lambda: runtime.inflight == 1)
    # The body is not JSON: a server that parsed it before refusing would answer 422.
    second = server.connect()
    second.sendall(_head("/predict", 50_000) + b"x" * 50_000)
    answer = _read_all_response(second)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ")
    assert b"\r\nretry-after: " in head.lower()
    assert b"refused before its body was read" in body
    # A client that waits for "100 Continue" before sending its body hears the refusal at once.
    third = server.connect()
    third.sendall(_head("/predict", 50_000).replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n"))
    assert _read_all(third).startswith(b"HTTP/1.1 503 ")
    third.close()
    server.model.gate.set()
    assert _read_all_response(first).startswith(b"HTTP/1.1 200 ")
    first.close()
    second.sendall(_head("/predict", len(RECORD)) + RECORD)
    assert _read_all_response(second).startswith(b"HTTP/1.1 200 ")
    second.close()
    assert b'status="503"' in _metrics(server)
    # With nothing in flight any request is admitted, however large.
    with server.connect() as big:
        records = b",".join([b'{"amount": 12.5, "hour": 3, "country": "DE"}'] * 200)
        payload = b'{"features": [' + records + b"]}"
        big.sendall(_head("/predict", len(payload)) + payload)
        assert _read_all_response(big).startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize(
    "server",
    [{"max_queue": 1, "refusal_hold_ms": 1500}, {"max_queue": 1, "refusal_hold_ms": 0}],
    indirect=True,
)
def test_a_refusal_is_held_so_a_client_retrying_at_once_cannot_spin(server: Server) -> None:
    """A closed-loop client re-sends the moment it is refused: the 503 waits for the estimated drain
    time, at most ``serving.refusal_hold_ms`` (0: at once); a request pipelined behind it waits too."""
    hold_s = server.service.settings.serving.refusal_hold_ms / 1000
    server.model.gate.clear()  # the first request stays in the model
    first = server.connect()
    first.sendall(_head("/predict", len(RECORD)) + RECORD)
    runtime = server.service.champion()
    assert runtime is not None
    _wait_for(lambda: runtime.inflight == 1)
    # A slow model: the admitted work would take far longer to drain than the setting allows.
    server.server.config.app.shed.admission.rows_per_s = 0.001
    second = server.connect()
    started = time.monotonic()
    pipelined = b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    second.sendall(_head("/predict", 50_000) + b"x" * 50_000 + pipelined)
    if hold_s:
        second.settimeout(hold_s / 3)
        with pytest.raises(TimeoutError):
            second.recv(1)  # held: nothing yet
    second.settimeout(WAIT)
    answer = _read_all(second)  # the refusal, then the pipelined answer and the close
    elapsed = time.monotonic() - started
    second.close()
    refusal, _, rest = answer.partition(b"\r\n\r\n")
    assert refusal.startswith(b"HTTP/1.1 503 ")
    assert b"connection: close" not in refusal.lower()  # kept alive: the next request was answered
    assert rest.count(b"HTTP/1.1 200 ") == 1
    assert hold_s * 0.9 <= elapsed < WAIT
    server.model.gate.set()
    assert _read_all_response(first).startswith(b"HTTP/1.1 200 ")
    first.close()


@pytest.mark.anyio
async def test_the_app_admits_by_estimated_work_without_reading_refused_bodies(tmp_path: Path) -> None:
    """Behind another server (no mloop protocol), the app itself refuses from the head: 503, body unread."""
    server = Server(tmp_path, max_queue=1)
    app = server.server.config.app
    await server.service.start(wait=True)
    server.model.gate.clear()
    read: list[int] = []

    async def receive() -> dict[str, Any]:
        read.append(1)
        return {"type": "http.request", "body": RECORD, "more_body": False}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=WAIT) as client:
        first = asyncio.create_task(client.post("/predict", content=RECORD, headers=_JSON))
        runtime = server.service.champion()
        assert runtime is not None
        while runtime.inflight < 1:
            await asyncio.sleep(0.01)
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/predict",
            "raw_path": b"/predict",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"50000")],
            "http_version": "1.1",
            "scheme": "http",
            "server": ("t", 80),
            "client": ("c", 1),
        }
        await app(scope, receive, send)
        assert sent[0]["status"] == 503
        assert (b"retry-after", b"1") in [(k.lower(), v) for k, v in sent[0]["headers"]]
        assert read == []  # the body was never asked for
        server.model.gate.set()
        assert (await first).status_code == 200
    await server.service.stop()


def test_a_client_gone_mid_body_is_one_log_line(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    s = server.connect()
    s.sendall(_head("/predict", 100_000) + b'{"features": [' + b"1," * 1000)
    time.sleep(0.2)
    s.close()
    _wait_for(lambda: any("before sending the whole body" in r.getMessage() for r in caplog.records))
    time.sleep(0.5)  # anything else the server would log about it
    gone = [r for r in caplog.records if "before sending the whole body" in r.getMessage()]
    assert len(gone) == 1
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    # The server goes on answering.
    with server.connect() as ok:
        ok.sendall(_head("/predict", len(RECORD)) + RECORD)
        assert _read_all_response(ok).startswith(b"HTTP/1.1 200 ")


def _read_all_response(s: socket.socket) -> bytes:
    """One response on a kept-alive connection: read until the head and its announced body are in."""
    s.settimeout(WAIT)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def _metrics(server: Server) -> bytes:
    with server.connect() as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        return _read_all(s)


def _wait_for(condition: Any) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
