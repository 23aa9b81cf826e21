"""The admin API answers every malformed body with 422 naming the field, never with a 500.

Attacks (with the admin key, or a client that has it by mistake): an unknown strategy, negative,
non-numeric, non-finite or all-zero weights, ids and versions beyond 64 bits, text with NUL, wrong
types. Before, several of them reached the controller or the store and came back as 500s.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

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
from mloop.server.admin import admin_routes
from mloop.server.rollout_routes import rollout_routes
from mloop.server.routes import prediction_routes
from mloop.serving.service import PredictionService
from mloop.serving.source import StaticSource
from mloop.store import open_store
from mloop.tracking import LoadedModel
from mloop.training.preprocess import build_pipeline

pytestmark = pytest.mark.anyio
TOKEN = "admin-key-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _loaded(tmp: Path, version: int) -> LoadedModel:
    rng = np.random.default_rng(version)
    df = pd.DataFrame(
        {"amount": rng.uniform(1, 500, 100), "hour": rng.integers(0, 24, 100), "country": ["DE", "FR"] * 50}
    )
    df["label"] = (df["amount"] > 250).astype(int)
    model = build_pipeline(["amount", "hour"], ["country"], LogisticRegression(max_iter=200))
    model.fit(df[["amount", "hour", "country"]], df["label"])
    return wrap_model(tmp / f"v{version}", model, df, name="toy", version=version)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    source = StaticSource("toy", {1: _loaded(tmp_path, 1), 2: _loaded(tmp_path, 2)}, {"champion": 1})
    log = MemoryPredictionLog()
    settings = Settings.model_validate(
        {"model": {"name": "toy"}, "serving": {"poll_interval_s": 0}, "rollout": {"auto_advance": False}}
    )
    store = open_store(f"sqlite:///{tmp_path / 'mloop.db'}")
    service = PredictionService(settings, source=source, logger=PredictionLogger(log, flush_interval_s=0.05))
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
    app.include_router(admin_routes(service, TOKEN))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as c,
    ):
        yield c
    store.close()


def _raw(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


MALFORMED: list[tuple[str, Any, str]] = [
    ("/admin/rollout/start", {"strategy": "yolo", "version": 2}, "strategy"),
    ("/admin/rollout/start", {"strategy": "canry", "version": 2}, "strategy"),
    ("/admin/rollout/start", {"strategy": "ab", "versions": [2], "weights": [-1, 2]}, "weights"),
    ("/admin/rollout/start", {"strategy": "ab", "versions": [2], "weights": ["a", "b"]}, "weights"),
    ("/admin/rollout/start", {"strategy": "ab", "versions": [2], "weights": [0, 0]}, "weights"),
    ("/admin/rollout/start", {"strategy": "ab", "versions": [2], "weights": [True, 1]}, "weights"),
    ("/admin/rollout/start", {"strategy": "ab", "versions": [2], "weights": []}, "weights"),
    ("/admin/rollout/start", {"strategy": "ab", "versions": [2], "weights": [[1], 2]}, "weights"),
    ("/admin/rollout/start", b'{"strategy": "ab", "versions": [2], "weights": [NaN, 1]}', "body"),
    ("/admin/rollout/start", b'{"strategy": "ab", "versions": [2], "weights": [Infinity, 1]}', "body"),
    ("/admin/rollout/start", b'{"strategy": "ab", "versions": [2], "weights": [1e999, 1]}', "body"),
    ("/admin/rollout/start", {"strategy": "canary", "version": 2**64 - 1}, "version"),
    ("/admin/rollout/start", {"strategy": "canary", "version": -3}, "version"),
    ("/admin/rollout/start", {"strategy": "canary", "version": "2\u0000"}, "version"),
    ("/admin/rollout/start", {"strategy": "canary", "version": "@no such alias"}, "version"),
    ("/admin/rollout/start", {"strategy": "ab", "versions": "2"}, "versions"),
    ("/admin/rollout/start", {"strategy": "ab", "versions": [{"v": 2}]}, "versions"),
    ("/admin/rollout/start", {"strategy": "canary", "version": 2, "reason": 5}, "reason"),
    ("/admin/rollout/start", {"strategy": "canary", "version": 2, "actor": "x\u0000"}, "actor"),
    ("/admin/rollout/start", {"strategy": "canary", "verison": 2}, "verison"),
    ("/admin/rollout/start", [1, 2], "body"),
    ("/admin/rollout/start", b'{"strategy": ', "body"),
    ("/admin/rollout/promote", {"id": 2**64 - 1}, "id"),
    ("/admin/rollout/promote", {"id": 2**64}, "id"),  # JSON parsers read it as a float
    ("/admin/rollout/promote", {"id": 0}, "id"),
    ("/admin/rollout/rollback", {"id": True}, "id"),
    ("/admin/rollout/rollback", {"id": "1"}, "id"),
    ("/admin/rollout/abort", {"id": -(2**63) - 1}, "id"),
    ("/admin/reload", {"version": 2**64 - 1}, "version"),
    ("/admin/reload", {"version": [1]}, "version"),
    ("/admin/reload", {"version": "1\u0000"}, "version"),
    ("/admin/reload", [1], "body"),
    ("/admin/reload", {"version": 1, "extra": 1}, "body"),
]


async def test_every_malformed_admin_body_is_a_422_naming_the_field(client: httpx.AsyncClient) -> None:
    wrong = []
    for path, body, field in MALFORMED:  # one server for all cases: starting one costs seconds
        r = await client.post(path, content=_raw(body), headers=AUTH)
        got = r.json()["errors"][0]["field"] if r.status_code == 422 else None
        if (r.status_code, got) != (422, field):
            wrong.append((path, body, r.status_code, r.text[:200]))
    assert not wrong, wrong
    assert len(MALFORMED) == 33


async def test_valid_bodies_still_work_and_weights_are_normalised(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/admin/rollout/start",
        content=_raw({"strategy": "ab", "versions": ["v2"], "weights": [1, 3.0]}),
        headers=AUTH,
    )
    assert r.status_code == 200, r.text
    assert {a["arm"]: a["weight"] for a in r.json()["arms"]} == {"champion": 0.25, "b": 0.75}
    rollout_id = r.json()["id"]
    r = await client.post("/admin/rollout/abort", content=_raw({"id": rollout_id}), headers=AUTH)
    assert r.status_code == 200, r.text
    r = await client.post("/admin/reload", content=_raw({"version": "@champion"}), headers=AUTH)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "weights", [[float("nan"), 1.0], [float("inf"), 1.0], [-1.0, 2.0], ["a", "b"], [0, 0]]
)
def test_the_rollout_plan_itself_refuses_weights_that_are_not_finite_and_non_negative(
    weights: list[Any],
) -> None:
    """The same rule below the HTTP layer (the CLI and the library call the plan directly)."""
    from mloop.config.settings import RolloutSettings
    from mloop.errors import ConfigError
    from mloop.rollout.plan import initial_arms

    with pytest.raises(ConfigError, match="finite, non-negative numbers"):
        initial_arms("ab", "1", ["2"], RolloutSettings(), weights)
