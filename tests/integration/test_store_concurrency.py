"""Two processes opening a fresh store at once: both migrate safely, then write side by side."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mloop.store import open_store
from mloop.store.migrate import head_revision

EVENTS_PER_PROCESS = 40


def _open_and_write(url: str, name: str, barrier: Any, errors: Any) -> None:
    try:
        barrier.wait(timeout=60)
        with open_store(url) as store:
            for i in range(EVENTS_PER_PROCESS):
                store.record_event("test.write", f"proc:{name}", f"event {i}", actor=name)
            store.add_feedback([(f"{name}-{i}", i) for i in range(10)] + [("shared", name)])
    except BaseException as exc:
        errors.put(f"{name}: {type(exc).__name__}: {exc}")
        raise


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mloop.db'}"
    return str(request.getfixturevalue("postgres_schema_url"))


def test_two_processes_migrate_and_write_concurrently(fresh_url: str) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    errors = ctx.Queue()
    procs = [ctx.Process(target=_open_and_write, args=(fresh_url, n, barrier, errors)) for n in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    messages = [errors.get(timeout=1) for _ in range(errors.qsize())] if not errors.empty() else []
    assert [p.exitcode for p in procs] == [0, 0], messages

    with open_store(fresh_url) as store:
        events = store.events(kind="test", limit=None)
        assert len(events) == 2 * EVENTS_PER_PROCESS
        assert {e.actor for e in events} == {"a", "b"}
        assert len({e.id for e in events}) == len(events)
        labels = store.feedback()
        assert len(labels) == 21 and labels["shared"] in {"a", "b"}
        with store.engine.connect() as conn:
            versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
        assert versions == [head_revision()]
