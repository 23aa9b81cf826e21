"""The state machines as data, enforced by the store: random walks never store an illegal move."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mloop.control.states import CYCLE_MACHINE, CycleState
from mloop.errors import ConflictError, StoreError, TransitionError
from mloop.rollout.states import ACTIVE_STATES, ROLLOUT_MACHINE, TERMINAL_STATES, RolloutState
from mloop.store import Store, open_store
from mloop.store.loop import LoopRepository
from mloop.store.machine import StateMachine
from mloop.store.rollouts import Arm, RolloutStore

WALK = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(f"sqlite:///{tmp_path / 'mloop.db'}") as s:
        yield s


@pytest.mark.parametrize("machine", [ROLLOUT_MACHINE, CYCLE_MACHINE], ids=["rollout", "cycle"])
def test_tables_are_complete_and_final_states_are_reachable(machine: StateMachine[RolloutState]) -> None:
    assert set(machine.transitions) == set(machine.states)
    reachable, todo = {machine.initial}, [machine.initial]
    while todo:
        for nxt in machine.transitions[todo.pop()]:
            if nxt not in reachable:
                reachable.add(nxt)
                todo.append(nxt)
    assert reachable == set(machine.states), "every state is reachable from the initial one"
    assert machine.terminal and machine.initial not in machine.terminal
    assert not machine.active & machine.terminal


def test_reserved_states_have_their_edges() -> None:
    assert RolloutState.AWAITING_LABELS in ROLLOUT_MACHINE.allowed("running")
    assert RolloutState.PROMOTED_UNVERIFIED in ROLLOUT_MACHINE.allowed("promoting")
    assert ROLLOUT_MACHINE.allowed("promoted_unverified") == {RolloutState.PROMOTED, RolloutState.ROLLED_BACK}
    assert CycleState.PAUSED in CYCLE_MACHINE.allowed("rolling_out")
    assert CycleState.ROLLING_OUT in CYCLE_MACHINE.allowed("paused")
    assert {"promoted", "rolled_back", "aborted"} == TERMINAL_STATES
    assert {"running", "promoting"} <= ACTIVE_STATES


def test_check_names_the_move_and_the_allowed_ones() -> None:
    with pytest.raises(TransitionError, match=r"'promoted' to 'running'.*nothing \(it is final\)") as info:
        ROLLOUT_MACHINE.check("#3", "promoted", "running")
    assert info.value.status_code == 409 and isinstance(info.value, ConflictError)
    with pytest.raises(StoreError, match="not a rollout state"):
        ROLLOUT_MACHINE.check("#3", "running", "exploded")


def _start(rs: RolloutStore) -> int:
    return rs.create(
        model_name=f"m-{uuid.uuid4().hex[:8]}",
        strategy="canary",
        baseline_version="1",
        candidate_version="2",
        arms=[Arm("champion", "1", 0.9), Arm("canary", "2", 0.1)],
        config={},
        actor="test",
        reason="start",
    ).id


@WALK
@given(walk=st.lists(st.sampled_from(list(RolloutState)), max_size=12))
def test_random_rollout_walks_never_store_an_illegal_move(store: Store, walk: list[RolloutState]) -> None:
    rs = RolloutStore(store, ROLLOUT_MACHINE)
    rid = _start(rs)
    stored = [rs.get(rid)]
    for target in walk:
        before = stored[-1]
        try:
            rs.transition(
                rid,
                expected_revision=before.revision,
                state=target,
                reason="walk",
                actor="t",
                kind="rollout.w",
            )
        except TransitionError:
            assert target not in ROLLOUT_MACHINE.allowed(before.state)
        now = rs.get(rid)
        if now.revision != before.revision:
            assert now.state in ROLLOUT_MACHINE.allowed(before.state), (before.state, now.state)
            assert now.terminal == (now.state in TERMINAL_STATES)
        else:
            assert now.state == before.state
        stored.append(now)
    # The timeline agrees: every recorded move is in the table.
    for event in store.events(subject=f"rollout:{rid}", kind="rollout.w", limit=None):
        assert event.data["to"] in ROLLOUT_MACHINE.allowed(event.data["from"])
    deployment = rs.deployment(stored[-1].model_name)
    assert deployment is not None
    assert (deployment.active_rollout_id is None) == stored[-1].terminal


@WALK
@given(walk=st.lists(st.sampled_from(list(CycleState)), max_size=12))
def test_random_cycle_walks_never_store_an_illegal_move(store: Store, walk: list[CycleState]) -> None:
    repo = LoopRepository(store, CYCLE_MACHINE)
    cycle = repo.create(f"m-{uuid.uuid4().hex[:8]}", "manual", "k", "walk")
    assert cycle is not None and cycle.state == CycleState.TRIGGERED
    for target in walk:
        try:
            moved = repo.transition(cycle, target, reason="walk")
        except TransitionError:
            assert target not in CYCLE_MACHINE.allowed(cycle.state)
            assert repo.get(cycle.id) == cycle  # nothing was written
            continue
        assert moved.state in CYCLE_MACHINE.allowed(cycle.state)
        assert moved.revision == cycle.revision + 1 and moved.terminal == (target in CYCLE_MACHINE.terminal)
        cycle = moved
    assert (repo.active(cycle.model_name) is None) == cycle.terminal
