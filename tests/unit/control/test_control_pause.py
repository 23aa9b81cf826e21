"""Pausing the loop through the store: the leader checks no trigger and takes no step until resumed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mloop.config import Settings
from mloop.control import Controller, Trigger
from mloop.control.states import CYCLE_MACHINE, CycleState
from mloop.store import Store, open_store
from mloop.store.loop import LoopRepository


class Trainer:
    def __init__(self) -> None:
        self.spawned: list[int] = []

    def spawn(self, cycle_id: int, *, data: Any, reason: str, log_path: Path) -> int:
        self.spawned.append(cycle_id)
        return 4242

    def find(self, cycle_id: int) -> int | None:
        return None

    def poll(self, pid: int | None) -> bool:
        return True

    def stop(self, pid: int | None) -> None:
        pass


class Rollouts:
    def start(self, version: str, reason: str) -> int:
        raise AssertionError("no rollout in this test")

    def advance(self, rollout_id: int) -> tuple[str, str]:
        raise AssertionError("no rollout in this test")


class Registry:
    def versions(self) -> list[Any]:
        return []


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(f"sqlite:///{tmp_path / 'mloop.db'}") as s:
        yield s


def test_a_paused_loop_takes_no_step_and_resumes_where_it_was(tmp_path: Path, store: Store) -> None:
    settings = Settings.model_validate({"model": {"name": "fraud"}, "control": {"retrain_data": "source"}})
    settings = settings.model_copy(update={"root": tmp_path})
    trainer = Trainer()
    ctrl = Controller(settings, store=store, trainer=trainer, registry=Registry(), rollouts=Rollouts())
    cycle = ctrl.start_cycle(Trigger("manual", "manual:1", "test"))
    assert cycle is not None
    repo = LoopRepository(store, CYCLE_MACHINE)

    repo.set_paused("fraud", True, actor="console:admin", reason="investigating drift")
    paused = repo.paused("fraud")
    assert paused is not None and paused["reason"] == "investigating drift"
    assert ctrl.tick() is None
    assert trainer.spawned == [] and repo.get(cycle.id).state == CycleState.TRIGGERED
    assert repo.paused("other-model") is None

    repo.set_paused("fraud", False, actor="console:admin", reason="drift explained")
    assert repo.paused("fraud") is None
    moved = ctrl.tick()
    assert moved is not None and moved.state == CycleState.TRAINING and trainer.spawned == [cycle.id]

    kinds = [(e.kind, e.actor, e.reason) for e in store.events(kind="loop", subject="model:fraud")]
    assert kinds == [
        ("loop.resumed", "console:admin", "drift explained"),
        ("loop.paused", "console:admin", "investigating drift"),
    ]
