"""Rollout tables on every store backend, and two processes racing to promote / roll back on Postgres."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator
from pathlib import Path

import pytest

from mloop.errors import ConflictError, RolloutError
from mloop.store import Store, open_store
from mloop.store.rollouts import Arm, RolloutStore


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mloop.db'}"
    return str(request.getfixturevalue("postgres_schema_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with open_store(store_url) as s:
        yield s


def _start(rs: RolloutStore, model: str = "fraud") -> int:
    r = rs.create(
        model_name=model,
        strategy="canary",
        baseline_version="1",
        candidate_version="2",
        arms=[Arm("champion", "1", 0.95), Arm("canary", "2", 0.05)],
        config={"steps": [5, 100]},
        actor="test",
        reason="start",
    )
    return r.id


def test_create_read_transition_and_events(store: Store) -> None:
    rs = RolloutStore(store)
    rid = _start(rs)
    r = rs.get(rid)
    assert (r.state, r.revision, r.weights()) == ("running", 1, {"champion": 0.95, "canary": 0.05})
    assert rs.active("fraud") == r and rs.deployment("fraud").active_rollout_id == rid
    with pytest.raises(RolloutError, match="already has rollout"):
        _start(rs)
    stepped = rs.transition(
        rid,
        expected_revision=1,
        step=1,
        weights={"champion": 0.0, "canary": 1.0},
        reason="step passed",
        actor="rule:canary",
        kind="rollout.step",
    )
    assert (stepped.step, stepped.revision, stepped.weights()["canary"]) == (1, 2, 1.0)
    done = rs.transition(
        rid,
        expected_revision=2,
        state="promoted",
        champion="2",
        reason="ok",
        actor="x",
        kind="rollout.promoted",
    )
    assert done.terminal and done.ended_at is not None and rs.active("fraud") is None
    dep = rs.deployment("fraud")
    assert (dep.champion_version, dep.previous_version, dep.active_rollout_id) == ("2", "1", None)
    events = store.events(subject=f"rollout:{rid}", limit=None)
    assert [e.kind for e in events] == ["rollout.promoted", "rollout.step", "rollout.started"]
    assert events[1].actor == "rule:canary" and events[1].data["weights"] == {"champion": 0.0, "canary": 1.0}
    assert _start(rs) != rid  # the model is free for the next rollout


def test_stale_revision_conflicts_and_analysis_keeps_the_revision(store: Store) -> None:
    rs = RolloutStore(store)
    rid = _start(rs)
    saved = rs.save_analysis(rid, expected_revision=1, analysis={"verdict": "wait"})
    assert saved.revision == 1 and saved.analysis == {"verdict": "wait"}
    rs.transition(rid, expected_revision=1, state="aborted", reason="a", actor="a")
    with pytest.raises(ConflictError):
        rs.transition(rid, expected_revision=1, state="rolled_back", reason="b", actor="b")
    with pytest.raises(ConflictError):
        rs.save_analysis(rid, expected_revision=1, analysis={})
    assert rs.get(rid).state == "aborted"


def test_counters_sum_over_processes_and_upsert(store: Store) -> None:
    rs = RolloutStore(store)
    rid = _start(rs)
    rs.write_counters(rid, "host:1", {"canary": (10, 1), "champion": (90, 0)})
    rs.write_counters(rid, "host:2", {"canary": (5, 0)})
    rs.write_counters(rid, "host:1", {"canary": (12, 2)})  # cumulative: replaces host:1's row
    assert rs.counters(rid) == {"canary": (17, 2), "champion": (90, 0)}


def _race(url: str, rid: int, action: str, barrier: mp.synchronize.Barrier, out: mp.Queue) -> None:  # type: ignore[name-defined]
    with open_store(url) as s:
        rs = RolloutStore(s)
        r = rs.get(rid)
        barrier.wait()
        try:
            state = "promoting" if action == "promote" else "rolled_back"
            rs.transition(
                rid,
                expected_revision=r.revision,
                state=state,
                reason=action,
                actor=action,
                kind=f"rollout.{state}",
            )
            out.put((action, "applied"))
        except ConflictError:
            out.put((action, "conflict"))


def test_two_processes_promote_and_rollback_at_once_only_one_applies(postgres_schema_url: str) -> None:
    with open_store(postgres_schema_url) as s:
        rid = _start(RolloutStore(s))
    ctx = mp.get_context("spawn")
    for attempt in range(3):
        barrier, out = ctx.Barrier(2), ctx.Queue()
        procs = [
            ctx.Process(target=_race, args=(postgres_schema_url, rid, a, barrier, out))
            for a in ("promote", "rollback")
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        results = dict(out.get(timeout=5) for _ in procs)
        assert sorted(results.values()) == ["applied", "conflict"], results
        with open_store(postgres_schema_url) as s:
            rs = RolloutStore(s)
            r = rs.get(rid)
            winner = next(a for a, v in results.items() if v == "applied")
            assert r.state == ("promoting" if winner == "promote" else "rolled_back")
            assert len(s.events(subject=f"rollout:{rid}", limit=None)) == 2
            if attempt < 2:  # a fresh rollout for the next round
                rs.transition(rid, expected_revision=r.revision, state="aborted", reason="reset", actor="t")
                rid = _start(rs)
