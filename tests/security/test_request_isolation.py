"""One bad request never fails another: poison requests among many valid concurrent ones.

Attacks: an integer beyond 64 bits (``hour = 2**64 - 1``), text with NUL, and rows that pass the
contract but make the model raise. Each must fail only its own request (422 for what the contract
refuses, 500 for the model's own failure); every valid request sharing a micro-batch answers 200.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from keyed_app import SMALL_DATA, wrap_model

from mloop.config.settings import ServingSettings, Settings
from mloop.data import infer_contract
from mloop.predlog import MemoryPredictionLog, PredictionLogger
from mloop.server import create_app
from mloop.serving import PredictionService, StaticSource

pytestmark = pytest.mark.anyio
POISON_AMOUNT = 13.125
"""An amount inside the contract that this test's model cannot take (it raises)."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Fragile:
    """A small classifier (amount above 250) that raises on any batch holding the poison amount."""

    classes_ = np.array([0, 1])

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        amount = frame["amount"].to_numpy(dtype="float64")
        if (amount == POISON_AMOUNT).any():
            raise ValueError("cannot score this row")
        high = (amount > 250).astype("float64")
        return np.column_stack([1.0 - high, high])


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, PredictionService]]:
    # A queue far larger than the burst: this test is about failures, not about load shedding.
    serving = ServingSettings(poll_interval_s=0, max_batch_rows=64, max_wait_ms=5.0, max_queue=1_000_000)
    settings = Settings(root=tmp_path, serving=serving)
    source = StaticSource(
        "fragile", {1: wrap_model(tmp_path / "v1", Fragile(), SMALL_DATA, name="fragile")}, {"champion": 1}
    )
    logger = PredictionLogger(MemoryPredictionLog(), flush_interval_s=0.05)
    service = PredictionService(settings, source=source, logger=logger)
    app = create_app(settings, service=service)
    await service.start(wait=True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as c:
        yield c, service
    await service.stop()


def _valid(i: int) -> dict[str, Any]:
    return {"features": {"amount": 10.0 + i % 400, "hour": i % 24, "country": ["DE", "FR", "US"][i % 3]}}


async def _burst(c: httpx.AsyncClient, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    return list(await asyncio.gather(*(c.post("/predict", json=b) for b in bodies)))


async def test_poison_rows_the_model_cannot_take_fail_only_their_own_requests(
    client: tuple[httpx.AsyncClient, PredictionService],
) -> None:
    c, service = client
    bodies = [_valid(i) for i in range(600)]
    poison = {"features": {"amount": POISON_AMOUNT, "hour": 3, "country": "DE"}}
    for k in range(20):  # spread through the burst, so most micro-batches hold one
        bodies.insert(k * 31, poison)
    responses = await _burst(c, bodies)
    statuses = [r.status_code for r, b in zip(responses, bodies, strict=True) if b is not poison]
    assert statuses == [200] * 600
    poisoned = [r for r, b in zip(responses, bodies, strict=True) if b is poison]
    assert [r.status_code for r in poisoned] == [500] * 20
    assert "cannot score this row" in poisoned[0].json()["message"]
    runtime = service.champion()
    assert runtime is not None and runtime.batcher.isolations >= 1  # batches were shared, then split


@pytest.mark.parametrize(
    "field, value, rule",
    [
        ("hour", 18446744073709551615, "type"),  # 2**64 - 1: JSON carries it, int64 cannot
        ("hour", -(2**63) - 1, "type"),
        ("country", "DE\u0000", "text"),
        ("country", "x" * 20_000, "text"),
    ],
)
async def test_values_beyond_the_model_dtypes_are_one_request_422(
    client: tuple[httpx.AsyncClient, PredictionService], field: str, value: Any, rule: str
) -> None:
    c, _ = client
    bad = {"features": {**_valid(0)["features"], field: value}}
    # Sent as raw JSON text: the number must reach the server exactly as written.
    raw = json.dumps(bad).encode()
    tasks = [c.post("/predict", json=_valid(i)) for i in range(50)]
    tasks.append(c.post("/predict", content=raw, headers={"content-type": "application/json"}))
    tasks += [c.post("/predict", json=_valid(i)) for i in range(50, 100)]
    responses = await asyncio.gather(*tasks)
    refused = responses[50]
    assert refused.status_code == 422, refused.text
    (error,) = refused.json()["errors"]
    assert (error["field"], error["rule"]) == (field, rule)
    assert [r.status_code for r in responses[:50] + responses[51:]] == [200] * 100


@pytest.mark.parametrize(
    "field, value",
    [
        ("hour", 2**64),
        ("hour", -(2**63) - 1),
        ("hour", 1e19),
        ("amount", 10**400),  # beyond float range
        ("amount", float("inf")),
        ("amount", float("-inf")),
        ("amount", "12.5"),
        ("amount", True),
        ("country", "DE\x00"),
        ("country", "D" * 10_001),
    ],
)
def test_the_validator_refuses_what_the_frame_could_not_hold(field: str, value: Any) -> None:
    """Values a decoder may hand over that int64/float64/text columns cannot hold, or should not."""
    from mloop.errors import RequestValidationError
    from mloop.serving import ContractValidator

    contract = infer_contract(
        pd.DataFrame({"amount": [1.5, 2.5], "hour": [1, 2], "country": ["DE", "FR"]}), target=None
    )
    with pytest.raises(RequestValidationError) as info:
        ContractValidator(contract).from_records([{"amount": 2.0, "hour": 1, "country": "DE", field: value}])
    (error,) = info.value.errors
    assert error["field"] == field and error["rule"] in ("type", "text")
    json.dumps(info.value.errors, allow_nan=False)  # the 422 body itself can be encoded
