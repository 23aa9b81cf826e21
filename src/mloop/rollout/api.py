"""Three one-shot calls: start a rollout, advance it, read the current one.

Each builds a :class:`RolloutController` for the call and closes what it opened, so a caller holds
no connections afterwards; pass ``store`` to reuse an open store. Something that calls repeatedly
(the loop's :class:`~mloop.control.RolloutDriver`) keeps one controller instead, so a tick opens no
store, registry or prediction log. Terminal states are :data:`~mloop.rollout.TERMINAL_STATES`.
"""

from __future__ import annotations

from mloop.config import Settings
from mloop.rollout.controller import RolloutController
from mloop.store import Store
from mloop.store.rollouts import Rollout

__all__ = ["advance", "current", "start_rollout"]


def start_rollout(
    settings: Settings,
    version: str | int | None = None,
    strategy: str | None = None,
    *,
    actor: str = "loop",
    reason: str | None = None,
    store: Store | None = None,
) -> Rollout:
    """Start rolling out ``version`` (default ``@challenger``) with ``strategy`` (default
    ``settings.rollout.strategy``); ``direct`` returns an already promoted rollout."""
    ctl = RolloutController(settings, store=store)
    try:
        return ctl.start(version, strategy, actor=actor, reason=reason)
    finally:
        ctl.close()


def advance(
    settings: Settings, rollout_id: int | None = None, *, actor: str = "loop", store: Store | None = None
) -> Rollout:
    """One analysis and at most one transition of the rollout (default: the active one)."""
    ctl = RolloutController(settings, store=store)
    try:
        return ctl.advance(rollout_id, actor=actor)
    finally:
        ctl.close()


def current(settings: Settings, *, store: Store | None = None) -> Rollout | None:
    """The active rollout of ``settings.model.name`` (running, promoting), or None."""
    ctl = RolloutController(settings, store=store)
    try:
        return ctl.current()
    finally:
        ctl.close()
