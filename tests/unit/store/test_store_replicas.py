"""Serving replicas seen through the rollout counters they write."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from mloop.rollout.states import ROLLOUT_MACHINE
from mloop.store import Store, open_store
from mloop.store.rollouts import Arm, RolloutStore
from mloop.store.schema import rollout_counters


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(f"sqlite:///{tmp_path / 'mloop.db'}") as s:
        yield s


def _rollout(rs: RolloutStore, model: str) -> int:
    arms = [Arm("champion", "1", 0.9), Arm("canary", "2", 0.1)]
    r = rs.create(
        model_name=model,
        strategy="canary",
        baseline_version="1",
        candidate_version="2",
        arms=arms,
        config={},
        actor="test",
        reason="test",
    )
    return r.id


def _age(store: Store, process: str, minutes: float) -> None:
    """Move a process's reports back in time, as if it had stopped reporting."""
    when = datetime.now(UTC) - timedelta(minutes=minutes)
    with store.write("age counters") as conn:
        conn.execute(
            sa.update(rollout_counters).where(rollout_counters.c.process == process).values(updated_at=when)
        )


def test_replicas_are_the_processes_that_reported_counters_recently(store: Store) -> None:
    rs = RolloutStore(store, ROLLOUT_MACHINE)
    fraud, other = _rollout(rs, "fraud"), _rollout(rs, "churn")
    rs.write_counters(fraud, "a:1:x", {"champion": (90, 1), "canary": (10, 0)})
    rs.write_counters(fraud, "b:2:y", {"champion": (5, 0)})
    rs.write_counters(fraud, "gone:3:z", {"champion": (7, 0)})
    rs.write_counters(other, "c:4:w", {"champion": (3, 0)})
    _age(store, "gone:3:z", 60)
    _age(store, "b:2:y", 1)
    since = datetime.now(UTC) - timedelta(minutes=15)
    seen = rs.replicas("fraud", since)
    assert [(p, n) for p, _, n in seen] == [("a:1:x", 100), ("b:2:y", 5)]  # latest report first
    assert all(ts.tzinfo is not None and ts >= since for _, ts, _ in seen)
    assert rs.replicas("nobody", since) == []
