"""Feast features at training and serving time, against a real feature repo and Redis online store.

A feature repo in tmp_path (file offline store, Redis online store under a project name of its own,
so keys never meet another test's) is applied and materialized; a model is trained with the feature
service's features joined point-in-time; the service then answers requests that carry only the
entity key and the request-time columns. Feast runs in its own interpreter (``make .venv-feast``, or
``MLOOP_FEAST_PYTHON``): no Feast release installs beside mloop's pandas 3. Skipped when that
interpreter or Redis is missing; either missing fails under ``MLOOP_REQUIRE_SERVICES=1`` (CI, where
``make test`` builds ``.venv-feast``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from mloop.config import Settings, load_settings
from mloop.predlog import MemoryPredictionLog, PredictionLogger
from mloop.server import create_app
from mloop.serving import PredictionService

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
CUSTOMERS = 40
STATS_DAYS = (0, 10, 20)
EPOCH = pd.Timestamp("2026-01-01", tz="UTC")

FEATURES_PY = """
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource
from feast.types import Float64, Int64

customer = Entity(name="customer", join_keys=["customer_id"])
stats = FeatureView(
    name="customer_stats",
    entities=[customer],
    ttl=timedelta(days=3650),
    schema=[Field(name="txn_count_24h", dtype=Int64), Field(name="avg_amount_30d", dtype=Float64)],
    source=FileSource(path={path!r}, timestamp_field="event_timestamp"),
)
fraud_features = FeatureService(name="fraud_features", features=[stats])
"""

APPLY_AND_MATERIALIZE = """
import datetime as dt, sys
sys.path.insert(0, sys.argv[1])
import features as f
from feast import FeatureStore
store = FeatureStore(repo_path=sys.argv[1])
store.apply([f.customer, f.stats, f.fraud_features])
store.materialize(dt.datetime(2025, 12, 1, tzinfo=dt.UTC), dt.datetime(2026, 2, 1, tzinfo=dt.UTC))
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _feast_python() -> str:
    python = os.environ.get("MLOOP_FEAST_PYTHON") or str(ROOT / ".venv-feast" / "bin" / "python")
    if not Path(python).is_file():
        reason = (
            f"Feast's interpreter {python} does not exist: run `make .venv-feast` (Feast cannot be "
            "installed beside mloop's pandas 3) or set MLOOP_FEAST_PYTHON"
        )
        if os.environ.get("MLOOP_REQUIRE_SERVICES") == "1":  # CI builds it (make test)
            pytest.fail(f"{reason}; MLOOP_REQUIRE_SERVICES=1 requires it.")
        pytest.skip(reason)
    return python


def _stats() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    rows = [
        {
            "customer_id": c,
            "event_timestamp": EPOCH + pd.Timedelta(days=d),
            "txn_count_24h": int(rng.integers(0, 40)),
            "avg_amount_30d": float(rng.uniform(5, 500)),
        }
        for c in range(1, CUSTOMERS + 1)
        for d in STATS_DAYS
    ]
    return pd.DataFrame(rows).astype({"event_timestamp": "datetime64[ns, UTC]"})


def _transactions(stats: pd.DataFrame, n: int = 1500) -> pd.DataFrame:
    """Transactions labelled from the customer's stats *as of* the transaction (point in time)."""
    rng = np.random.default_rng(11)
    tx = pd.DataFrame(
        {
            "customer_id": rng.integers(1, CUSTOMERS + 1, n),
            "event_timestamp": EPOCH + pd.to_timedelta(rng.uniform(0.5, 40, n), unit="D"),
            "amount": rng.uniform(1, 600, n).round(2),
            "hour": rng.integers(0, 24, n),
        }
    ).sort_values("event_timestamp")
    tx["event_timestamp"] = tx["event_timestamp"].astype("datetime64[ns, UTC]")
    asof = pd.merge_asof(tx, stats.sort_values("event_timestamp"), on="event_timestamp", by="customer_id")
    risky = (asof["txn_count_24h"] > 25) & (asof["amount"] > asof["avg_amount_30d"])
    tx["is_fraud"] = (risky | (rng.uniform(size=n) < 0.03)).astype(int).to_numpy()
    return tx.reset_index(drop=True)


@pytest.fixture(scope="module")
def feast_project(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, request: pytest.FixtureRequest
) -> Iterator[tuple[Path, str]]:
    """A project with a materialized feature repo and a champion trained on its historical features
    (``redis_url`` skips without Redis, fails without it under MLOOP_REQUIRE_SERVICES=1)."""
    python = _feast_python()
    from mloop.training import train

    root = tmp_path_factory.mktemp("feast") / "project"
    repo = root / "feature_repo"
    (repo / "data").mkdir(parents=True)
    project = f"mloop_{uuid.uuid4().hex[:10]}"
    request.addfinalizer(lambda: _drop_keys(project))  # also when the set-up fails half-way
    stats = _stats()
    stats.to_parquet(repo / "data" / "customer_stats.parquet", index=False)
    (repo / "features.py").write_text(
        FEATURES_PY.format(path=str(repo / "data" / "customer_stats.parquet")), encoding="utf-8"
    )
    (repo / "feature_store.yaml").write_text(
        f"project: {project}\nprovider: local\nregistry: data/registry.db\n"
        "offline_store:\n  type: file\n"
        'online_store:\n  type: redis\n  connection_string: "127.0.0.1:6379,db=0"\n'
        "entity_key_serialization_version: 3\n",
        encoding="utf-8",
    )
    subprocess.run([python, "-c", APPLY_AND_MATERIALIZE, str(repo)], check=True, cwd=repo)
    (root / "data").mkdir()
    _transactions(stats).to_parquet(root / "data" / "transactions.parquet", index=False)
    (root / "mloop.yaml").write_text(
        f"""project: feast-test
source:
  uri: data/transactions.parquet
  event_timestamp_column: event_timestamp
model:
  name: feast-fraud
  task: classification
  target: is_fraud
  estimator: random_forest
  params: {{n_estimators: 20, max_depth: 6}}
  drop_columns: [customer_id, event_timestamp]
split:
  strategy: stratified
  test_size: 0.2
gates:
  thresholds: {{}}
serving:
  features: fraud_features
  feature_repo: feature_repo
  feast_python: {python}
  poll_interval_s: 0
  max_wait_ms: 10
""",
        encoding="utf-8",
    )
    train(load_settings(root / "mloop.yaml"))
    yield root, project


def _drop_keys(project: str) -> None:
    """Delete the online store's keys of ``project`` (Feast's Redis keys end with the project name)."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=0)
    keys = list(client.scan_iter(match=f"*{project}".encode(), count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
async def served(
    feast_project: tuple[Path, str],
) -> AsyncIterator[tuple[httpx.AsyncClient, PredictionService, MemoryPredictionLog]]:
    root, _ = feast_project
    settings = load_settings(root / "mloop.yaml")
    log = MemoryPredictionLog()
    service = PredictionService(settings, logger=PredictionLogger(log))
    app = create_app(settings, service=service)
    await service.start(wait=True)
    assert service.ready, service.last_error
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c, service, log
    await service.stop()


def _latest(root: Path) -> pd.DataFrame:
    """What the online store must hold: each customer's latest stats (written by materialize)."""
    stats = pd.read_parquet(root / "feature_repo" / "data" / "customer_stats.parquet")
    return stats.sort_values("event_timestamp").groupby("customer_id").last()


def test_training_joined_the_features_point_in_time(feast_project: tuple[Path, str]) -> None:
    from mloop.data.feast_source import join_served_features

    root, _ = feast_project
    settings: Settings = load_settings(root / "mloop.yaml")
    tx = pd.read_parquet(root / "data" / "transactions.parquet").head(50)
    joined = join_served_features(settings, tx)
    stats = pd.read_parquet(root / "feature_repo" / "data" / "customer_stats.parquet")
    tx = tx.astype({"event_timestamp": "datetime64[ns, UTC]"})
    stats = stats.astype({"event_timestamp": "datetime64[ns, UTC]"})
    expected = pd.merge_asof(
        tx.sort_values("event_timestamp"),
        stats.sort_values("event_timestamp"),
        on="event_timestamp",
        by="customer_id",
    ).set_index(["customer_id", "event_timestamp"])
    got = joined.set_index(["customer_id", "event_timestamp"])
    assert list(joined.columns[: len(tx.columns)]) == list(tx.columns)
    assert got["txn_count_24h"].tolist() == expected.loc[got.index, "txn_count_24h"].tolist()
    np.testing.assert_allclose(got["avg_amount_30d"], expected.loc[got.index, "avg_amount_30d"])


async def test_entity_keys_only_predict_as_the_joined_row(
    served: tuple[httpx.AsyncClient, PredictionService, MemoryPredictionLog],
    feast_project: tuple[Path, str],
) -> None:
    client, service, log = served
    requests = [{"customer_id": c, "amount": 10.0 * c, "hour": c % 24} for c in (1, 5, 17, 33)]
    r = await client.post("/predict", json={"features": requests})
    assert r.status_code == 200, r.text
    answered = r.json()["predictions"]

    latest = _latest(feast_project[0])
    runtime = service.champion()
    assert runtime is not None
    rows = [
        {
            **req,
            "txn_count_24h": int(latest.loc[req["customer_id"], "txn_count_24h"]),
            "avg_amount_30d": float(latest.loc[req["customer_id"], "avg_amount_30d"]),
        }
        for req in requests
    ]
    names = [c.name for c in runtime.contract.columns if c.name != runtime.contract.target]
    frame = pd.DataFrame(rows)[names].astype({"hour": "int64", "txn_count_24h": "int64"})
    predictions, proba = runtime.predict_frame(frame)
    assert [a["prediction"] for a in answered] == predictions
    assert proba is not None
    for a, p in zip(answered, proba, strict=True):
        np.testing.assert_allclose(list(a["probabilities"].values()), p)

    # The prediction log holds the joined row: drift sees the served features.
    assert service.logger is not None
    service.logger.flush()
    logged = {r.features["amount"]: r.features for r in log.records}
    for row in rows:
        features = logged[row["amount"]]
        assert features["txn_count_24h"] == row["txn_count_24h"]
        assert features["avg_amount_30d"] == pytest.approx(row["avg_amount_30d"])
        assert features["customer_id"] == row["customer_id"]  # the entity key rides along


async def test_concurrent_requests_share_one_lookup_per_micro_batch(
    served: tuple[httpx.AsyncClient, PredictionService, MemoryPredictionLog],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, service, _ = served
    joiner = service.features
    assert joiner is not None
    calls = 0
    online = joiner.client.online

    def counting(service_name: str, entities: dict[str, list[Any]]) -> Any:
        nonlocal calls
        calls += 1
        return online(service_name, entities)

    monkeypatch.setattr(joiner.client, "online", counting)
    n = 40
    bodies = [{"features": {"customer_id": 1 + i % CUSTOMERS, "amount": 5.0, "hour": 3}} for i in range(n)]
    answers = await asyncio.gather(*(client.post("/predict", json=b) for b in bodies))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
    print(f"{n} concurrent requests, {calls} online lookups")
    assert 0 < calls < n
    status = (await client.get("/ready")).json()["features"]
    assert status["service"] == "fraud_features" and status["entity_keys"] == ["customer_id"]
    assert status["lookups"] >= calls


async def test_an_unknown_entity_is_a_422_naming_it(
    served: tuple[httpx.AsyncClient, PredictionService, MemoryPredictionLog],
) -> None:
    client, _, _ = served
    r = await client.post("/predict", json={"features": {"customer_id": 99999, "amount": 5.0, "hour": 3}})
    assert r.status_code == 422, r.text
    assert "customer_id=99999" in r.text
    assert "unknown_entity" in r.text
    # A request without the entity key is refused before any lookup.
    r = await client.post("/predict", json={"features": {"amount": 5.0, "hour": 3}})
    assert r.status_code == 422, r.text
    assert "customer_id" in r.text
