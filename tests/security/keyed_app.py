"""A served toy model (classifier or regressor) over an in-memory source, for the key and feedback attacks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression, LogisticRegression

from mloop.config.settings import ServingSettings, Settings
from mloop.data import infer_contract
from mloop.predlog import MemoryPredictionLog, PredictionLogBackend, PredictionLogger
from mloop.server import create_app
from mloop.serving import PredictionService, StaticSource
from mloop.store import Store, open_store
from mloop.tracking import LoadedModel, VersionInfo
from mloop.training.preprocess import build_pipeline

RECORD = {"amount": 300.0, "hour": 3, "country": "DE"}


def toy_model(tmp: Path, task: str = "classification") -> LoadedModel:
    """A fitted pipeline on amount/hour/country: a 0/1 classifier or a regressor of the amount."""
    rng = np.random.default_rng(0)
    amount = rng.uniform(1.0, 500.0, 200).round(2)
    df = pd.DataFrame(
        {"amount": amount, "hour": rng.integers(0, 24, 200), "country": rng.choice(["DE", "FR", "US"], 200)}
    )
    df["label"] = (amount > 250).astype(int) if task == "classification" else amount * 2.0
    estimator = LogisticRegression(max_iter=500) if task == "classification" else LinearRegression()
    model = build_pipeline(["amount", "hour"], ["country"], estimator)
    model.fit(df[["amount", "hour", "country"]], df["label"])
    return wrap_model(tmp / f"model-{task}", model, df, name="toy", task=task)


def wrap_model(
    path: Path, model: Any, data: pd.DataFrame, *, name: str, task: str = "classification", version: int = 1
) -> LoadedModel:
    """``version`` of ``name``: ``model`` with the contract inferred from ``data`` (target ``label``)."""
    contract = infer_contract(data, target="label", task=task)
    path.mkdir(parents=True, exist_ok=True)
    info = VersionInfo(
        name=name,
        version=version,
        run_id=None,
        aliases=(),
        tags={},
        metrics={},
        created_at=0,
        status="READY",
        source=str(path),
    )
    evaluation = {"features": {"numeric": ["amount", "hour"], "categorical": ["country"]}}
    return LoadedModel(
        info=info, model=model, contract=contract.to_dict(), profile=None, evaluation=evaluation, path=path
    )


SMALL_DATA = pd.DataFrame(
    {
        "amount": [1.0, 120.0, 260.0, 500.0],
        "hour": [0, 5, 12, 23],
        "country": ["DE", "FR", "US", "DE"],
        "label": [0, 0, 1, 1],
    }
)
"""Four rows that infer the amount/hour/country contract, for models that need no fitting."""


class Served:
    """The app's client plus what the tests inspect: the service, its prediction log and store."""

    def __init__(self, client: httpx.AsyncClient, service: PredictionService, store: Store) -> None:
        self.client, self.service, self.store = client, service, store

    async def predict(self, n: int = 1, headers: dict[str, str] | None = None) -> list[str]:
        """Ids of ``n`` fresh predictions."""
        r = await self.client.post("/predict", json={"features": [RECORD] * n}, headers=headers or {})
        assert r.status_code == 200, r.text
        return [p["id"] for p in r.json()["predictions"]]


@asynccontextmanager
async def served(
    tmp: Path,
    *,
    task: str = "classification",
    backend: PredictionLogBackend | None = None,
    flush_interval_s: float = 0.05,
    **serving: Any,
) -> AsyncIterator[Served]:
    """The app of ``toy`` v1 with ``serving`` settings, a prediction log and a SQLite store."""
    settings = Settings(root=tmp, serving=ServingSettings(poll_interval_s=0, **serving))
    source = StaticSource("toy", {1: toy_model(tmp, task)}, {"champion": 1})
    logger = PredictionLogger(backend or MemoryPredictionLog(), flush_interval_s=flush_interval_s)
    store = open_store(f"sqlite:///{tmp / 'store.db'}")
    service = PredictionService(settings, source=source, logger=logger, store=store)
    app = create_app(settings, service=service)
    await service.start(wait=True)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            yield Served(client, service, store)
    finally:
        await service.stop()


class AliasRegistry:
    """The rollout controller's registry calls over a StaticSource (alias moves reach the service)."""

    def __init__(self, source: StaticSource) -> None:
        self.source = source

    def get(self, ref: Any) -> Any:
        text = str(ref)
        v = self.source.aliases[text[1:]] if text.startswith("@") else int(text.lstrip("v"))
        return type("V", (), {"version": v})()

    def by_alias(self, alias: str) -> Any:
        v = self.source.aliases.get(alias)
        return None if v is None else type("V", (), {"version": v})()

    def set_alias(self, alias: str, ref: Any, *, reason: str, actor: str = "") -> Any:
        self.source.aliases[alias] = int(str(ref))
        return self.get(ref)

    def delete_alias(self, alias: str, *, reason: str, actor: str = "") -> None:
        self.source.aliases.pop(alias, None)
