"""One loop leader of several: the lease, its fence on cycle moves, and the training in flight
recorded in the store so that a new leader neither trains a cycle again nor loses it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mloop.config import Settings
from mloop.control import Controller, Trigger, inflight
from mloop.control.leader import LeaderElection
from mloop.control.retrain import CYCLE_TAG
from mloop.control.states import CycleState
from mloop.errors import ConflictError
from mloop.store import Store, open_store
from testkit.loop_fakes import Registry, Version

TTL = 1.0
"""Lease TTL of the candidates: longer than any one tick takes here (the first one imports pandas)."""


class Trainer:
    """Trainings that run until the test ends them; ``pid`` numbers them."""

    def __init__(self) -> None:
        self.spawned: list[int] = []
        self.running: set[int] = set()

    def spawn(self, cycle_id: int, *, data: Path | None, reason: str, log_path: Path) -> int:
        self.spawned.append(cycle_id)
        self.running.add(2000 + len(self.spawned))
        return 2000 + len(self.spawned)

    def find(self, cycle_id: int) -> int | None:
        return None

    def poll(self, pid: int | None) -> bool:
        return pid in self.running

    def stop(self, pid: int | None) -> None:
        self.running.discard(pid or -1)


class Rollouts:
    def start(self, version: str, reason: str) -> int:
        return 1

    def advance(self, rollout_id: int) -> tuple[str, str]:
        return "running", "step"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(f"sqlite:///{tmp_path / 'mloop.db'}") as s:
        yield s


def _candidate(
    tmp_path: Path, store: Store, registry: Registry, ttl: float = 60.0
) -> tuple[Controller, Trainer]:
    settings = Settings.model_validate(
        {
            "model": {"name": "fraud"},
            "control": {"retrain_data": "source", "lease_ttl_s": ttl, "interval_s": 0.01},
        }
    ).model_copy(update={"root": tmp_path})
    trainer = Trainer()
    ctrl = Controller(
        settings,
        store=store,
        trainer=trainer,
        registry=registry,
        rollouts=Rollouts(),
        clock=lambda: datetime.now(UTC),
    )
    # Owner tokens of other hosts: a candidate's death is seen only through its lease's expiry.
    ctrl.election.owner = ctrl.owner = f"host-{id(ctrl)}:loop"
    return ctrl, trainer


def test_the_standby_takes_over_after_the_leader_stops_renewing(tmp_path: Path, store: Store) -> None:
    registry = Registry()
    leader, _ = _candidate(tmp_path, store, registry, ttl=TTL)
    standby, _ = _candidate(tmp_path, store, registry, ttl=TTL)
    leader.lead_tick()
    standby.lead_tick()
    assert (leader.status()["role"], standby.status()["role"]) == ("leader", "standby")
    assert standby.status()["holder"]["owner"] == leader.owner
    first = leader.election.fence
    time.sleep(TTL * 1.5)  # the leader died: nobody renews its lease
    standby.lead_tick()
    assert standby.status()["role"] == "leader"
    assert standby.election.fence is not None and first is not None
    assert standby.election.fence.token == first.token + 1
    leader.lead_tick()  # back from a stall: it is a standby now
    assert leader.status()["role"] == "standby"


def test_a_leader_that_lost_its_lease_cannot_move_a_cycle(tmp_path: Path, store: Store) -> None:
    registry = Registry()
    old, _ = _candidate(tmp_path, store, registry, ttl=TTL)
    new, new_trainer = _candidate(tmp_path, store, registry, ttl=TTL)
    cycle = old.start_cycle(Trigger("manual", "manual:f", "test"))
    assert cycle is not None
    old.lead_tick()  # leader; spawns the training
    trained = old.repo.get(cycle.id)
    assert trained.state == CycleState.TRAINING
    # The training's wrapper renews its in-flight lease (here: once, for long enough).
    assert store.leases.renew(inflight.lease_name("fraud", cycle.id), inflight.lease_owner(cycle.id), 60.0)
    time.sleep(TTL * 1.5)
    assert new.lead_tick().state == CycleState.TRAINING  # takes over with the next fence; follows it
    with pytest.raises(ConflictError, match="no longer holds lease 'loop:fraud'"):
        old.repo.transition(trained, CycleState.FAILED, reason="stale leader")
    assert old.repo.get(cycle.id).state == CycleState.TRAINING
    assert new_trainer.spawned == []


def test_a_training_in_flight_is_adopted_not_started_again(tmp_path: Path, store: Store) -> None:
    registry = Registry()
    old, old_trainer = _candidate(tmp_path, store, registry, ttl=TTL)
    cycle = old.start_cycle(Trigger("manual", "manual:t", "test"))
    assert cycle is not None
    # The leader recorded the training in flight and started it, then died before moving the cycle.
    assert inflight.claim(store, "fraud", cycle.id, ttl_s=60.0)
    assert not inflight.claim(store, "fraud", cycle.id, ttl_s=60.0)  # one training of a cycle at a time
    time.sleep(TTL * 1.5)
    new, new_trainer = _candidate(tmp_path, store, registry, ttl=TTL)
    adopted = new.lead_tick()
    assert adopted is not None and adopted.state == CycleState.TRAINING and "in flight" in adopted.reason
    assert new.lead_tick().state == CycleState.TRAINING  # still in flight (its wrapper renews the lease)
    registry.found.append(Version(3, {CYCLE_TAG: str(cycle.id), "mloop.gate": "passed"}))
    inflight.release(store, "fraud", cycle.id)  # the training registered v3 and ended
    done = new.lead_tick()
    assert done is not None and (done.state, done.version) == (CycleState.TRAINED, "3")
    assert new_trainer.spawned == [] and old_trainer.spawned == []


def test_a_training_lost_with_its_leader_fails_the_cycle_once(tmp_path: Path, store: Store) -> None:
    registry = Registry()
    old, _ = _candidate(tmp_path, store, registry, ttl=TTL)
    cycle = old.start_cycle(Trigger("manual", "manual:l", "test"))
    assert cycle is not None
    old.lead_tick()
    assert old.repo.get(cycle.id).state == CycleState.TRAINING
    inflight.release(store, "fraud", cycle.id)  # the pod died with its training: nothing renews it
    time.sleep(TTL * 1.5)
    new, new_trainer = _candidate(tmp_path, store, registry, ttl=TTL)
    failed = new.lead_tick()
    assert failed is not None and failed.state == CycleState.FAILED
    assert new_trainer.spawned == []


def test_election_status_names_the_holder(store: Store) -> None:
    a = LeaderElection(store, "m", ttl_s=60, owner="a:1")
    b = LeaderElection(store, "m", ttl_s=60, owner="b:1")
    assert a.status()["role"] == "starting"
    assert a.step() and not b.step()
    assert b.status()["holder"]["owner"] == "a:1" and b.status()["fence"] is None
    a.release()
    assert b.step() and b.status()["fence"] == 2


def test_the_leader_deletes_predictions_and_labels_past_retention(tmp_path: Path, store: Store) -> None:
    from datetime import timedelta

    from mloop.predlog import PredictionRecord, open_prediction_log

    url = (tmp_path / "predictions").as_uri()
    with open_prediction_log(url) as log:
        log.write_batch([PredictionRecord(f"p{i}", "fraud", "1", {"x": float(i)}, 0) for i in range(5)])
    store.add_feedback([(f"p{i}", 1) for i in range(5)], model_name="fraud")
    settings = Settings.model_validate(
        {"model": {"name": "fraud"}, "prediction_log": {"url": url, "retention_days": 2}}
    ).model_copy(update={"root": tmp_path})
    later = datetime.now(UTC) + timedelta(days=5)  # everything logged now is past retention then
    ctrl = Controller(
        settings,
        store=store,
        trainer=Trainer(),
        registry=Registry(),
        rollouts=Rollouts(),
        clock=lambda: later,
    )
    ctrl.lead_tick()
    with open_prediction_log(url) as log:
        assert log.count() == 0
    assert store.feedback(ids=[f"p{i}" for i in range(5)]) == {}
    event = store.events(kind="loop.retention", limit=1)[0]
    assert event.data == {"predictions": 5, "labels": 5, "cutoff": (later - timedelta(days=2)).isoformat()}
    ctrl.lead_tick()  # at most once per control.monitor_interval_s
    assert len(store.events(kind="loop.retention", limit=None)) == 1
