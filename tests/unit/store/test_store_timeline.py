"""Timeline pages: filters and keyset pagination run in SQL and walk the whole timeline once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mloop.errors import StoreError
from mloop.rollout.states import ROLLOUT_MACHINE
from mloop.store import Store, open_store
from mloop.store.rollouts import Arm, RolloutStore
from mloop.store.timeline import event_kinds, event_page


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(f"sqlite:///{tmp_path / 'mloop.db'}") as s:
        yield s


def test_pages_walk_every_event_once_newest_first(store: Store) -> None:
    for i in range(23):
        store.record_event("gate.passed" if i % 2 else "alias.moved", f"model:fraud/v{i}", f"r{i}")
    seen: list[int] = []
    before = None
    pages = 0
    while True:
        page = event_page(store, limit=10, before=before)
        seen.extend(e.id for e in page.events)
        pages += 1
        if page.next_before is None:
            break
        before = page.next_before
    assert pages == 3 and len(seen) == 23 and seen == sorted(seen, reverse=True)
    assert [e.kind for e in event_page(store, kind="gate", limit=500).events] == ["gate.passed"] * 11
    assert event_kinds(store) == ["alias.moved", "gate.passed"]


def test_model_filter_takes_its_subjects_and_its_rollouts(store: Store) -> None:
    repo = RolloutStore(store, ROLLOUT_MACHINE)
    mine = repo.create(
        model_name="fraud",
        strategy="canary",
        baseline_version="1",
        candidate_version="2",
        arms=[Arm("champion", "1", 0.9), Arm("canary", "2", 0.1)],
        config={},
        actor="t",
        reason="go",
    )
    repo.transition(
        mine.id,
        expected_revision=mine.revision,
        state="aborted",
        reason="stop",
        actor="t",
        kind="rollout.aborted",
    )
    store.record_event("gate.passed", "model:fraud/v2", "ok")
    store.record_event("gate.passed", "model:fraud2/v1", "other model with a longer name")
    store.record_event("loop.paused", "model:fraud", "paused")
    subjects = [e.subject for e in event_page(store, model="fraud").events]
    # the rollout's start and abort, then the model's own events; not the other model's
    assert subjects == ["model:fraud", "model:fraud/v2", f"rollout:{mine.id}", f"rollout:{mine.id}"]


def test_time_window_and_exclusions(store: Store) -> None:
    store.record_event("monitor.window", "model:fraud/v1", "w")
    store.record_event("alert", "drift-rule", "fired")
    now = datetime.now(UTC)
    assert [e.kind for e in event_page(store, exclude_kinds=("monitor.window",)).events] == ["alert"]
    assert event_page(store, since=now + timedelta(minutes=1)).events == []
    assert len(event_page(store, until=now + timedelta(minutes=1)).events) == 2
    with pytest.raises(StoreError, match="1 to 500"):
        event_page(store, limit=0)
