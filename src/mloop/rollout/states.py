"""The rollout state machine as data: its states and the moves between them.

::

    running ──► promoting ──► promoted
       │  ▲          │  ╲──► promoted_unverified ──► promoted | rolled_back
       │  │          ╰──► rolled_back                (the alias move failed: back to the baseline)
       │  ╰── awaiting_labels ──► promoting | rolled_back | aborted
       ├──► rolled_back                              (a check failed, or an operator rolled it back)
       ╰──► aborted                                  (stopped without a verdict)

The store's :class:`~mloop.store.rollouts.RolloutStore` refuses any other move
(:class:`~mloop.errors.TransitionError`). ``awaiting_labels`` and ``promoted_unverified`` are
reserved for the decisions work (a rollout that waits for delayed labels before its verdict, a
promotion recorded before its verification); nothing enters them yet.
"""

from __future__ import annotations

from enum import StrEnum

from mloop.store.machine import StateMachine

__all__ = ["ACTIVE_STATES", "ROLLOUT_MACHINE", "TERMINAL_STATES", "RolloutState"]


class RolloutState(StrEnum):
    """Where a rollout is. The value is what the store's ``rollouts.state`` column holds."""

    # Arms serve traffic at their weights; each advance analyses them and may step, promote or roll back.
    RUNNING = "running"
    # Reserved: traffic is split as in RUNNING but the verdict waits for delayed labels.
    AWAITING_LABELS = "awaiting_labels"
    # The winner has all traffic and the promoter (holding the promotion lease) moves the aliases.
    PROMOTING = "promoting"
    # Final: the winner is champion, the baseline is `previous`.
    PROMOTED = "promoted"
    # Reserved: the aliases moved but the promotion is not verified yet (verification decides).
    PROMOTED_UNVERIFIED = "promoted_unverified"
    # Final: a check failed or someone rolled it back; the baseline has all traffic.
    ROLLED_BACK = "rolled_back"
    # Final: stopped without a verdict; the baseline has all traffic, the champion never moved.
    ABORTED = "aborted"


S = RolloutState
TRANSITIONS: dict[RolloutState, frozenset[RolloutState]] = {
    # RUNNING → RUNNING is a canary step (weights and step change, the state does not).
    S.RUNNING: frozenset({S.RUNNING, S.AWAITING_LABELS, S.PROMOTING, S.ROLLED_BACK, S.ABORTED}),
    S.AWAITING_LABELS: frozenset({S.AWAITING_LABELS, S.RUNNING, S.PROMOTING, S.ROLLED_BACK, S.ABORTED}),
    S.PROMOTING: frozenset({S.PROMOTED, S.PROMOTED_UNVERIFIED, S.ROLLED_BACK}),
    S.PROMOTED_UNVERIFIED: frozenset({S.PROMOTED, S.ROLLED_BACK}),
    S.PROMOTED: frozenset(),
    S.ROLLED_BACK: frozenset(),
    S.ABORTED: frozenset(),
}

ROLLOUT_MACHINE: StateMachine[RolloutState] = StateMachine(
    "rollout",
    RolloutState,
    RolloutState.RUNNING,
    TRANSITIONS,
    active=frozenset({S.RUNNING, S.AWAITING_LABELS, S.PROMOTING}),
)
"""The table :class:`~mloop.store.rollouts.RolloutStore` enforces."""

TERMINAL_STATES: frozenset[RolloutState] = ROLLOUT_MACHINE.terminal
"""States a rollout never leaves."""
ACTIVE_STATES: frozenset[RolloutState] = ROLLOUT_MACHINE.active
"""States in which a rollout owns the deployment's traffic (``promoting``: alias move pending)."""
