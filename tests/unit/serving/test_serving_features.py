"""The feature joiner without Feast: a fake client stands for the online store.

Covers the seam (request validator without the served features, full validation of the joined
row), one lookup per micro-batch, missing entities (422 naming the entity, or the configured
defaults) and the configuration errors. The real Feast + Redis run is
tests/integration/test_serving_feast.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mloop.data.feast_source import FeatureService
from mloop.data.schema import ColumnSpec, DataContract
from mloop.errors import RequestValidationError, ServingError
from mloop.serving.features import FeatureJoiner
from mloop.serving.validation import ContractValidator

STORE = {1: (3, 20.0), 2: (40, 310.5)}
SERVICE = FeatureService(
    "fraud_features", ("txn_count_24h", "avg_amount_30d"), ("customer_id",), {"customer_id": "Int64"}
)
CONTRACT = DataContract(
    (
        ColumnSpec("amount", "float", False, 0.0, 1000.0),
        ColumnSpec("txn_count_24h", "int", False, 0.0, 50.0),
        ColumnSpec("avg_amount_30d", "float", False, 0.0, 600.0),
        ColumnSpec("is_fraud", "int", False),
    ),
    "is_fraud",
    "classification",
)


class FakeClient:
    """Answers ``online`` from STORE and counts the calls."""

    def __init__(self) -> None:
        self.calls: list[dict[str, list[Any]]] = []

    def online(self, service: str, entities: dict[str, list[Any]]) -> tuple[dict[str, list[Any]], list[bool]]:
        self.calls.append(entities)
        rows = [STORE.get(k) for k in entities["customer_id"]]
        values: dict[str, list[Any]] = {
            "txn_count_24h": [r[0] if r else None for r in rows],
            "avg_amount_30d": [r[1] if r else None for r in rows],
        }
        return values, [r is not None for r in rows]

    def close(self) -> None:
        pass


class FakeRuntime:
    """What the joiner reads of a ModelRuntime: name, version and the request validator."""

    def __init__(self) -> None:
        self.name, self.version = "fraud", "1"
        self.validator = ContractValidator(CONTRACT)


def _joiner(client: FakeClient, **kwargs: Any) -> FeatureJoiner:
    return FeatureJoiner(client, SERVICE, max_wait_ms=20, **kwargs)


def test_bind_asks_requests_for_the_entity_key_not_the_served_features() -> None:
    runtime = FakeRuntime()
    joiner = _joiner(FakeClient())
    joiner.bind(runtime)
    cols = runtime.validator.from_records([{"customer_id": 1, "amount": 5.0}])
    assert cols.values["customer_id"] == [1]
    with pytest.raises(RequestValidationError, match="customer_id"):
        runtime.validator.from_records([{"amount": 5.0}])


async def test_concurrent_requests_share_one_lookup_and_join_in_order() -> None:
    client = FakeClient()
    runtime = FakeRuntime()
    joiner = _joiner(client)
    joiner.bind(runtime)
    joiner.start()
    try:
        requests = [
            runtime.validator.from_records([{"customer_id": 1 + i % 2, "amount": float(i)}]) for i in range(6)
        ]
        joined = await asyncio.gather(*(joiner.join(runtime, r) for r in requests))
    finally:
        await joiner.close()
    assert len(client.calls) == 1 and client.calls[0]["customer_id"] == [1, 2, 1, 2, 1, 2]
    assert [j.values["txn_count_24h"] for j in joined] == [[3], [40], [3], [40], [3], [40]]
    assert [j.values["amount"] for j in joined] == [[float(i)] for i in range(6)]
    assert [j.values["customer_id"] for j in joined] == [[1], [2], [1], [2], [1], [2]]  # rides along


async def test_an_unknown_entity_fails_only_its_own_request() -> None:
    runtime = FakeRuntime()
    joiner = _joiner(FakeClient())
    joiner.bind(runtime)
    joiner.start()
    try:
        good = runtime.validator.from_records([{"customer_id": 1, "amount": 1.0}])
        bad = runtime.validator.from_records([{"customer_id": 7, "amount": 1.0}])
        results = await asyncio.gather(
            joiner.join(runtime, good),
            joiner.join(runtime, bad),
            return_exceptions=True,
        )
    finally:
        await joiner.close()
    assert not isinstance(results[0], BaseException)
    assert isinstance(results[1], RequestValidationError)
    assert "customer_id=7" in results[1].message
    assert results[1].errors[0]["field"] == "customer_id"
    assert results[1].errors[0]["rule"] == "unknown_entity"


async def test_missing_entity_default_takes_the_configured_values() -> None:
    runtime = FakeRuntime()
    joiner = _joiner(
        FakeClient(), missing_entity="default", defaults={"txn_count_24h": 0, "avg_amount_30d": 0.0}
    )
    joiner.bind(runtime)
    joiner.start()
    try:
        cols = runtime.validator.from_records(
            [{"customer_id": 7, "amount": 1.0}, {"customer_id": 2, "amount": 2.0}]
        )
        joined = await joiner.join(runtime, cols)
    finally:
        await joiner.close()
    assert joined.values["txn_count_24h"] == [0, 40]
    assert joined.values["avg_amount_30d"] == [0.0, 310.5]


def test_a_default_for_a_feature_the_service_does_not_serve_is_refused() -> None:
    with pytest.raises(ServingError, match="amount_7d"):
        _joiner(FakeClient(), missing_entity="default", defaults={"amount_7d": 0})


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


pytestmark = pytest.mark.anyio
