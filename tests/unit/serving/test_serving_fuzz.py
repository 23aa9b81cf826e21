"""Fuzz the API from its own OpenAPI spec (schemathesis): no input may produce a 5xx."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from mloop.config.settings import ServingSettings, Settings
from mloop.predlog import MemoryPredictionLog, PredictionLogger
from mloop.server import create_app
from mloop.serving import PredictionService, StaticSource
from mloop.store import open_store
from testkit.toy_model import make_loaded

schemathesis = pytest.importorskip("schemathesis")


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    settings = Settings(
        root=tmp, serving=ServingSettings(admin_token="t", poll_interval_s=0, max_request_rows=20)
    )
    source = StaticSource("toy", {1: make_loaded(tmp, 1)}, {"champion": 1})
    service = PredictionService(
        settings,
        source=source,
        logger=PredictionLogger(MemoryPredictionLog()),
        store=open_store(f"sqlite:///{tmp / 'store.db'}"),
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, service=service), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(f"{url}/ready").status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    yield url
    server.should_exit = True
    thread.join(timeout=10)


def test_no_generated_request_gets_a_5xx(base_url: str) -> None:
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    failures: list[str] = []
    count = 0
    for operation in schema.get_all_operations():
        op = operation.ok()
        strategy = op.as_strategy()

        @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def check(case: object) -> None:
            nonlocal count
            count += 1
            response = case.call(base_url=base_url)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}"
                )

        check()
    assert count > 50
    assert not failures, "\n".join(failures[:10])
