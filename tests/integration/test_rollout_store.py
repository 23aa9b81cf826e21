"""Rollout tables on every store backend, two processes racing to promote / roll back on Postgres,
and `mloop models promote` racing `mloop rollout start` of the same version, 50 rounds."""

from __future__ import annotations

import multiprocessing as mp
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mloop.config import Settings
from mloop.errors import ConflictError, RolloutError
from mloop.predlog import MemoryPredictionLog
from mloop.rollout import RolloutController
from mloop.rollout.states import ROLLOUT_MACHINE
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
    rs = RolloutStore(store, ROLLOUT_MACHINE)
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
    claimed = rs.transition(rid, expected_revision=2, state="promoting", reason="claim", actor="x")
    assert claimed.state == "promoting" and not claimed.terminal
    done = rs.transition(
        rid,
        expected_revision=3,
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
    rs = RolloutStore(store, ROLLOUT_MACHINE)
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
    rs = RolloutStore(store, ROLLOUT_MACHINE)
    rid = _start(rs)
    rs.write_counters(rid, "host:1", {"canary": (10, 1), "champion": (90, 0)})
    rs.write_counters(rid, "host:2", {"canary": (5, 0)})
    rs.write_counters(rid, "host:1", {"canary": (12, 2)})  # cumulative: replaces host:1's row
    assert rs.counters(rid) == {"canary": (17, 2), "champion": (90, 0)}


def _race(url: str, rid: int, action: str, barrier: mp.synchronize.Barrier, out: mp.Queue) -> None:
    with open_store(url) as s:
        rs = RolloutStore(s, ROLLOUT_MACHINE)
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
    ctx = mp.get_context("spawn")
    for _attempt in range(3):
        with open_store(postgres_schema_url) as s:
            rid = _start(RolloutStore(s, ROLLOUT_MACHINE))  # a fresh rollout each round
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
            rs = RolloutStore(s, ROLLOUT_MACHINE)
            r = rs.get(rid)
            winner = next(a for a, v in results.items() if v == "applied")
            assert r.state == ("promoting" if winner == "promote" else "rolled_back")
            assert len(s.events(subject=f"rollout:{rid}", limit=None)) == 2
            if r.state == "promoting":  # free the model for the next round
                rs.transition(
                    rid, expected_revision=r.revision, state="rolled_back", reason="reset", actor="t"
                )


@dataclass
class _Version:
    version: int


class _Registry:
    """The registry (the source of truth for aliases) both racers share, as MLflow would be."""

    def __init__(self) -> None:
        self.aliases = {"champion": 1, "challenger": 2}
        self.moves: list[tuple[str, int]] = []

    def get(self, ref: Any) -> _Version:
        text = str(ref)
        return _Version(self.aliases[text[1:]] if text.startswith("@") else int(text.lstrip("v")))

    def by_alias(self, alias: str) -> _Version | None:
        v = self.aliases.get(alias)
        return None if v is None else _Version(v)

    def set_alias(self, alias: str, ref: Any, *, reason: str, actor: str = "mloop") -> _Version:
        self.aliases[alias] = self.get(ref).version
        self.moves.append((alias, self.aliases[alias]))
        return _Version(self.aliases[alias])

    def delete_alias(self, alias: str, *, reason: str, actor: str = "mloop") -> None:
        self.aliases.pop(alias, None)


def test_models_promote_racing_a_rollout_start_has_one_winner_every_round(store_url: str) -> None:
    settings = Settings.model_validate({"model": {"name": "fraud"}, "rollout": {"steps": [10, 100]}})
    with open_store(store_url) as first, open_store(store_url) as second:
        for n in range(50):
            model, registry, barrier = f"race-{n}", _Registry(), threading.Barrier(2)
            outcome: dict[str, str] = {}

            def run(
                name: str,
                store: Store,
                registry: _Registry = registry,
                model: str = model,
                barrier: threading.Barrier = barrier,
                outcome: dict[str, str] = outcome,
            ) -> None:
                ctl = RolloutController(
                    settings, store=store, registry=registry, predlog=MemoryPredictionLog(), model_name=model
                )
                barrier.wait()
                try:
                    if name == "promote":
                        ctl.promote_version("2", actor="cli")
                    else:
                        ctl.start("2", "canary", actor="cli")
                    outcome[name] = "won"
                except (RolloutError, ConflictError) as exc:
                    outcome[name] = f"refused: {exc}"

            threads = [
                threading.Thread(target=run, args=("promote", first)),
                threading.Thread(target=run, args=("start", second)),
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            winners = [k for k, v in outcome.items() if v == "won"]
            assert len(winners) == 1, f"round {n}: {outcome}"
            rs = RolloutStore(first, ROLLOUT_MACHINE)
            active = rs.active(model)
            if winners == ["promote"]:
                assert registry.aliases["champion"] == 2 and active is None, f"round {n}"
            else:
                assert registry.aliases["champion"] == 1, f"round {n}: {registry.moves}"
                assert active is not None and active.candidate_version == "2"
