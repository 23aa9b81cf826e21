"""Labels from outside cannot forge the loop's inputs: each attack on ``/feedback`` from issue 11.

A client derived 50 other clients' prediction ids and changed their labels; a web page could post
``text/plain`` labels cross-origin; a 9 MB body stored 230,000 rows; any id and any label were
stored. Every test below performs one of those and asserts it fails and stores nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from keyed_app import served

from mloop.predlog import MemoryPredictionLog, ParquetPredictionLog, PredictionRecord
from mloop.predlog.base import PredictionLogBackend

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _neighbours(pid: str, span: int = 60) -> list[str]:
    """The ids a counter-based scheme would have given around ``pid`` (the old attack)."""
    prefix, counter = pid[:-12], int(pid[-12:], 16)
    return [f"{prefix}{counter + d:012x}" for d in range(-span, span + 1) if d and counter + d >= 0]


async def test_labels_for_ids_derived_from_ones_own_are_not_stored(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        (mine,) = await s.predict(1)
        victims = await s.predict(50)
        guesses = _neighbours(mine)
        assert not set(guesses) & set(victims)  # the derivation no longer finds anyone
        r = await s.client.post(
            "/feedback", json={"feedback": [{"prediction_id": g, "label": 0} for g in guesses]}
        )
        assert r.status_code == 404, r.text
        body = r.json()
        assert body["stored"] == 0 and {x["status"] for x in body["rejected"]} == {404}
        assert s.store.feedback() == {}
        # The victims' own labels still go through.
        r = await s.client.post("/feedback", json={"prediction_id": victims[0], "label": 1})
        assert r.json() == {"received": 1, "stored": 1}


async def test_another_clients_label_cannot_be_changed(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        (pid,) = await s.predict(1)
        first = await s.client.post("/feedback", json={"prediction_id": pid, "label": 1})
        assert first.json() == {"received": 1, "stored": 1}
        again = await s.client.post("/feedback", json={"prediction_id": pid, "label": 0})
        assert again.status_code == 409
        assert again.json()["rejected"][0]["prediction_id"] == pid
        assert s.store.feedback() == {pid: 1}  # the first label wins


async def test_one_label_per_id_within_a_request_the_first_wins(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        (pid,) = await s.predict(1)
        items = [{"prediction_id": pid, "label": 0}, {"prediction_id": pid, "label": 1}]
        r = await s.client.post("/feedback", json=items)
        assert r.status_code == 200
        assert r.json()["stored"] == 1 and r.json()["rejected"][0]["index"] == 1
        assert s.store.feedback() == {pid: 0}


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("text/plain", '{"prediction_id": "PID", "label": 0}'),
        ("application/x-www-form-urlencoded", '{"prediction_id": "PID", "label": 0}'),
        ("multipart/form-data; boundary=x", '{"prediction_id": "PID", "label": 0}'),
        (None, '{"prediction_id": "PID", "label": 0}'),
    ],
)
async def test_a_cross_origin_simple_post_is_refused(
    tmp_path: Path, content_type: str | None, data: str
) -> None:
    # A page on another origin can send these without a CORS preflight; the body is valid JSON.
    async with served(tmp_path) as s:
        (pid,) = await s.predict(1)
        headers = {"Origin": "https://evil.example"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        r = await s.client.post("/feedback", content=data.replace("PID", pid), headers=headers)
        assert r.status_code == 415, r.text
        assert s.store.feedback() == {}


async def test_a_9_mb_body_is_refused_before_anything_is_stored(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        (pid,) = await s.predict(1)
        items = [{"prediction_id": f"{pid}{i}", "label": 1} for i in range(230_000)]
        body = {"feedback": items}
        r = await s.client.post("/feedback", json=body)
        assert len(r.request.content) > 9_000_000
        assert r.status_code == 413, r.text[:200]
        # Many labels in a small body are refused too (at most serving.max_feedback_items).
        few_bytes = [{"prediction_id": "a", "label": 1}] * 10_001
        r = await s.client.post("/feedback", json=few_bytes)
        assert r.status_code == 413 and "max_feedback_items" in r.json()["message"]
        assert s.store.feedback() == {}


async def test_unknown_ids_are_rejected_per_item_and_the_rest_stored(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        ids = await s.predict(2)
        items = [
            {"prediction_id": ids[0], "label": 1},
            {"prediction_id": "f" * 32, "label": 1},
            {"prediction_id": ids[1], "label": 0},
        ]
        r = await s.client.post("/feedback", json=items)
        assert r.status_code == 200
        body = r.json()
        assert body["stored"] == 2
        assert [(x["index"], x["status"]) for x in body["rejected"]] == [(1, 404)]
        assert s.store.feedback() == {ids[0]: 1, ids[1]: 0}


@pytest.mark.parametrize("label", [7, "1", "yes", True, 0.5, [1]])
async def test_a_label_that_is_not_a_class_is_a_422_naming_the_id(tmp_path: Path, label: Any) -> None:
    async with served(tmp_path) as s:
        (pid,) = await s.predict(1)
        r = await s.client.post("/feedback", json={"prediction_id": pid, "label": label})
        assert r.status_code == 422, r.text
        assert pid in r.text
        assert s.store.feedback() == {}


async def test_a_class_given_as_a_float_is_stored_as_the_class(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        (pid,) = await s.predict(1)
        r = await s.client.post("/feedback", json={"prediction_id": pid, "label": 1.0})
        assert r.json() == {"received": 1, "stored": 1}
        assert s.store.feedback() == {pid: 1}


@pytest.mark.parametrize("label", ["12.5", True, None, "NaN"])
async def test_a_regressor_takes_only_finite_numbers(tmp_path: Path, label: Any) -> None:
    async with served(tmp_path, task="regression") as s:
        (pid,) = await s.predict(1)
        r = await s.client.post("/feedback", json={"prediction_id": pid, "label": label})
        assert r.status_code == 422, r.text
        assert s.store.feedback() == {}
        # Infinity is not JSON: the body itself is refused.
        bad = await s.client.post(
            "/feedback",
            content=f'{{"prediction_id": "{pid}", "label": 1e999}}',
            headers={"Content-Type": "application/json"},
        )
        assert bad.status_code == 422
        ok = await s.client.post("/feedback", json={"prediction_id": pid, "label": 12.5})
        assert ok.json() == {"received": 1, "stored": 1}


async def test_a_label_sent_before_the_log_is_flushed_is_still_found(tmp_path: Path) -> None:
    # The flusher waits an hour: the prediction is only in this process's buffer.
    async with served(tmp_path, flush_interval_s=3600) as s:
        (pid,) = await s.predict(1)
        r = await s.client.post("/feedback", json={"prediction_id": pid, "label": 0})
        assert r.json() == {"received": 1, "stored": 1}


async def test_ids_of_another_model_are_unknown(tmp_path: Path) -> None:
    log = MemoryPredictionLog()
    log.write_batch([PredictionRecord("p-of-other-model", "other", "1", {"amount": 1.0}, 0)])
    async with served(tmp_path, backend=log) as s:
        r = await s.client.post("/feedback", json={"prediction_id": "p-of-other-model", "label": 0})
        assert r.status_code == 404
        assert s.store.feedback() == {}


@pytest.fixture(params=["memory", "parquet", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> PredictionLogBackend:
    if request.param == "memory":
        return MemoryPredictionLog()
    if request.param == "parquet":
        return ParquetPredictionLog(tmp_path / "predictions", fsync=False)
    from mloop.predlog import PostgresPredictionLog

    pg = PostgresPredictionLog(request.getfixturevalue("postgres_schema_url"))
    request.addfinalizer(pg.close)
    return pg


def test_every_backend_finds_the_version_of_an_id_and_ignores_shadow_rows(
    backend: PredictionLogBackend,
) -> None:
    backend.write_batch(
        [
            PredictionRecord("a", "toy", "1", {"x": 1.0}, 0, arm="champion"),
            PredictionRecord("a", "toy", "2", {"x": 1.0}, 1, arm="shadow", flags={"shadow": True}),
            PredictionRecord("b", "toy", "2", {"x": 2.0}, 1, arm="canary"),
            PredictionRecord("c", "other", "1", {"x": 3.0}, 0),
        ]
    )
    assert backend.versions(["a", "b", "c", "zzz"], model_name="toy") == {"a": "1", "b": "2"}
    # A later batch without any shadow row (a Parquet segment without that column) is found too.
    backend.write_batch([PredictionRecord("d", "toy", "3", {"x": 4.0}, 1)])
    assert backend.versions(["d", "a"], model_name="toy") == {"a": "1", "d": "3"}
    assert backend.versions([], model_name="toy") == {}


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("postgres_schema_url"))


def test_two_replicas_racing_to_label_one_id_store_only_the_first(store_url: str) -> None:
    # Two processes' stores, each labelling the same 200 ids with its own label, at the same time.
    from concurrent.futures import ThreadPoolExecutor

    from mloop.store import open_store

    stores = [open_store(store_url), open_store(store_url)]
    try:
        ids = [f"id-{i}" for i in range(200)]
        with ThreadPoolExecutor(2) as pool:
            results = list(
                pool.map(lambda n: stores[n].add_first_feedback([(i, n) for i in ids], "toy"), [0, 1])
            )
        won = {pid: n for n, stored in enumerate(results) for pid in stored}
        assert set(won) == set(ids) and sum(len(r) for r in results) == len(ids)  # each id stored once
        assert stores[0].feedback() == won  # and with the label of the call that stored it
        assert stores[1].add_first_feedback([("id-0", 5)]) == [] and stores[0].feedback(["id-0"]) == {
            "id-0": won["id-0"]
        }
    finally:
        for s in stores:
            s.close()
