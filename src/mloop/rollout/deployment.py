"""Champion moves outside rollouts, and the alias helpers every champion move shares.

:class:`DeploymentMoves` backs ``mloop models promote`` (:meth:`~DeploymentMoves.promote_version`)
and ``mloop rollout rollback`` after a promotion (:meth:`~DeploymentMoves.rollback_deployment`). Both
hold the store lease ``deployment:<model>`` — the one a rollout start holds too — from the check that
no rollout is active until the aliases have moved, so a promotion racing a rollout start of the same
version can never both apply: whichever takes the lease second sees what the first did and refuses.
The registry is the source of truth for aliases; the store's deployment record follows it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mloop.errors import RolloutError
from mloop.store.leases import Lease
from mloop.store.records import Deployment

if TYPE_CHECKING:
    from mloop.rollout.controller import RolloutController

__all__ = ["DEPLOYMENT_LEASE_S", "DeploymentMoves", "deployment_lease"]

DEPLOYMENT_LEASE_S = 30.0
"""How long the deployment lease lasts: longer than any alias move, short enough that a holder that
died on another host blocks ``mloop models promote`` and rollout starts only briefly."""
DEPLOYMENT_WAIT_S = 10.0
"""How long a command waits for another one holding the deployment lease before it gives up."""


def deployment_lease(ctl: RolloutController, action: str) -> Any:
    """Hold ``deployment:<model>`` for a block (a context manager); ConflictError if it stays busy."""

    def busy(held: Lease | None) -> str:
        who = f" ({held.owner})" if held is not None else ""
        return (
            f"Another command is changing the deployment of {ctl.model_name!r}{who}, so this {action} "
            f"did not start; check `mloop status` and retry."
        )

    return ctl.store.leases.hold(
        f"deployment:{ctl.model_name}", DEPLOYMENT_LEASE_S, wait_s=DEPLOYMENT_WAIT_S, busy=busy
    )


class Aliases:
    """Alias moves that record nothing when the alias is already right (so a retried step is quiet)."""

    def __init__(self, ctl: RolloutController) -> None:
        self._ctl = ctl

    def move(self, alias: str, version: str | int, *, reason: str, actor: str) -> None:
        """Point ``alias`` at ``version`` unless it already is."""
        now = self._ctl.registry.by_alias(alias)
        if now is not None and str(now.version) == str(version):
            return
        self._ctl.registry.set_alias(alias, version, reason=reason, actor=actor)

    def drop_challenger(
        self, version: Any, *, reason: str, actor: str, renew: Callable[[], None] | None = None
    ) -> None:
        """Remove the ``challenger`` alias if it names ``version`` (promoted or rolled back, it is no
        longer one); ``renew`` runs just before the move (a promoter renews its lease there)."""
        challenger = self._ctl.registry.by_alias("challenger")
        if challenger is not None and str(challenger.version) == str(version):
            if renew is not None:
                renew()
            self._ctl.registry.delete_alias("challenger", reason=reason, actor=actor)


class DeploymentMoves:
    """Move the champion without a rollout (see the module docstring)."""

    def __init__(self, ctl: RolloutController, aliases: Aliases) -> None:
        self._ctl = ctl
        self._aliases = aliases

    def rollback_deployment(self, *, actor: str = "mloop", reason: str | None = None) -> Deployment:
        """After a promotion: swap the registry's ``champion`` and ``previous`` aliases.

        The target is the version ``previous`` points at (the registry is the source of truth), and
        the champion it replaces becomes ``previous`` — like ``cd -``, a second rollback rolls forward
        again. The store's deployment record follows (``deployment.rolled_back`` event)."""
        with deployment_lease(self._ctl, "rollback"):
            self._refuse_during_rollout("roll it back with `mloop rollout rollback` first")
            registry, name = self._ctl.registry, self._ctl.model_name
            champion, previous = registry.by_alias("champion"), registry.by_alias("previous")
            if champion is None or previous is None:
                raise RolloutError(
                    f"Model {name!r} has no `previous` version to roll back to (a promotion sets it on "
                    "the champion it replaces); see `mloop models list`."
                )
            if str(previous.version) == str(champion.version):
                raise RolloutError(
                    f"Both `champion` and `previous` of {name!r} are v{champion.version}; there is "
                    "nothing to roll back to. Promote a version with `mloop models promote VERSION`."
                )
            target = str(previous.version)
            why = reason or f"roll back to v{target} by {actor}"
            return self._move_champion(
                target, str(champion.version), actor=actor, reason=why, kind="deployment.rolled_back"
            )

    def promote_version(
        self, version: str | int, *, actor: str = "mloop", reason: str = "manual promotion"
    ) -> Deployment:
        """Make ``version`` champion without a rollout (``mloop models promote``): the champion it
        replaces becomes ``previous``, its ``challenger`` alias goes, and the store's deployment
        record follows (``deployment.promoted`` event). Nothing moves if it is champion already."""
        with deployment_lease(self._ctl, "promotion"):
            self._refuse_during_rollout("promote it with `mloop rollout promote` or abort it first")
            target = str(self._ctl.registry.get(version).version)
            champion = self._ctl.registry.by_alias("champion")
            old = None if champion is None else str(champion.version)
            if old == target:
                return self._sync(target, actor)
            return self._move_champion(target, old, actor=actor, reason=reason, kind="deployment.promoted")

    def _sync(self, target: str, actor: str) -> Deployment:
        """``target`` is the registry's champion already: bring the store's record along if it drifted."""
        repo, name = self._ctl.repo, self._ctl.model_name
        dep = repo.record_champion(name, target)
        if dep.champion_version == target:
            return dep
        return repo.set_champion(
            name,
            target,
            expected_revision=dep.revision,
            reason=f"the registry's champion is v{target}; the store's record follows it",
            actor=actor,
            kind="deployment.synced",
        )

    def _refuse_during_rollout(self, hint: str) -> None:
        active = self._ctl.current()
        if active is not None:
            raise RolloutError(
                f"Model {self._ctl.model_name!r} has rollout #{active.id} active ({active.state}); {hint}."
            )

    def _move_champion(
        self, target: str, old: str | None, *, actor: str, reason: str, kind: str
    ) -> Deployment:
        """Record ``target`` as champion (``old`` as previous) in the store, then move the aliases.

        The store's compare-and-set comes first, so of two concurrent commands only one moves
        aliases. A store record that drifted from the registry (an alias moved behind its back) is
        first brought back to the registry's champion."""
        repo, name = self._ctl.repo, self._ctl.model_name
        dep = self._sync(old, actor) if old is not None else repo.record_champion(name, old)
        moved = repo.set_champion(
            name, target, expected_revision=dep.revision, reason=reason, actor=actor, kind=kind
        )
        if old is not None:
            self._aliases.move("previous", old, reason=f"replaced by v{target}", actor=actor)
        self._aliases.move("champion", target, reason=reason, actor=actor)
        self._aliases.drop_challenger(target, reason=f"v{target} promoted to champion", actor=actor)
        return moved
