"""Console page times on a big project: 100 model versions in MLflow and 100k events in the store.

Builds the project once under a temporary directory (MLflow on SQLite, the SQLite store), then times
each page through the console's ASGI app in-process (httpx's ASGI transport: no network), the median
of ``--repeat`` requests after one warm-up. Run:

    .venv/bin/python benchmarks/console/bench_pages.py [--events 100000] [--versions 100]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa
from fastapi import FastAPI

from mloop.config import Settings
from mloop.store import Store


def build(root: Path, versions: int, events: int) -> tuple[Settings, Store]:
    import mlflow
    from mlflow import MlflowClient

    from mloop.store import open_store
    from mloop.store.schema import events as events_t

    settings = Settings.model_validate({"model": {"name": "bench"}}).model_copy(update={"root": root})
    uri = settings.tracking_uri
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("bench")
    exp = mlflow.set_experiment("bench")
    t0 = time.perf_counter()
    for v in range(versions):
        run = client.create_run(exp.experiment_id)
        client.log_metric(run.info.run_id, "roc_auc", 0.8 + v / 1000)
        client.create_model_version(
            "bench", f"runs:/{run.info.run_id}/model", run.info.run_id, tags={"mloop.gate": "passed"}
        )
    client.set_registered_model_alias("bench", "champion", str(versions))
    print(f"registered {versions} versions in {time.perf_counter() - t0:.1f} s")
    store = open_store(settings.store_url)
    kinds = ["gate.passed", "alias.moved", "rollout.step", "loop.training", "monitor.window", "alert"]
    start = datetime.now(UTC) - timedelta(days=30)
    t0 = time.perf_counter()
    rows = [
        {
            "ts": start + timedelta(seconds=i * 25),
            "kind": kinds[i % len(kinds)],
            "subject": f"model:bench/v{i % versions + 1}" if i % 3 else f"rollout:{i % 50 + 1}",
            "actor": "bench",
            "reason": f"event {i}: something the loop decided and why",
            "data": {"i": i},
        }
        for i in range(events)
    ]
    with store.write() as conn:
        for i in range(0, len(rows), 5000):
            conn.execute(sa.insert(events_t), rows[i : i + 5000])
    print(f"inserted {events} events in {time.perf_counter() - t0:.1f} s")
    return settings, store


async def timed(app: FastAPI, paths: list[str], repeat: int) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as c:
        for path in paths:
            r = await c.get(path)
            assert r.status_code == 200, (path, r.status_code, r.text[:300])
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                r = await c.get(path)
                times.append(time.perf_counter() - t0)
                assert r.status_code == 200
            median, worst = statistics.median(times) * 1000, max(times) * 1000
            print(f"{path:60s} median {median:7.1f} ms  max {worst:7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--versions", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from mloop.server.console import create_console

    with tempfile.TemporaryDirectory() as tmp:
        settings, store = build(Path(tmp), args.versions, args.events)
        app = create_console(settings, store=store)
        paths = [
            "/",
            "/api/overview",
            "/timeline",
            "/timeline?before=50000",
            "/timeline?kind=rollout",
            "/timeline?model=bench",
            "/timeline?kind=gate&model=bench&since=2026-01-01T00:00",
            "/models",
            "/monitoring",
        ]
        asyncio.run(timed(app, paths, args.repeat))
        store.close()


if __name__ == "__main__":
    main()
