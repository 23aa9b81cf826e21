"""The rollout state machine on a real SQLite store with a fake registry and an in-memory log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from mloop.config import Settings
from mloop.errors import ConfigError, ConflictError, RolloutError
from mloop.predlog import MemoryPredictionLog, PredictionRecord, new_prediction_id
from mloop.rollout import RolloutController
from mloop.store import Store
from mloop.store.schema import rollouts as rollouts_t


def _ctl(settings: Settings, store: Store, registry: Any, predlog: MemoryPredictionLog) -> RolloutController:
    return RolloutController(settings, store=store, registry=registry, predlog=predlog)


def _traffic(
    ctl: RolloutController,
    predlog: MemoryPredictionLog,
    rollout_id: int,
    arm: str,
    version: str,
    n: int,
    *,
    errors: int = 0,
    latency: float = 5.0,
    pred: Any = None,
    process: str = "p1",
) -> list[str]:
    """n requests on ``arm`` (``errors`` of them failed): cumulative counters + logged predictions."""
    before = ctl.repo.counters(rollout_id).get(arm, (0, 0))
    ctl.repo.write_counters(rollout_id, process, {arm: (before[0] + n, before[1] + errors)})
    ids = []
    for i in range(n - errors):
        pid = new_prediction_id()
        ids.append(pid)
        value = pred if pred is not None else i % 2
        predlog.write_batch(
            [PredictionRecord(pid, "fraud", version, {"x": i}, value, latency_ms=latency, arm=arm)]
        )
    return ids


def test_canary_walks_every_step_then_promotes_and_keeps_the_rollback_target(
    settings, store, registry, predlog
) -> None:
    ctl = _ctl(settings, store, registry, predlog)
    r = ctl.start(strategy="canary", actor="alice")
    assert (r.state, r.step, r.baseline_version, r.candidate_version) == ("running", 0, "1", "2")
    assert r.weights() == {"champion": 0.9, "canary": 0.1}
    assert ctl.advance(r.id).analysis["verdict"] == "wait"
    for _step in range(3):
        for arm, version in (("champion", "1"), ("canary", "2")):
            ids = _traffic(ctl, predlog, r.id, arm, version, 25)
            store.add_feedback([(i, n % 2) for n, i in enumerate(ids)])  # labels: every answer right
        r = ctl.advance(r.id)
    assert r.state == "promoted" and registry.aliases["champion"] == 2
    assert r.analysis["quality_verified"] and "quality verified" in r.reason
    assert {c["name"]: c["status"] for c in r.analysis["checks"]}["quality"] == "passed"
    dep = ctl.deployment()
    assert dep is not None and (dep.champion_version, dep.previous_version, dep.active_rollout_id) == (
        "2",
        "1",
        None,
    )
    kinds = [e.kind for e in store.events(subject=f"rollout:{r.id}", limit=None)][::-1]
    assert kinds == [
        "rollout.started",
        "rollout.step",
        "rollout.step",
        "rollout.promoting",
        "rollout.promoted",
    ]
    assert ctl.advance(r.id).state == "promoted"  # terminal: nothing more happens


def test_a_failing_check_rolls_back_at_once_naming_the_check(settings, store, registry, predlog) -> None:
    ctl = _ctl(settings, store, registry, predlog)
    r = ctl.start("2", "canary")
    _traffic(ctl, predlog, r.id, "champion", "1", 40)
    _traffic(ctl, predlog, r.id, "canary", "2", 25, latency=40.0)
    r = ctl.advance(r.id)
    assert r.state == "rolled_back" and r.analysis["failing"] == "latency"
    assert r.weights() == {"champion": 1.0, "canary": 0.0}
    # The champion never moved; the rolled-back version is no longer the challenger.
    assert registry.aliases["champion"] == 1 and "challenger" not in registry.aliases
    assert [m for m in registry.moves if m[0] == "champion"] == []
    [event] = store.events(kind="rollout.rolled_back")
    assert event.data["check"] == "latency" and "latency check failed" in event.reason


def test_not_enough_traffic_fails_safe_after_max_wait(settings, store, registry, predlog) -> None:
    ctl = _ctl(settings, store, registry, predlog)
    r = ctl.start("2", "canary")
    with store.engine.begin() as conn:  # the step started long ago
        conn.execute(sa.update(rollouts_t).values(step_started_at=datetime.now(UTC) - timedelta(hours=2)))
    r = ctl.advance(r.id)
    assert r.state == "rolled_back" and r.analysis["failing"] == "traffic"


def test_stale_commands_conflict_and_only_one_decision_applies(settings, store, registry, predlog) -> None:
    ctl = _ctl(settings, store, registry, predlog)
    r = ctl.start("2", "canary")
    ctl.repo.transition(r.id, expected_revision=r.revision, state="aborted", reason="first", actor="a")
    with pytest.raises(ConflictError, match="changed before this command applied"):
        ctl.repo.transition(
            r.id, expected_revision=r.revision, state="rolled_back", reason="second", actor="b"
        )
    with pytest.raises(RolloutError, match="is aborted"):
        ctl.promote(r.id)
    assert ctl.get(r.id).state == "aborted" and registry.aliases["champion"] == 1


def test_only_one_active_rollout_per_model_and_wrong_starts_are_refused(
    settings, store, registry, predlog
) -> None:
    ctl = _ctl(settings, store, registry, predlog)
    with pytest.raises(RolloutError, match="must differ"):
        ctl.start("1", "canary")
    with pytest.raises(ConfigError, match="Did you mean 'canary'"):
        ctl.start("2", "canery")
    r = ctl.start("2", "canary")
    with pytest.raises(RolloutError, match="already has rollout"):
        ctl.start("3", "shadow")
    ctl.abort(r.id, actor="bob")
    assert ctl.current() is None
    assert ctl.start("3", "shadow").weights() == {"champion": 1.0, "shadow": 0.0}


def test_promoting_is_finished_by_the_next_advance_after_a_crash(settings, store, registry, predlog) -> None:
    ctl = _ctl(settings, store, registry, predlog)
    r = ctl.start("2", "canary")
    claimed = ctl.repo.transition(
        r.id,
        expected_revision=r.revision,
        state="promoting",
        weights={"champion": 0.0, "canary": 1.0},
        reason="crashed before the alias moved",
        actor="x",
    )
    assert ctl.current() == claimed  # still owns the traffic
    done = ctl.advance(r.id)
    assert done.state == "promoted" and registry.aliases["champion"] == 2


def test_direct_promotes_at_once_and_deployment_rollback_restores_the_previous_champion(
    settings, store, registry, predlog
) -> None:
    ctl = _ctl(settings, store, registry, predlog)
    r = ctl.start("2", "direct")
    assert r.state == "promoted" and registry.aliases["champion"] == 2
    dep = ctl.rollback_deployment(actor="carol", reason="bad night")
    assert (dep.champion_version, dep.previous_version) == ("1", "2") and registry.aliases["champion"] == 1
    assert store.events(kind="deployment.rolled_back")[0].actor == "carol"


def test_ab_reports_winner_and_promote_takes_it(settings, store, registry, predlog) -> None:
    settings.rollout.ab_min_effect = 0.3
    ctl = _ctl(settings, store, registry, predlog)
    r = ctl.start(strategy="ab", versions=["2"], weights=[1, 1])
    assert r.weights() == {"champion": 0.5, "b": 0.5}
    a_ids = _traffic(ctl, predlog, r.id, "champion", "1", 80, pred=0)
    b_ids = _traffic(ctl, predlog, r.id, "b", "2", 80, pred=1)
    store.add_feedback([(i, 1 if n % 2 else 0) for n, i in enumerate(a_ids)] + [(i, 1) for i in b_ids])
    r = ctl.advance(r.id)
    assert r.state == "running" and r.analysis["winner"] == "b", r.analysis["verdict"]
    assert r.analysis["comparisons"][0]["ci"][0] > 0
    assert ctl.promote(r.id).state == "promoted" and registry.aliases["champion"] == 2


def test_shadow_reports_agreement_and_rolls_back_on_errors(settings, store, registry, predlog) -> None:
    ctl = _ctl(settings, store, registry, predlog)
    r = ctl.start("2", "shadow")
    ids = _traffic(ctl, predlog, r.id, "champion", "1", 30, pred=1)
    for pid in ids[:20]:
        predlog.write_batch([PredictionRecord(pid, "fraud", "2", {"x": 0}, 1, latency_ms=7.0, arm="shadow")])
    for pid in ids[20:]:
        predlog.write_batch([PredictionRecord(pid, "fraud", "2", {"x": 0}, 0, latency_ms=7.0, arm="shadow")])
    ctl.repo.write_counters(r.id, "p1", {"shadow": (30, 0)})
    r = ctl.advance(r.id)
    assert r.analysis["compared"] == 30 and r.analysis["agreement_rate"] == pytest.approx(20 / 30)
    ctl.repo.write_counters(r.id, "p1", {"shadow": (60, 20)})
    r = ctl.advance(r.id)
    assert r.state == "rolled_back" and "error_rate" in r.reason
