"""The loop-only process's HTTP face (`mloop run --no-serve`): probes say leader or standby."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from mloop.config import Settings
from mloop.control import Controller
from mloop.server.loop_app import create_loop_app
from mloop.store import Store, open_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(f"sqlite:///{tmp_path / 'mloop.db'}") as s:
        yield s


class Http:
    """GETs against the app in process (Starlette's TestClient wants another httpx)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def get(self, path: str) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://loop") as client:
                return await client.get(path)

        return asyncio.run(go())


def _app(tmp_path: Path, store: Store, owner: str, running: list[bool]) -> tuple[Controller, Http]:
    settings = Settings.model_validate({"model": {"name": "fraud"}}).model_copy(update={"root": tmp_path})
    registry = CollectorRegistry()
    ctrl = Controller(settings, store=store, registry=object(), rollouts=object(), metrics_registry=registry)
    ctrl.election.owner = ctrl.owner = owner
    return ctrl, Http(create_loop_app(ctrl, running=lambda: running[0], metrics_registry=registry))


def test_probes_report_leader_and_standby(tmp_path: Path, store: Store) -> None:
    running = [True]
    leader, leader_http = _app(tmp_path, store, "a:loop", running)
    standby, standby_http = _app(tmp_path, store, "b:loop", running)
    assert leader_http.get("/ready").status_code == 503  # not in the election yet
    assert leader.election.step() and not standby.election.step()
    ready = leader_http.get("/ready")
    assert ready.status_code == 200 and ready.json()["loop"]["role"] == "leader"
    health = standby_http.get("/health")
    assert health.status_code == 200
    assert health.json()["loop"]["role"] == "standby" and health.json()["loop"]["holder"]["owner"] == "a:loop"
    running[0] = False  # the loop thread died
    assert leader_http.get("/health").status_code == 503
    assert leader_http.get("/ready").status_code == 503
    assert leader_http.get("/metrics").status_code == 200


def test_health_of_mloop_run_reports_the_loop_role_like_ready(tmp_path: Path, store: Store) -> None:
    from mloop.server import create_app
    from mloop.server.loop_app import attach_loop
    from mloop.serving import PredictionService, StaticSource

    ctrl, _ = _app(tmp_path, store, "a:loop", [True])
    settings = ctrl.settings
    service = PredictionService(settings, source=StaticSource("fraud", {}, {}), store=store)
    http = Http(create_app(settings, service=service))  # not started: no model, /health answers anyway
    attach_loop(service, ctrl)
    assert http.get("/health").json()["loop"]["role"] == "starting"
    assert ctrl.election.step()
    health = http.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.json()["loop"] == {"role": "leader", "owner": "a:loop", "fence": 1}
    assert http.get("/ready").json()["loop"]["role"] == health.json()["loop"]["role"]
