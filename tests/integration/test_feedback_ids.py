"""POST /feedback with odd prediction ids and labels, on both store backends: 422 or stored verbatim.

The fuzz test found ``{"prediction_id": "\\t"}`` answered 500: the service let through ids the store
then refused. NUL is the PostgreSQL-only case (text and JSONB cannot hold it), so every case runs on
SQLite and on PostgreSQL, and both must answer the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from mloop.config.settings import ServingSettings, Settings
from mloop.errors import StoreError
from mloop.predlog import MemoryPredictionLog, PredictionLogger, PredictionRecord
from mloop.server import create_app
from mloop.serving import PredictionService, StaticSource
from mloop.store import Store, open_store

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = str(request.getfixturevalue("postgres_schema_url"))
    s = open_store(url)
    request.addfinalizer(s.close)
    return s


@pytest.fixture
async def client(tmp_path: Path, store: Store) -> AsyncIterator[httpx.AsyncClient]:
    # The app's lifespan (which loads a model) does not run here: the valid ids are logged as
    # predictions of a regressor "toy" v1, which /feedback checks each id and label against.
    settings = Settings(root=tmp_path, serving=ServingSettings(poll_interval_s=0))
    log = MemoryPredictionLog()
    log.write_batch(PredictionRecord(pid, "toy", "1", {"x": 1.0}, 0.5) for pid in GOOD_IDS)
    service = PredictionService(
        settings, source=StaticSource("toy", {}), store=store, logger=PredictionLogger(log)
    )
    regressor = SimpleNamespace(task="regression", classes=[], name="toy", version="1")
    service.runtime_of = lambda version: regressor
    app = create_app(settings, service=service)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c
    service.logger.close()


BAD_IDS = ["\t", " ", "", "\n\r\t ", "x" * 129, "a\x00b", "\x00", 0, None, ["p1"]]
GOOD_IDS = [
    "x" * 128,
    "é✓😀-予測",
    " leading and trailing ",
    "a\tb",
    "quote'\"back\\slash",
    "%_like_*?",
    "\u200b",  # zero-width space: not whitespace to str.strip, a valid (odd) id
]


@pytest.mark.parametrize("pid", BAD_IDS, ids=repr)
async def test_a_bad_prediction_id_is_a_422_naming_the_field(
    client: httpx.AsyncClient, store: Store, pid: Any
) -> None:
    r = await client.post("/feedback", json={"prediction_id": pid, "label": 1})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "RequestValidationError"
    assert body["errors"][0]["field"] == "[0].prediction_id"
    assert "prediction_id" in body["message"]
    assert store.feedback() == {}


@pytest.mark.parametrize("label", ["a\x00b", ["ok", "\x00"], None, {"a": 1}], ids=repr)
async def test_a_label_the_store_cannot_hold_is_a_422(
    client: httpx.AsyncClient, store: Store, label: Any
) -> None:
    r = await client.post("/feedback", json={"prediction_id": "p1", "label": label})
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "[0].label"
    assert store.feedback() == {}


async def test_one_bad_item_in_a_batch_stores_nothing(client: httpx.AsyncClient, store: Store) -> None:
    items = [{"prediction_id": "p1", "label": 1}, {"prediction_id": "p\x00", "label": 0}]
    r = await client.post("/feedback", json={"feedback": items})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "[1].prediction_id"
    assert store.feedback() == {}


async def test_odd_but_valid_ids_are_stored_verbatim(client: httpx.AsyncClient, store: Store) -> None:
    items = [{"prediction_id": pid, "label": n} for n, pid in enumerate(GOOD_IDS)]
    r = await client.post("/feedback", json={"feedback": items})
    assert r.status_code == 200, r.text
    assert r.json() == {"received": len(GOOD_IDS), "stored": len(GOOD_IDS)}
    assert store.feedback() == {pid: n for n, pid in enumerate(GOOD_IDS)}
    assert store.feedback(ids=GOOD_IDS[:2]) == {GOOD_IDS[0]: 0, GOOD_IDS[1]: 1}


@pytest.mark.parametrize(
    ("items", "match"),
    [
        ([("\t", 1)], "whitespace"),
        ([("a\x00b", 1)], "NUL"),
        ([("p1", "a\x00b")], "NUL"),
        ([("p1", {"k\x00": 1})], "NUL"),
        ([("\ud800", 1)], "surrogate"),
        ([("x" * 129, 1)], "at most 128"),
    ],
    ids=repr,
)
def test_the_store_refuses_the_same_items_on_every_backend(
    store: Store, items: list[tuple[Any, Any]], match: str
) -> None:
    with pytest.raises(StoreError, match=match):
        store.add_feedback(items)
    assert store.feedback() == {}
