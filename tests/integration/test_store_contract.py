"""The store's contract: the same tests on every backend (SQLite file, PostgreSQL schema)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from mloop.errors import StoreError
from mloop.store import Event, Store, open_store
from mloop.store.migrate import head_revision


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / '.mloop' / 'mloop.db'}"
    return str(request.getfixturevalue("postgres_schema_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with open_store(store_url) as s:
        yield s


def test_open_migrates_to_head_and_reopen_is_a_no_op(store_url: str) -> None:
    with open_store(store_url) as first:
        assert first.schema_revision() == head_revision()
        first.record_event("store.opened", "store", "first open")
    with open_store(store_url) as second:
        assert second.schema_revision() == head_revision()
        assert [e.reason for e in second.events()] == ["first open"]


def test_record_event_returns_what_events_reads(store: Store) -> None:
    event = store.record_event(
        "gate.passed", "model:fraud/v3", "auc 0.91 >= 0.85", actor="gate:auc", data={"auc": np.float64(0.91)}
    )
    assert isinstance(event, Event) and event.id > 0
    assert event.ts.tzinfo is not None and event.ts.utcoffset() == timedelta(0)
    [read] = store.events()
    assert read == event
    assert read.data == {"auc": 0.91}
    assert read.actor == "gate:auc"


def test_events_are_newest_first_and_limited(store: Store) -> None:
    for i in range(5):
        store.record_event("training.started", "model:fraud", f"run {i}")
    assert [e.reason for e in store.events(limit=3)] == ["run 4", "run 3", "run 2"]
    assert len(store.events(limit=None)) == 5


def test_events_filter_by_kind_prefix_subject_and_since(store: Store) -> None:
    store.record_event("gate.passed", "model:fraud/v1", "ok")
    store.record_event("gate.failed", "model:fraud/v2", "auc too low")
    store.record_event("gateway.up", "server", "a kind that only shares letters")
    store.record_event("alias.moved", "model:fraud/v1", "champion -> v1")
    assert {e.kind for e in store.events(kind="gate")} == {"gate.passed", "gate.failed"}
    assert [e.kind for e in store.events(kind="gate.failed")] == ["gate.failed"]
    assert [e.kind for e in store.events(subject="model:fraud/v1")] == ["alias.moved", "gate.passed"]
    assert store.events(since=datetime.now(UTC) + timedelta(hours=1)) == []
    assert len(store.events(since=datetime.now(UTC) - timedelta(hours=1))) == 4
    # Naive datetimes are read as UTC.
    assert len(store.events(since=datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=1))) == 4


def test_kind_prefix_is_not_a_like_pattern(store: Store) -> None:
    store.record_event("a_b.c", "s", "underscore kind")
    store.record_event("axb.c", "s", "would match if _ were a wildcard")
    assert [e.kind for e in store.events(kind="a_b")] == ["a_b.c"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "Gate Passed"}, "lowercase dotted"),
        ({"kind": ""}, "non-empty"),
        ({"subject": ""}, "subject"),
        ({"data": {"x": object()}}, "JSON-serializable"),
        ({"reason": 3}, "reason must be a string"),
    ],
)
def test_record_event_rejects_bad_input(store: Store, kwargs: dict[str, object], match: str) -> None:
    args = {"kind": "gate.passed", "subject": "model:m/v1", "reason": "r"} | kwargs
    with pytest.raises(StoreError, match=match):
        store.record_event(args.pop("kind"), args.pop("subject"), args.pop("reason"), **args)


def test_feedback_round_trips_labels_of_several_types(store: Store) -> None:
    labels = {"p1": 1, "p2": "fraud", "p3": 12.5, "p4": [0, 1]}
    assert store.add_feedback(labels.items(), model_name="fraud") == 4
    assert store.feedback() == labels
    assert store.feedback(ids=["p2", "p3", "missing"]) == {"p2": "fraud", "p3": 12.5}
    assert store.feedback(model_name="other") == {}


def test_feedback_upserts_and_the_last_label_wins(store: Store) -> None:
    store.add_feedback([("p1", 0), ("p2", 0)])
    assert store.add_feedback([("p1", 1), ("p1", 2)]) == 1
    assert store.feedback() == {"p1": 2, "p2": 0}


def test_feedback_frame_for_joins(store: Store) -> None:
    assert list(store.feedback_frame().columns) == ["prediction_id", "label", "ts", "model_name"]
    store.add_feedback([("p1", "fraud"), ("p2", 0.5)], model_name="fraud")
    frame = store.feedback_frame(model_name="fraud")
    assert sorted(frame["prediction_id"]) == ["p1", "p2"]
    assert set(frame["label"]) == {"fraud", 0.5}
    assert str(frame["ts"].dt.tz) == "UTC"
    assert store.feedback_frame(since=datetime.now(UTC) + timedelta(minutes=1)).empty


def test_feedback_since_and_many_ids(store: Store) -> None:
    ids = [f"p{i}" for i in range(1200)]
    assert store.add_feedback((pid, i % 2) for i, pid in enumerate(ids)) == 1200
    assert len(store.feedback(ids=ids[::2])) == 600
    assert store.feedback(since=datetime.now(UTC) + timedelta(minutes=5)) == {}
    assert store.add_feedback([]) == 0


@pytest.mark.parametrize(
    ("items", "match"), [([("p1", None)], "no label"), ([("", 1)], "prediction_id"), ([("p1",)], "pair")]
)
def test_feedback_rejects_bad_items(store: Store, items: list[tuple[object, ...]], match: str) -> None:
    with pytest.raises(StoreError, match=match):
        store.add_feedback(items)
    assert store.feedback() == {}


def test_leases_exclude_other_owners_until_released_or_expired(store: Store) -> None:
    assert store.acquire_lease("controller", "replica-a", ttl_s=60)
    assert not store.acquire_lease("controller", "replica-b", ttl_s=60)
    assert store.acquire_lease("controller", "replica-a", ttl_s=60), "the owner renews its own lease"
    assert not store.release_lease("controller", "replica-b")
    assert store.release_lease("controller", "replica-a")
    assert store.acquire_lease("controller", "replica-b", ttl_s=0.001)
    # Wait for the expiry on the store's own clock rather than sleeping a guessed amount.
    deadline = datetime.now(UTC) + timedelta(seconds=5)
    while not store.acquire_lease("controller", "replica-a", ttl_s=60):
        assert datetime.now(UTC) < deadline, "an expired lease was never taken over"
    with pytest.raises(StoreError, match="ttl_s"):
        store.acquire_lease("controller", "replica-a", ttl_s=0)


def test_context_manager_closes(store_url: str) -> None:
    with open_store(store_url) as store:
        store.record_event("store.opened", "store", "x")
    assert "Store(" in repr(store)
