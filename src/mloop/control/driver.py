"""The controller's view of rollouts: start one for a version, and advance it by one analysis."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mloop.config import Settings

if TYPE_CHECKING:
    from mloop.rollout import RolloutController

__all__ = ["RolloutDriver"]


class RolloutDriver:
    """Backed by :mod:`mloop.rollout`; a separate small class so the loop's state machine can be
    tested with a scripted driver and so the loop never reaches into rollout internals.

    It keeps one :class:`~mloop.rollout.RolloutController` on the loop's store, so a tick opens no
    store, registry or prediction log of its own.
    """

    def __init__(self, settings: Settings, store: Any) -> None:
        self.settings = settings
        self.store = store
        self._controller: RolloutController | None = None

    @property
    def controller(self) -> RolloutController:
        if self._controller is None:
            from mloop.rollout import RolloutController

            self._controller = RolloutController(self.settings, store=self.store)
        return self._controller

    def start(self, version: str, reason: str) -> int:
        """Start a rollout of ``version``; the loop's existing one of that version if there is one (a
        loop killed after starting it but before recording it on the cycle adopts it on restart)."""
        ctl = self.controller
        for existing in ctl.repo.list(self.settings.model.name, limit=20):
            if existing.candidate_version == str(version) and existing.actor == "loop":
                return int(existing.id)
        rollout = ctl.start(version, self.settings.rollout.strategy, actor="loop", reason=reason)
        return int(rollout.id)

    def advance(self, rollout_id: int) -> tuple[str, str]:
        """One analysis step; returns (state, reason). Terminal states: promoted, rolled_back, aborted."""
        rollout = self.controller.advance(rollout_id, actor="loop")
        return str(rollout.state), str(rollout.reason or "")

    def verify_promotions(self) -> list[tuple[int, str]]:
        """Look again at promotions recorded unverified; (rollout id, new state) of those that moved."""
        return [(int(r.id), str(r.state)) for r in self.controller.verify_promotions(actor="loop")]

    def close(self) -> None:
        """Close the prediction log the controller opened (the store belongs to the loop)."""
        if self._controller is not None:
            self._controller.close()
            self._controller = None
