"""Serving a model from the real MLflow registry: load, MLflow client, swap under load, prediction log."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
import uvicorn

from mloop.config import Settings, load_settings
from mloop.server import create_app
from mloop.tracking import Registry
from testkit.processes import free_port, wait_http

TOKEN = "integration-token"


@pytest.fixture
def server(trained_project: Path) -> Iterator[tuple[str, Settings]]:
    """``mloop serve``'s app on a real port, in a thread (polls the alias every 0.2 s)."""
    settings = load_settings(
        trained_project / "mloop.yaml",
        overrides={
            "serving": {"admin_token": TOKEN, "poll_interval_s": 0.2},
            "prediction_log": {"flush_interval_s": 0.1},
        },
    )
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/ready", timeout=120, interval=0.2)
    yield url, settings
    srv.should_exit = True
    thread.join(timeout=30)


def _example(settings: Settings) -> pd.DataFrame:
    path = next((settings.home_dir / "artifacts").rglob("input_example.json"))
    data = pd.read_json(path, orient="split")
    return data.head(3)


def test_mlflow_client_gets_the_same_answer_as_the_model(server: tuple[str, Settings]) -> None:
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    url, settings = server
    frame = _example(settings)
    port = int(url.rsplit(":", 1)[1])
    response = ScoringServerClient("127.0.0.1", port).invoke(frame)
    got = response.get_predictions()
    expected = Registry(settings).load("@champion").model.predict_proba(frame)
    assert got.to_numpy() == pytest.approx(expected)


def test_swap_under_continuous_load(server: tuple[str, Settings]) -> None:
    url, settings = server
    registry = Registry(settings)
    v1 = registry.get("@champion")
    v2 = registry.client.create_model_version(v1.name, source=v1.source, run_id=v1.run_id)
    record = _example(settings).iloc[0].to_dict()
    results: list[tuple[int, str | None, str | None]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            while not stop.is_set():
                r = c.post("/predict", json={"features": record})
                body = r.json()
                pid = body["predictions"][0]["id"] if r.status_code == 200 else None
                results.append((r.status_code, body.get("version"), pid))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        registry.set_alias("champion", v2.version, reason="swap test")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(v == str(v2.version) for _, v, _ in results[-20:]):
            time.sleep(0.1)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
        registry.set_alias("champion", v1.version, reason="swap test done")
    assert results and all(status == 200 for status, _, _ in results)
    assert {v for _, v, _ in results} == {str(v1.version), str(v2.version)}
    # Every response named the version that produced it: the prediction log (written by the runtime
    # that computed each prediction) agrees with every response.
    from mloop.predlog import open_prediction_log

    time.sleep(0.5)
    logged = open_prediction_log(settings.prediction_log_url).read(model_name=v1.name)
    by_id = dict(zip(logged["prediction_id"], logged["model_version"], strict=True))
    assert all(by_id[pid] == v for _, v, pid in results if pid in by_id)
    assert sum(pid in by_id for _, _, pid in results) >= len(results) * 0.9
