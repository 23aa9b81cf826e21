"""The loop's state machine on a real SQLite store, with a scripted trainer, registry and rollouts:
every handler is exercised without training a model or starting a process."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mloop.config import Settings
from mloop.control import Controller, Trigger
from mloop.control.states import CYCLE_MACHINE, CycleState
from mloop.errors import ControlError, TransitionError
from mloop.store import Store, open_store
from testkit.loop_fakes import Registry


class Trainer:
    """A trainer whose trainings run until the test ends them."""

    def __init__(self) -> None:
        self.spawned: list[tuple[int, Path | None]] = []
        self.running: set[int] = set()
        self.stopped: list[int | None] = []
        self.orphans: dict[int, int] = {}

    def spawn(self, cycle_id: int, *, data: Path | None, reason: str, log_path: Path) -> int:
        pid = 1000 + len(self.spawned)
        self.spawned.append((cycle_id, data))
        self.running.add(pid)
        return pid

    def find(self, cycle_id: int) -> int | None:
        return self.orphans.get(cycle_id)

    def poll(self, pid: int | None) -> bool:
        return pid in self.running

    def stop(self, pid: int | None) -> None:
        self.stopped.append(pid)
        self.running.discard(pid or -1)


class Rollouts:
    """Promotes (or rolls back) on the ``steps``-th analysis."""

    def __init__(self, steps: int = 2, outcome: str = "promoted") -> None:
        self.steps, self.outcome = steps, outcome
        self.started: list[str] = []
        self.analyses = 0

    def start(self, version: str, reason: str) -> int:
        self.started.append(version)
        return 77

    def advance(self, rollout_id: int) -> tuple[str, str]:
        self.analyses += 1
        return (self.outcome, "scripted") if self.analyses >= self.steps else ("running", "step")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(f"sqlite:///{tmp_path / 'mloop.db'}") as s:
        yield s


def _controller(
    tmp_path: Path, store: Store, *, control: dict[str, Any] | None = None, rollouts: Rollouts | None = None
) -> tuple[Controller, Trainer, Registry]:
    settings = Settings.model_validate(
        {"model": {"name": "fraud"}, "control": {"retrain_data": "source", **(control or {})}}
    )
    settings = settings.model_copy(update={"root": tmp_path})
    trainer, registry = Trainer(), Registry()
    ctrl = Controller(
        settings,
        store=store,
        trainer=trainer,
        registry=registry,
        rollouts=rollouts or Rollouts(),
        clock=lambda: datetime.now(UTC),
    )
    return ctrl, trainer, registry


def _states(store: Store, cycle_id: int) -> list[str]:
    events = store.events(kind="loop", subject=f"model:fraud/cycle-{cycle_id}", limit=None)
    return [e.kind.removeprefix("loop.") for e in reversed(events)]


def test_a_cycle_walks_train_gate_rollout_promote_one_step_per_tick(tmp_path: Path, store: Store) -> None:
    rollouts = Rollouts(steps=2)
    ctrl, trainer, registry = _controller(tmp_path, store, rollouts=rollouts)
    cycle = ctrl.start_cycle(Trigger("manual", "manual:1", "test"))
    assert cycle is not None and cycle.state == CycleState.TRIGGERED
    training = ctrl.tick()
    assert training is not None and training.state == CycleState.TRAINING
    assert trainer.spawned == [(cycle.id, None)] and training.pid == 1000 and training.attempts == 1
    assert ctrl.tick().state == CycleState.TRAINING  # still running
    trainer.running.clear()
    registry.register(cycle.id, 2, "passed")
    trained = ctrl.tick()
    assert trained is not None and (trained.state, trained.version) == (CycleState.TRAINED, "2")
    rolling = ctrl.tick()
    assert rolling is not None and (rolling.state, rolling.rollout_id) == (CycleState.ROLLING_OUT, 77)
    assert rollouts.started == ["2"]
    assert ctrl.tick().state == CycleState.ROLLING_OUT  # one analysis
    done = ctrl.tick()
    assert done is not None and done.state == CycleState.PROMOTED and done.terminal
    assert _states(store, cycle.id) == ["triggered", "training", "trained", "rolling_out", "promoted"]
    assert ctrl.tick() is None  # nothing active, no trigger
    assert len(trainer.spawned) == 1


@pytest.mark.parametrize(
    ("gate", "aliases", "approval", "expected"),
    [
        ("failed", (), "auto", CycleState.REJECTED),
        ("passed", ("champion",), "auto", CycleState.PROMOTED),  # the first version is champion directly
        ("passed", (), "manual", CycleState.AWAITING_APPROVAL),
    ],
)
def test_the_gate_decides_what_follows_training(
    tmp_path: Path, store: Store, gate: str, aliases: tuple[str, ...], approval: str, expected: CycleState
) -> None:
    ctrl, trainer, registry = _controller(tmp_path, store, control={"approval": approval})
    cycle = ctrl.start_cycle(Trigger("manual", "manual:g", "test"))
    assert cycle is not None
    ctrl.tick()
    trainer.running.clear()
    registry.register(cycle.id, 2, gate, *aliases)
    ctrl.tick()
    assert ctrl.tick().state == expected


def test_a_retrain_identical_to_the_champion_says_so(tmp_path: Path, store: Store) -> None:
    rollouts = Rollouts()
    ctrl, trainer, registry = _controller(tmp_path, store, rollouts=rollouts)
    cycle = ctrl.start_cycle(Trigger("manual", "manual:u", "test"))
    assert cycle is not None
    ctrl.tick()
    trainer.running.clear()
    registry.register(cycle.id, 5, "unchanged")
    registry.found[-1].tags["mloop.same_as"] = "4"  # what training tags on a twin of the champion
    ctrl.tick()
    done = ctrl.tick()
    assert done is not None and done.state == CycleState.REJECTED and done.terminal
    assert "v5 is the same as the champion (v4)" in done.reason
    assert "did not pass the gates" not in done.reason
    assert rollouts.started == []


def test_manual_approval_waits_for_approve_then_rolls_out(tmp_path: Path, store: Store) -> None:
    from mloop.control import approve

    ctrl, trainer, registry = _controller(tmp_path, store, control={"approval": "manual"})
    cycle = ctrl.start_cycle(Trigger("manual", "manual:a", "test"))
    assert cycle is not None
    ctrl.tick()
    trainer.running.clear()
    registry.register(cycle.id, 2, "passed")
    ctrl.tick()
    assert ctrl.tick().state == CycleState.AWAITING_APPROVAL
    assert ctrl.tick().state == CycleState.AWAITING_APPROVAL
    with pytest.raises(ControlError, match="not waiting for approval"):
        approve(store, "fraud", "3")
    approve(store, "fraud", "2", actor="alice")
    assert ctrl.tick().state == CycleState.ROLLING_OUT


def test_a_crashed_training_fails_the_cycle_and_a_slow_one_is_killed(tmp_path: Path, store: Store) -> None:
    ctrl, trainer, _ = _controller(tmp_path, store, control={"training_timeout_s": 1e-9})
    cycle = ctrl.start_cycle(Trigger("manual", "manual:slow", "test"))
    assert cycle is not None
    pid = ctrl.tick().pid
    timed_out = ctrl.tick()
    assert timed_out is not None and timed_out.state == CycleState.FAILED
    assert trainer.stopped == [pid] and "training_timeout_s" in timed_out.reason

    ctrl, trainer, _ = _controller(tmp_path, store, control={"backoff_s": 0.0})
    crashed = ctrl.start_cycle(Trigger("manual", "manual:crash", "test"))
    assert crashed is not None
    ctrl.tick()
    trainer.running.clear()  # ended without registering a version
    failed = ctrl.tick()
    assert failed is not None and failed.state == CycleState.FAILED and "training failed" in failed.reason


def test_a_training_left_running_by_a_dead_loop_is_adopted_not_started_again(
    tmp_path: Path, store: Store
) -> None:
    ctrl, trainer, _ = _controller(tmp_path, store)
    cycle = ctrl.start_cycle(Trigger("manual", "manual:o", "test"))
    assert cycle is not None
    trainer.orphans[cycle.id] = 4242
    adopted = ctrl.tick()
    assert adopted is not None and (adopted.state, adopted.pid) == (CycleState.TRAINING, 4242)
    assert trainer.spawned == []


def test_dry_run_records_and_trains_nothing(tmp_path: Path, store: Store) -> None:
    ctrl, trainer, _ = _controller(tmp_path, store, control={"dry_run": True})
    cycle = ctrl.start_cycle(Trigger("manual", "manual:d", "test"))
    assert cycle is not None
    assert ctrl.tick().state == CycleState.DRY_RUN
    assert trainer.spawned == []


def test_a_rolled_back_rollout_ends_the_cycle_rolled_back(tmp_path: Path, store: Store) -> None:
    ctrl, trainer, registry = _controller(tmp_path, store, rollouts=Rollouts(steps=1, outcome="rolled_back"))
    cycle = ctrl.start_cycle(Trigger("manual", "manual:rb", "test"))
    assert cycle is not None
    ctrl.tick()
    trainer.running.clear()
    registry.register(cycle.id, 2, "passed")
    ctrl.tick()
    ctrl.tick()
    assert ctrl.tick().state == CycleState.ROLLED_BACK


def test_every_state_that_is_not_final_has_a_handler(tmp_path: Path, store: Store) -> None:
    ctrl, _, _ = _controller(tmp_path, store)
    assert set(ctrl._handlers) == set(CycleState) - CYCLE_MACHINE.terminal


def test_a_paused_cycle_stays_paused_and_the_store_refuses_illegal_moves(
    tmp_path: Path, store: Store
) -> None:
    ctrl, trainer, _ = _controller(tmp_path, store)
    cycle = ctrl.start_cycle(Trigger("manual", "manual:p", "test"))
    assert cycle is not None
    with pytest.raises(TransitionError, match="'triggered' to 'promoted'"):
        ctrl.repo.transition(cycle, CycleState.PROMOTED, reason="skip the training")
    paused = ctrl.repo.transition(cycle, CycleState.PAUSED, reason="paused by the test")
    assert ctrl.tick() == paused and trainer.spawned == []
    resumed = ctrl.repo.transition(paused, CycleState.TRIGGERED, reason="resumed")
    assert ctrl.tick().state == CycleState.TRAINING
    assert resumed.revision == paused.revision + 1


def test_only_the_lease_holder_of_several_loops_ticks(tmp_path: Path, store: Store) -> None:
    first, first_trainer, _ = _controller(tmp_path, store)
    second, second_trainer, _ = _controller(tmp_path, store)
    first.start_cycle(Trigger("manual", "manual:l", "test"))
    assert second.lead_tick() is not None  # takes the lease and spawns
    assert first.lead_tick() is None  # the other holds the lease
    assert len(second_trainer.spawned) == 1 and first_trainer.spawned == []


class VerifyingRollouts(Rollouts):
    """Also counts the leader's looks at unverified promotions."""

    def __init__(self) -> None:
        super().__init__()
        self.verified = 0

    def verify_promotions(self) -> list[tuple[int, str]]:
        self.verified += 1
        return []


def test_the_leader_looks_at_unverified_promotions_once_per_interval(tmp_path: Path, store: Store) -> None:
    leader_rollouts, standby_rollouts = VerifyingRollouts(), VerifyingRollouts()
    leader, _, _ = _controller(tmp_path, store, rollouts=leader_rollouts)
    standby, _, _ = _controller(tmp_path, store, rollouts=standby_rollouts)
    leader.lead_tick()
    leader.lead_tick()  # within rollout.verify_interval_s (60 s): no second look
    standby.lead_tick()  # not the leader: never looks
    assert leader_rollouts.verified == 1 and standby_rollouts.verified == 0
