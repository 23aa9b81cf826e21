"""Client errors never count against a rollout arm: malformed requests cannot roll back a healthy canary.

Attack (no key needed to predict): 5 % of the traffic is malformed — an integer beyond 64 bits, text
with NUL, wrong types, missing fields, ragged rows, invalid JSON. Before, the integer failed its
micro-batch with a 500 that counted as the canary's error, and the canary was rolled back. Now every
malformed request is its client's 4xx, the arms' error counts hold only their own failures (5xx),
and the healthy canary walks its steps and is promoted.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI
from keyed_app import AliasRegistry, wrap_model
from sklearn.linear_model import LogisticRegression

from mloop.config import Settings
from mloop.predlog import MemoryPredictionLog, PredictionLogger
from mloop.rollout import RolloutController
from mloop.server.rollout_routes import rollout_routes
from mloop.server.routes import prediction_routes
from mloop.serving.service import PredictionService
from mloop.serving.source import StaticSource
from mloop.store import Store, open_store
from mloop.tracking import LoadedModel
from mloop.training.preprocess import build_pipeline

pytestmark = pytest.mark.anyio
TOKEN = "admin-key-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GOOD = {"amount": 300.0, "hour": 3, "country": "DE"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _loaded(tmp: Path, version: int) -> LoadedModel:
    # Both versions are the same healthy model: only client errors could tell them apart.
    rng = np.random.default_rng(0)
    amount = rng.uniform(1.0, 500.0, 200).round(2)
    df = pd.DataFrame(
        {
            "amount": amount,
            "hour": rng.integers(0, 24, 200),
            "country": rng.choice(["DE", "FR"], 200),
            "label": (amount > 250).astype(int),
        }
    )
    model = build_pipeline(["amount", "hour"], ["country"], LogisticRegression(max_iter=300))
    model.fit(df[["amount", "hour", "country"]], df["label"])
    return wrap_model(tmp / f"v{version}", model, df, name="toy", version=version)


# Half the malformed requests are the integer that used to fail the batch with a 500; the rest are
# other client errors, which must stay out of the counts too.
_MALFORMED: list[bytes] = [
    json.dumps({"features": {**GOOD, "hour": 2**64 - 1}}).encode(),
    json.dumps({"features": {**GOOD, "country": "DE\u0000"}}).encode(),
    json.dumps({"features": {**GOOD, "hour": 2**64 - 1}}).encode(),
    json.dumps({"features": {**GOOD, "amount": "lots"}}).encode(),
    json.dumps({"features": {**GOOD, "hour": 2**64 - 1}}).encode(),
    json.dumps({"features": {"amount": 1.0}}).encode(),
    json.dumps({"features": {**GOOD, "hour": 2**64 - 1}}).encode(),
    json.dumps({"features": [[1.0, 2], [3.0]]}).encode(),
    json.dumps({"features": {**GOOD, "hour": 2**64 - 1}}).encode(),
    b'{"features": {"amount": ',
]


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, RolloutController]]:
    source = StaticSource("toy", {1: _loaded(tmp_path, 1), 2: _loaded(tmp_path, 2)}, {"champion": 1})
    log = MemoryPredictionLog()
    rollout = {
        "refresh_s": 0.05,
        "steps": [50, 100],
        "min_requests_per_step": 60,
        "min_labelled": 10**6,
        # No labels in this test: the canary is promoted as unverified at once instead of waiting.
        "label_wait_s": 0,
        "unlabelled_policy": "promote_unverified",
        "max_latency_ratio": 100.0,  # this test is about errors; p99 of tiny samples is noise
        "max_prediction_drift": 1.0,
    }
    settings = Settings.model_validate(
        {"model": {"name": "toy"}, "serving": {"poll_interval_s": 0}, "rollout": rollout}
    )
    store: Store = open_store(f"sqlite:///{tmp_path / 'mloop.db'}")
    service = PredictionService(settings, source=source, logger=PredictionLogger(log, flush_interval_s=0.02))
    ctl = RolloutController(
        settings, store=store, registry=AliasRegistry(source), predlog=log, model_name="toy"
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start(wait=True)
        yield
        await service.stop()

    app = FastAPI(lifespan=lifespan)
    app.include_router(prediction_routes(service, None))
    app.include_router(rollout_routes(service, TOKEN, controller=ctl))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c, ctl
    store.close()


async def test_five_percent_malformed_requests_do_not_roll_back_a_healthy_canary(
    client: tuple[httpx.AsyncClient, RolloutController],
) -> None:
    c, ctl = client
    started = await c.post("/admin/rollout/start", json={"strategy": "canary", "version": 2}, headers=AUTH)
    assert started.status_code == 200, started.text
    statuses: dict[str, list[int]] = {"valid": [], "malformed": []}
    deadline = time.monotonic() + 120
    i = 0
    ended = ("promoted", "promoted_unverified", "rolled_back")
    while ctl.get().state not in ended and time.monotonic() < deadline:
        if i % 20 == 19:  # 5 % of the traffic
            body = _MALFORMED[(i // 20) % len(_MALFORMED)]
            r = await c.post("/predict", content=body, headers={"content-type": "application/json"})
            statuses["malformed"].append(r.status_code)
        else:
            r = await c.post("/predict", json={"features": {**GOOD, "amount": float(i % 500)}})
            statuses["valid"].append(r.status_code)
        i += 1
    rollout = ctl.get()
    assert rollout.state == "promoted_unverified", ctl.store.events(kind="rollout.rolled_back")
    assert set(statuses["valid"]) == {200}
    assert statuses["malformed"] and all(400 <= s < 500 for s in statuses["malformed"])
    counts = ctl.repo.counters(rollout.id)
    assert all(errors == 0 for _, errors in counts.values()), counts
