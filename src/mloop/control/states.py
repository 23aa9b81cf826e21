"""The retraining cycle's state machine as data: its states and the moves between them.

::

    triggered ──► training ──► trained ──► rolling_out ──► promoted
        │  ▲          │           │  ╲  ▲              ╰──► rolled_back
        │  ╰ (waiting │           │   ╲ ╰── awaiting_approval      (`mloop approve`)
        │   for labels)           │    ╰──► promoted              (first version: champion directly)
        │             │           ╰──► rejected                   (the gate did not pass)
        │             ╰──► failed                                 (training crashed or timed out)
        ├──► failed                                               (could not start; stopped)
        ╰──► dry_run                                              (control.dry_run: recorded only)

    any state that is not final ──► paused ──► the states it may come back to;  ──► aborted

The store's :class:`~mloop.store.loop.LoopRepository` refuses any other move
(:class:`~mloop.errors.TransitionError`). ``paused`` is reserved for the console's pause of the loop
and ``aborted`` for an operator stopping a cycle; nothing enters them yet.
"""

from __future__ import annotations

from enum import StrEnum

from mloop.store.machine import StateMachine

__all__ = ["CYCLE_MACHINE", "TERMINAL_STATES", "CycleState"]


class CycleState(StrEnum):
    """Where a retraining cycle is. The value is what the store's ``loop_cycles.state`` holds."""

    # A trigger fired; the next tick starts the training (or waits for labels served since an alert).
    TRIGGERED = "triggered"
    # A training child process runs for this cycle (its pid is on the cycle).
    TRAINING = "training"
    # The training registered a version; the next tick reads its gate verdict.
    TRAINED = "trained"
    # The version passed the gates; `mloop approve VERSION` lets the rollout start (control.approval).
    AWAITING_APPROVAL = "awaiting_approval"
    # A rollout of the version runs; each tick advances it by one analysis.
    ROLLING_OUT = "rolling_out"
    # Reserved: the loop is paused; the cycle resumes where it was when the loop is resumed.
    PAUSED = "paused"
    # Final: the version is champion.
    PROMOTED = "promoted"
    # Final: the rollout rolled back or was aborted; the champion stays.
    ROLLED_BACK = "rolled_back"
    # Final: the version did not pass the gates.
    REJECTED = "rejected"
    # Final: the training crashed, timed out or could not start (the next cycle backs off).
    FAILED = "failed"
    # Final: control.dry_run recorded the trigger and did nothing.
    DRY_RUN = "dry_run"
    # Final: reserved for an operator stopping the cycle.
    ABORTED = "aborted"


S = CycleState
_RESUMABLE = frozenset({S.TRIGGERED, S.TRAINING, S.TRAINED, S.AWAITING_APPROVAL, S.ROLLING_OUT})
TRANSITIONS: dict[CycleState, frozenset[CycleState]] = {
    # TRIGGERED → TRIGGERED records that the cycle waits for labels (its data changes, not its state).
    S.TRIGGERED: frozenset({S.TRIGGERED, S.TRAINING, S.DRY_RUN, S.FAILED, S.PAUSED, S.ABORTED}),
    S.TRAINING: frozenset({S.TRAINED, S.FAILED, S.PAUSED, S.ABORTED}),
    S.TRAINED: frozenset(
        {S.REJECTED, S.PROMOTED, S.AWAITING_APPROVAL, S.ROLLING_OUT, S.FAILED, S.PAUSED, S.ABORTED}
    ),
    S.AWAITING_APPROVAL: frozenset({S.ROLLING_OUT, S.PAUSED, S.ABORTED}),
    S.ROLLING_OUT: frozenset({S.PROMOTED, S.ROLLED_BACK, S.PAUSED, S.ABORTED}),
    S.PAUSED: _RESUMABLE | {S.ABORTED},
    S.PROMOTED: frozenset(),
    S.ROLLED_BACK: frozenset(),
    S.REJECTED: frozenset(),
    S.FAILED: frozenset(),
    S.DRY_RUN: frozenset(),
    S.ABORTED: frozenset(),
}

CYCLE_MACHINE: StateMachine[CycleState] = StateMachine(
    "loop cycle", CycleState, CycleState.TRIGGERED, TRANSITIONS, active=_RESUMABLE | {S.PAUSED}
)
"""The table :class:`~mloop.store.loop.LoopRepository` enforces."""

TERMINAL_STATES: frozenset[CycleState] = CYCLE_MACHINE.terminal
"""States after which a cycle never changes again."""
