"""The server's background monitor on a real model: /predict and /feedback traffic, gauges on /metrics."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from monitor_support import champion, feature_names, train_fraud

from mloop.config import Settings
from mloop.data import generate_fraud
from mloop.monitoring.history import WINDOW_EVENT
from mloop.server import create_app
from mloop.store import open_store

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    # interval_s: long enough that only the test's forced ticks run cycles.
    return train_fraud(tmp_path_factory.mktemp("monitor-server") / "project", monitoring={"interval_s": 3600})


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running (model load, background monitor), over ASGI."""
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as c,
    ):
        c.app = app
        deadline = time.monotonic() + 120
        while (await c.get("/ready")).status_code != 200:
            assert time.monotonic() < deadline, "the server did not become ready"
            await asyncio.sleep(0.1)
        yield c


def _gauges(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        m = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


async def _send(client: httpx.AsyncClient, settings: Settings, n: int, seed: int, scenario: str) -> None:
    data = generate_fraud(n, seed=seed, scenario=scenario)
    names = feature_names(champion(settings))
    ids: list[str] = []
    for start in range(0, n, 250):
        chunk = data.iloc[start : start + 250][names]
        r = await client.post("/predict", json={"features": chunk.to_dict("records")})
        assert r.status_code == 200, r.text
        ids += [p["id"] for p in r.json()["predictions"]]
    labels = [{"prediction_id": pid, "label": int(y)} for pid, y in zip(ids, data["is_fraud"], strict=True)]
    r = await client.post("/feedback", json={"feedback": labels})
    assert r.status_code == 200 and r.json()["stored"] == n


async def test_background_cycle_exports_the_contract_gauges(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    app: Any = client.app
    assert app.state.monitor._task is not None, "the lifespan starts the background loop"
    await _send(client, settings, 1000, seed=21, scenario="covariate_shift")
    assert app.state.service.logger.flush()
    result = await asyncio.to_thread(app.state.monitor.tick, force=True)
    assert result is not None and result.rows == 1000 and result.reports == {}
    text = (await client.get("/metrics")).text
    scores = _gauges(text, "mloop_drift_score")
    assert len(scores) == 9
    detected = _gauges(text, "mloop_drift_detected")
    assert detected['feature="amount",model="fraud-detector"'] == 1.0
    share = _gauges(text, "mloop_drift_share")['model="fraud-detector"']
    assert share == pytest.approx(result.drift.share_drifted) and share > 0
    quality = _gauges(text, "mloop_live_quality")
    assert quality['metric="roc_auc",model="fraud-detector",version="1"'] == pytest.approx(
        result.quality.metrics["roc_auc"]
    )
    assert _gauges(text, "mloop_labelled_rows")['model="fraud-detector",version="1"'] == 1000
    with open_store(settings.store_url) as store:
        event = store.events(kind=WINDOW_EVENT)[0]
    assert event.actor == "mloop-server" and event.data["rows"] == 1000


async def test_a_restarted_server_shows_the_last_window_without_recomputing(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    with open_store(settings.store_url) as store:
        before = len(store.events(kind=WINDOW_EVENT, limit=None))
    app: Any = client.app
    assert app.state.monitor.tick() is None  # the newest window is recent: refresh the gauges only
    assert _gauges((await client.get("/metrics")).text, "mloop_labelled_rows")
    with open_store(settings.store_url) as store:
        assert len(store.events(kind=WINDOW_EVENT, limit=None)) == before
