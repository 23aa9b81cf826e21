"""Three calls for the closed loop (``mloop run``): start a rollout, advance it, read the current one.

Each opens the store for ``settings`` and closes it again, so callers hold no connections between
ticks. Terminal states are ``promoted``, ``rolled_back`` and ``aborted`` (:data:`TERMINAL_STATES`).
"""

from __future__ import annotations

from mloop.config import Settings
from mloop.rollout.controller import RolloutController
from mloop.store.rollouts import Rollout

__all__ = ["advance", "current", "start_rollout"]


def start_rollout(
    settings: Settings,
    version: str | int | None = None,
    strategy: str | None = None,
    *,
    actor: str = "loop",
    reason: str | None = None,
) -> Rollout:
    """Start rolling out ``version`` (default ``@challenger``) with ``strategy`` (default
    ``settings.rollout.strategy``); ``direct`` returns an already promoted rollout."""
    ctl = RolloutController(settings)
    try:
        return ctl.start(version, strategy, actor=actor, reason=reason)
    finally:
        ctl.close()


def advance(settings: Settings, rollout_id: int | None = None, *, actor: str = "loop") -> Rollout:
    """One analysis and at most one transition of the rollout (default: the active one)."""
    ctl = RolloutController(settings)
    try:
        return ctl.advance(rollout_id, actor=actor)
    finally:
        ctl.close()


def current(settings: Settings) -> Rollout | None:
    """The active rollout of ``settings.model.name`` (running or promoting), or None."""
    ctl = RolloutController(settings)
    try:
        return ctl.current()
    finally:
        ctl.close()
