"""The decisions that end a rollout: promote (with the promotion lease) and roll back.

Promotion first claims the rollout (``promoting``, all traffic to the winner), then moves the
``champion`` alias in MLflow, then records ``promoted``. The promoter holds the store lease
``rollout-promote:<id>`` from before the claim until ``promoted`` is recorded, renewing it before
every alias move, so a serving process auto-advancing the same rollout leaves a promotion in flight
to the command that started it; a promotion whose promoter died (its lease expired, or its process
is gone from this host: :meth:`~mloop.store.Leases.acquire` takes such a lease over) is finished by
the next :meth:`~mloop.rollout.RolloutController.advance`. Alias moves are skipped when the alias is
already where it should be, so finishing a promotion never records a move twice. Asking for the
state a rollout is already in (promote a promoted rollout, roll back a rolled-back one) returns it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from mloop.errors import ConflictError, MloopError, RolloutError, TrackingError
from mloop.rollout import plan
from mloop.rollout.deployment import Aliases
from mloop.rollout.states import RolloutState
from mloop.store.leases import process_token
from mloop.store.records import Rollout
from mloop.store.rollouts import RolloutStore

if TYPE_CHECKING:
    from mloop.rollout.controller import RolloutController

__all__ = ["PROMOTION_LEASE_S", "Promotions", "promoted_version"]

log = logging.getLogger("mloop.rollout")

PROMOTION_LEASE_S = 30.0
"""How long a promotion's lease lasts without renewal (renewed before every alias move). A promoter
on another host that dies holds the promotion up this long; one on this host, not at all."""
_POLL_S = 0.2


def promoted_version(r: Rollout) -> str:
    """The version ``r`` gives all traffic to once promoting (its winner)."""
    return next(
        (a.version for a in r.arms if a.weight >= 1.0 and a.arm != plan.BASELINE), r.candidate_version
    )


class Promotions:
    """Promote and roll back the rollouts of one controller (see the module docstring)."""

    def __init__(self, ctl: RolloutController, aliases: Aliases) -> None:
        self._ctl = ctl
        self._aliases = aliases

    @property
    def _repo(self) -> RolloutStore:
        return self._ctl.repo

    # -- promote -------------------------------------------------------------------------------
    def promote(
        self,
        rollout_id: int | None = None,
        *,
        version: str | int | None = None,
        actor: str = "mloop",
        reason: str | None = None,
        analysis: dict[str, Any] | None = None,
        wait: bool = True,
    ) -> Rollout:
        """Give all traffic to the winner and move the ``champion`` alias to it.

        A rollout already promoted (to ``version``, if given) is returned unchanged. While another
        process promotes it, waits for that promotion to end (``wait``) or returns it as it is.
        """
        r = self._ctl.get(rollout_id)
        if r.state in (RolloutState.PROMOTED, RolloutState.PROMOTED_UNVERIFIED):
            return self._already_promoted(r, version)
        lease = self._take(r.id)
        if lease is None:
            if not wait:
                return self._repo.get(r.id)
            r, lease = self._await(r.id)
            if lease is None:
                return self._already_promoted(r, version)
        try:
            r = self._repo.get(r.id)  # fresh under the lease
            if r.state in (RolloutState.PROMOTED, RolloutState.PROMOTED_UNVERIFIED):
                return self._already_promoted(r, version)
            if r.state == RolloutState.PROMOTING:  # its promoter died: finish it
                return self.finish(r, actor=actor, reason=reason or r.reason, lease=lease)
            require_running(r, "promote")
            target = self._target(r, version)
            arm = next(a.arm for a in r.arms if a.version == target and a.arm != plan.BASELINE)
            weights = {a.arm: (1.0 if a.arm == arm else 0.0) for a in r.arms if not a.shadow}
            if any(a.shadow for a in r.arms):
                weights = {**{a.arm: 0.0 for a in r.arms}, arm: 1.0}
            why = reason or f"promote v{target} by {actor}"
            claimed = self._repo.transition(
                r.id,
                expected_revision=r.revision,
                state=RolloutState.PROMOTING,
                weights=weights,
                analysis=analysis,
                reason=why,
                actor=actor,
                kind="rollout.promoting",
                data={"version": target},
            )
            return self.finish(claimed, actor=actor, reason=why, target=target, lease=lease)
        finally:
            self._release(r.id, lease)

    def _already_promoted(self, r: Rollout, version: str | int | None) -> Rollout:
        if r.state not in (RolloutState.PROMOTED, RolloutState.PROMOTED_UNVERIFIED):
            raise RolloutError(
                f"Rollout #{r.id} is {r.state}; only a running rollout can be promoted. "
                "Check `mloop rollout status`."
            )
        done = promoted_version(r)
        if version is not None and str(version).lstrip("v") != done:
            raise RolloutError(
                f"Rollout #{r.id} already promoted v{done}; start a new rollout to promote "
                f"v{str(version).lstrip('v')}."
            )
        return r

    def _target(self, r: Rollout, version: str | int | None) -> str:
        candidates = [a.version for a in r.arms if a.arm != plan.BASELINE]
        if version is not None:
            wanted = str(version).lstrip("v")
            if wanted not in candidates:
                raise RolloutError(
                    f"Rollout #{r.id} has no arm serving v{wanted}; its candidates are {candidates}."
                )
            return wanted
        if r.strategy == "ab" and len(candidates) > 1:
            winner = (r.analysis or {}).get("winner")
            arm = r.arm(winner) if winner else None
            if arm is None or arm.arm == plan.BASELINE:
                raise RolloutError(
                    f"A/B rollout #{r.id} has no winning challenger yet; name the version with --version."
                )
            return arm.version
        return r.candidate_version

    def adopt(self, r: Rollout, *, actor: str, reason: str) -> Rollout:
        """``r`` is promoting: finish it if its promoter is gone, else leave it to its promoter."""
        lease = self._take(r.id)
        if lease is None:
            return r
        try:
            r = self._repo.get(r.id)
            if r.state != RolloutState.PROMOTING:
                return r
            return self.finish(r, actor=actor, reason=reason, lease=lease)
        finally:
            self._release(r.id, lease)

    def finish(
        self,
        r: Rollout,
        *,
        actor: str,
        reason: str,
        target: str | None = None,
        lease: str | None = None,
    ) -> Rollout:
        """Move the aliases of a ``promoting`` rollout and record it ``promoted`` (rolled back if the
        registry refuses)."""
        target = target or promoted_version(r)
        try:
            self._hold(r.id, lease)
            self._aliases.move("champion", target, reason=f"rollout #{r.id}: {reason}", actor=actor)
            # The promoted version is no longer a challenger; the one it replaced stays reachable
            # as `previous` (the rollback target), as with `mloop models promote`.
            self._aliases.drop_challenger(
                target, reason=f"v{target} promoted", actor=actor, renew=lambda: self._hold(r.id, lease)
            )
            if r.baseline_version and str(r.baseline_version) != str(target):
                self._hold(r.id, lease)
                self._aliases.move(
                    "previous", r.baseline_version, reason=f"replaced by v{target}", actor=actor
                )
        except TrackingError as exc:
            return self.rollback(
                r.id, actor=actor, reason=f"promotion failed: {exc.message}", check="promote", lease=lease
            )
        unverified = bool((r.analysis or {}).get("promote_unverified"))
        return self._repo.transition(
            r.id,
            expected_revision=r.revision,
            state=RolloutState.PROMOTED_UNVERIFIED if unverified else RolloutState.PROMOTED,
            champion=target,
            actor=actor,
            reason=reason,
            kind="rollout.promoted_unverified" if unverified else "rollout.promoted",
            data={"version": target, "previous": r.baseline_version, "verified": not unverified},
        )

    # -- roll back -----------------------------------------------------------------------------
    def rollback(
        self,
        rollout_id: int | None = None,
        *,
        actor: str = "mloop",
        reason: str | None = None,
        check: str | None = None,
        analysis: dict[str, Any] | None = None,
        lease: str | None = None,
    ) -> Rollout:
        """Send all traffic back to the baseline and mark the rollout rolled back (``check``: why).

        A rollout already rolled back is returned unchanged. ``lease``: the promotion lease the
        caller holds (a promotion that failed rolls itself back)."""
        r = self._ctl.get(rollout_id)
        if r.state == RolloutState.ROLLED_BACK:
            return r
        _refuse_rollback(r)
        owned = None
        if r.state == RolloutState.PROMOTING and lease is None:
            owned = lease = self._take(r.id)
            if lease is None:
                raise RolloutError(
                    f"Rollout #{r.id} is being promoted by another process right now; once it is "
                    "promoted, `mloop rollout rollback` returns to the previous champion."
                )
        try:
            return self._roll_back(r, actor=actor, reason=reason, check=check, analysis=analysis, lease=lease)
        finally:
            self._release(r.id, owned)

    def _roll_back(
        self,
        r: Rollout,
        *,
        actor: str,
        reason: str | None,
        check: str | None,
        analysis: dict[str, Any] | None,
        lease: str | None,
    ) -> Rollout:
        assert r.baseline_version is not None
        if r.state in (RolloutState.PROMOTING, RolloutState.PROMOTED_UNVERIFIED):
            self._hold(r.id, lease)
            self._aliases.move(
                "champion", r.baseline_version, reason=f"rollback of rollout #{r.id}", actor=actor
            )
        weights = {a.arm: (1.0 if a.arm == plan.BASELINE else 0.0) for a in r.arms}
        try:
            rolled = self._repo.transition(
                r.id,
                expected_revision=r.revision,
                state=RolloutState.ROLLED_BACK,
                weights=weights,
                analysis=analysis,
                actor=actor,
                reason=reason or f"rolled back by {actor}",
                kind="rollout.rolled_back",
                data={"check": check, "version": r.candidate_version, "baseline": r.baseline_version},
            )
        except ConflictError:
            now = self._repo.get(r.id)
            if now.state == RolloutState.ROLLED_BACK:  # someone else rolled it back first: what was asked
                return now
            raise
        # A rolled-back version is no longer a challenger (after the transition: only the winner
        # of the compare-and-set touches the alias).
        self._aliases.drop_challenger(
            r.candidate_version, reason=f"v{r.candidate_version} rolled back", actor=actor
        )
        return rolled

    # -- the promotion lease -------------------------------------------------------------------
    def _take(self, rollout_id: int) -> str | None:
        """Take the lease marking this process as the promoter of ``rollout_id``: its owner token, or
        None while another live promoter holds it (a dead one on this host is replaced at once)."""
        owner = process_token()
        if self._ctl.store.leases.acquire(_lease_name(rollout_id), owner, PROMOTION_LEASE_S):
            return owner
        return None

    def _await(self, rollout_id: int) -> tuple[Rollout, str | None]:
        """Wait while another process promotes ``rollout_id``: the rollout once that promotion ended
        (lease None), or with the lease if its promoter gave it up without finishing."""
        deadline = time.monotonic() + PROMOTION_LEASE_S + 5.0
        while True:
            r = self._repo.get(rollout_id)
            if r.terminal:
                return r, None
            lease = self._take(rollout_id)
            if lease is not None:
                return r, lease
            if time.monotonic() > deadline:
                raise RolloutError(
                    f"Rollout #{rollout_id} is being promoted by another process; check "
                    "`mloop rollout status` in a moment."
                )
            time.sleep(_POLL_S)

    def _hold(self, rollout_id: int, lease: str | None) -> None:
        if lease is not None and not self._ctl.store.leases.renew(
            _lease_name(rollout_id), lease, PROMOTION_LEASE_S
        ):
            raise ConflictError(
                f"Rollout #{rollout_id}'s promotion was taken over by another process (this one was "
                "too slow); nothing more was done here. Check `mloop rollout status`."
            )

    def _release(self, rollout_id: int, lease: str | None) -> None:
        if lease is not None:
            try:
                self._ctl.store.leases.release(_lease_name(rollout_id), lease)
            except MloopError as exc:  # it expires on its own
                log.warning("Could not release the promotion lease of rollout #%s: %s", rollout_id, exc)


def _lease_name(rollout_id: int) -> str:
    return f"rollout-promote:{rollout_id}"


def require_running(r: Rollout, action: str) -> None:
    """RolloutError unless ``r`` is running or awaiting labels (the states a promote or abort starts from)."""
    if r.state not in (RolloutState.RUNNING, RolloutState.AWAITING_LABELS):
        raise RolloutError(f"Rollout #{r.id} is {r.state}; only a running rollout can {action}.")


def _refuse_rollback(r: Rollout) -> None:
    if r.state == RolloutState.PROMOTED:
        raise RolloutError(
            f"Rollout #{r.id} is already promoted (v{promoted_version(r)} is champion); to go "
            "back to the previous champion, run `mloop rollout rollback` without --id (it rolls "
            "the deployment back when no rollout is active)."
        )
    if r.terminal:
        raise RolloutError(
            f"Rollout #{r.id} was {r.state}; the champion never moved, so there is nothing to roll back."
        )
    if r.baseline_version is None:
        raise RolloutError(f"Rollout #{r.id} has no baseline to roll back to (it was the first deployment).")
