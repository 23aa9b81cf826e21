"""The rollout state machine: start, advance one analysis at a time, promote, roll back, abort.

States: ``running`` → ``promoting`` → ``promoted``; ``running`` → ``rolled_back`` | ``aborted``.
Everything lives in the store, so any process may drive a rollout and a restarted one resumes where
the store says it is; each transition is compare-and-set on the rollout's revision, so a step is never
applied twice and two concurrent promote/rollback commands cannot both apply (the loser gets
:class:`~mloop.errors.ConflictError`). Promotion first claims the rollout (``promoting``, all traffic to
the winner), then moves the ``champion`` alias in MLflow, then records ``promoted``. The promoter holds
the store lease ``rollout-promote:<id>`` from before the claim until ``promoted`` is recorded, so a
serving process auto-advancing the same rollout leaves a promotion in flight to the command that
started it; a promotion whose promoter died (its lease expired, or its process is gone from this
host) is finished by the next :meth:`RolloutController.advance`. Alias moves are skipped when the
alias is already where it should be, so finishing a promotion never records a move twice.

Asking for the state a rollout is already in (promote a promoted rollout, roll back a rolled-back
one, abort an aborted one) returns it unchanged. After a promotion,
:meth:`RolloutController.rollback_deployment` swaps the registry's ``champion`` and ``previous``
aliases (``cd -``: a second rollback rolls forward again); :meth:`RolloutController.promote_version`
(``mloop models promote``) moves them outside a rollout. Both keep the store's deployment record
equal to the registry, which is the source of truth.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from mloop.config import Settings
from mloop.errors import ConflictError, MloopError, RolloutError, TrackingError
from mloop.rollout import plan
from mloop.rollout.abtest import compare_arms
from mloop.rollout.analysis import analyze_step, shadow_report
from mloop.rollout.stats import ArmStats, collect_stats
from mloop.store import Store, open_store
from mloop.store.rollouts import Deployment, Rollout, RolloutStore
from mloop.store.schema import leases as leases_t

__all__ = ["RolloutController"]

log = logging.getLogger("mloop.rollout")

PROMOTION_LEASE_S = 30.0
"""How long a promotion's lease lasts without renewal (renewed before every alias move). A promoter
on another host that dies holds the promotion up this long; one on this host, not at all."""
_POLL_S = 0.2


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid > 0
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


class RolloutController:
    """Drive the rollouts of one model (``settings.model.name`` unless ``model_name`` is given)."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        registry: Any = None,
        predlog: Any = None,
        model_name: str | None = None,
    ) -> None:
        self.settings = settings
        self.cfg = settings.rollout
        self.model_name = model_name or settings.model.name
        self._owns_store = store is None
        self.store = store if store is not None else open_store(settings.store_url)
        self.repo = RolloutStore(self.store)
        self._registry = registry
        self._predlog = predlog
        self.classification = settings.model.task == "classification"

    @property
    def registry(self) -> Any:
        if self._registry is None:
            from mloop.tracking import Registry

            self._registry = Registry(self.settings, events=self.store, name=self.model_name)
        return self._registry

    @property
    def predlog(self) -> Any:
        if self._predlog is None:
            from mloop.predlog import open_prediction_log

            self._predlog = open_prediction_log(self.settings.prediction_log_url)
        return self._predlog

    def close(self) -> None:
        if self._predlog is not None and hasattr(self._predlog, "close"):
            self._predlog.close()
        if self._owns_store:
            self.store.close()

    # -- reads ---------------------------------------------------------------------------------
    def current(self) -> Rollout | None:
        """The active rollout (running or promoting), if any."""
        return self.repo.active(self.model_name)

    def latest(self) -> Rollout | None:
        found = self.repo.list(self.model_name, limit=1)
        return found[0] if found else None

    def get(self, rollout_id: int | None = None) -> Rollout:
        """Rollout ``rollout_id``, or the active one (else the latest) when None."""
        if rollout_id is not None:
            r = self.repo.get(rollout_id)
            if r.model_name != self.model_name:
                raise RolloutError(
                    f"Rollout #{rollout_id} belongs to {r.model_name!r}, not {self.model_name!r}."
                )
            return r
        found = self.current() or self.latest()
        if found is None:
            raise RolloutError(
                f"Model {self.model_name!r} has no rollout; start one with `mloop rollout start`."
            )
        return found

    def deployment(self) -> Deployment | None:
        return self.repo.deployment(self.model_name)

    # -- start ---------------------------------------------------------------------------------
    def start(
        self,
        version: str | int | None = None,
        strategy: str | None = None,
        *,
        versions: Sequence[str | int] | None = None,
        weights: Sequence[float] | None = None,
        actor: str = "mloop",
        reason: str | None = None,
    ) -> Rollout:
        """Start a rollout of ``version`` (default ``@challenger``) with ``strategy`` (default from
        settings); A/B may compare several ``versions``. ``direct`` promotes at once."""
        strategy = strategy or self.cfg.strategy
        plan.validate(self.cfg, strategy)
        refs = list(versions) if versions else [version if version is not None else "@challenger"]
        candidates = [str(self.registry.get(ref).version) for ref in refs]
        champion = self.registry.by_alias("champion")
        baseline = None if champion is None else str(champion.version)
        if baseline is None and strategy != "direct":
            raise RolloutError(
                f"Model {self.model_name!r} has no champion to compare with, so a {strategy} rollout "
                "cannot run; start with --strategy direct."
            )
        if baseline in candidates or len(set(candidates)) != len(candidates):
            raise RolloutError(
                f"Version(s) {candidates} to roll out must differ from each other and from the champion "
                f"(v{baseline}); train a new version or pick another one."
            )
        arms = plan.initial_arms(strategy, baseline, candidates, self.cfg, weights)
        config = {
            **self.cfg.model_dump(mode="json"),
            "strategy": strategy,
            "task": self.settings.model.task,
            "step_base_requests": 0,
        }
        rollout = self.repo.create(
            model_name=self.model_name,
            strategy=strategy,
            baseline_version=baseline,
            candidate_version=candidates[0],
            arms=arms,
            config=config,
            actor=actor,
            reason=reason or f"{strategy} rollout of v{', v'.join(candidates)} against v{baseline}",
        )
        if strategy == "direct":
            return self.promote(
                rollout.id, actor=actor, reason="direct strategy: the new version takes all traffic"
            )
        return rollout

    # -- advance -------------------------------------------------------------------------------
    def advance(self, rollout_id: int | None = None, *, actor: str = "rollout") -> Rollout:
        """Run one analysis of the rollout and apply at most one transition; returns the new state."""
        r = self.get(rollout_id)
        if r.terminal:
            return r
        if r.state == "promoting":
            return self._adopt_promotion(r, actor=actor, reason=r.reason)
        if r.strategy == "direct":
            return self.promote(r.id, actor=actor, wait=False)
        stats = self.stats(r)
        if r.strategy == "canary":
            return self._advance_canary(r, stats, actor)
        guard = self._error_guard(r, stats)
        if guard is not None:
            return self.rollback(r.id, actor=actor, reason=guard, check="error_rate")
        if r.strategy == "ab":
            report = compare_arms(stats, plan.BASELINE, self.cfg, classification=self.classification)
        else:
            report = shadow_report(stats[plan.BASELINE], stats["shadow"], self.classification)
        report["arms"] = {a: s.summary(self.classification) for a, s in stats.items()}
        return self._save(r, report)

    def stats(self, r: Rollout) -> dict[str, ArmStats]:
        """Per-arm stats of ``r`` from the store's counters, the prediction log and feedback."""
        frame = self.predlog.read(model_name=r.model_name, since=r.created_at)
        ids = frame["prediction_id"].astype(str).tolist() if not frame.empty else []
        labels = self.store.feedback(ids) if ids else {}
        return collect_stats(r, self.repo.counters(r.id), frame, labels, classification=self.classification)

    def _advance_canary(self, r: Rollout, stats: dict[str, ArmStats], actor: str) -> Rollout:
        canary = stats["canary"]
        base_requests = int(r.analysis.get("step_base_requests", 0))
        held = (datetime.now(UTC) - r.step_started_at).total_seconds()
        a = analyze_step(
            stats[plan.BASELINE],
            canary,
            self.cfg,
            classification=self.classification,
            step_requests=canary.requests - base_requests,
            held_s=held,
        )
        report = {
            **a.to_dict(),
            "step": r.step,
            "percent": self.cfg.steps[r.step],
            "step_base_requests": base_requests,
        }
        if a.verdict == "wait" and held > self.cfg.max_wait_s:
            report.update(
                verdict="fail",
                failing="traffic",
                reason=f"not enough traffic after {held:.0f} s (rollout.max_wait_s): {a.reason}",
            )
            return self.rollback(r.id, actor=actor, reason=report["reason"], check="traffic", analysis=report)
        if a.verdict == "fail":
            return self.rollback(r.id, actor=actor, reason=a.reason, check=a.failing, analysis=report)
        if a.verdict == "wait":
            return self._save(r, report)
        if r.step + 1 >= len(self.cfg.steps):
            return self.promote(
                r.id,
                actor=actor,
                reason=f"canary passed every step ({a.reason})",
                analysis=report,
                wait=False,
            )
        nxt = r.step + 1
        report["step_base_requests"] = canary.requests
        weights = plan.canary_weights(self.cfg, nxt)
        return self.repo.transition(
            r.id,
            expected_revision=r.revision,
            step=nxt,
            weights=weights,
            analysis=report,
            actor=actor,
            reason=(
                f"step {r.step + 1} ({self.cfg.steps[r.step]:g}%) passed; canary at {self.cfg.steps[nxt]:g}%"
            ),
            kind="rollout.step",
            data={"step": nxt, "checks": [c.name for c in a.checks if c.passed]},
        )

    def _error_guard(self, r: Rollout, stats: dict[str, ArmStats]) -> str | None:
        for name, s in stats.items():
            if name == plan.BASELINE or s.requests < self.cfg.min_requests_per_step:
                continue
            if s.error_rate > self.cfg.max_error_rate:
                return (
                    f"error_rate check failed: arm {name} (v{s.version}) failed {s.errors} of {s.requests} "
                    f"requests ({s.error_rate:.2%} > {self.cfg.max_error_rate:.2%})"
                )
        return None

    def _save(self, r: Rollout, report: dict[str, Any]) -> Rollout:
        try:
            return self.repo.save_analysis(r.id, expected_revision=r.revision, analysis=report)
        except ConflictError:
            return self.repo.get(r.id)  # someone else moved it on; their state wins

    # -- decisions -----------------------------------------------------------------------------
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
        r = self.get(rollout_id)
        if r.state == "promoted":
            return self._already_promoted(r, version)
        lease = self._take_promotion(r.id)
        if lease is None:
            if not wait:
                return self.repo.get(r.id)
            r, lease = self._await_promotion(r.id)
            if lease is None:
                return self._already_promoted(r, version)
        try:
            r = self.repo.get(r.id)  # fresh under the lease
            if r.state == "promoted":
                return self._already_promoted(r, version)
            if r.state == "promoting":  # its promoter died: finish it
                return self._finish_promotion(r, actor=actor, reason=reason or r.reason, lease=lease)
            self._require_running(r, "promote")
            target = self._promotion_target(r, version)
            arm = next(a.arm for a in r.arms if a.version == target and a.arm != plan.BASELINE)
            weights = {a.arm: (1.0 if a.arm == arm else 0.0) for a in r.arms if not a.shadow}
            if any(a.shadow for a in r.arms):
                weights = {**{a.arm: 0.0 for a in r.arms}, arm: 1.0}
            why = reason or f"promote v{target} by {actor}"
            claimed = self.repo.transition(
                r.id,
                expected_revision=r.revision,
                state="promoting",
                weights=weights,
                analysis=analysis,
                reason=why,
                actor=actor,
                kind="rollout.promoting",
                data={"version": target},
            )
            return self._finish_promotion(claimed, actor=actor, reason=why, target=target, lease=lease)
        finally:
            self._release_promotion(r.id, lease)

    def _already_promoted(self, r: Rollout, version: str | int | None) -> Rollout:
        if r.state != "promoted":
            raise RolloutError(
                f"Rollout #{r.id} is {r.state}; only a running rollout can be promoted. "
                "Check `mloop rollout status`."
            )
        done = self.promoted_version(r)
        if version is not None and str(version).lstrip("v") != done:
            raise RolloutError(
                f"Rollout #{r.id} already promoted v{done}; start a new rollout to promote "
                f"v{str(version).lstrip('v')}."
            )
        return r

    @staticmethod
    def promoted_version(r: Rollout) -> str:
        """The version ``r`` gives all traffic to once promoting (its winner)."""
        return next(
            (a.version for a in r.arms if a.weight >= 1.0 and a.arm != plan.BASELINE), r.candidate_version
        )

    # -- the promotion lease -----------------------------------------------------------------------
    @staticmethod
    def _lease_name(rollout_id: int) -> str:
        return f"rollout-promote:{rollout_id}"

    def _take_promotion(self, rollout_id: int) -> str | None:
        """Take the lease marking this process as the promoter of ``rollout_id``; its owner token, or
        None while another live promoter holds it. A holder that was a process of this host and is
        gone is replaced at once; one elsewhere when its lease expires."""
        name = self._lease_name(rollout_id)
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        if self.store.acquire_lease(name, owner, PROMOTION_LEASE_S):
            return owner
        with self.store._read(f"read lease {name!r}") as conn:
            holder = conn.execute(sa.select(leases_t.c.owner).where(leases_t.c.name == name)).scalar()
        parts = str(holder or "").rsplit(":", 2)
        if len(parts) == 3 and parts[0] == socket.gethostname() and parts[1].isdigit():
            pid = int(parts[1])
            if pid != os.getpid() and not _pid_alive(pid):
                log.warning(
                    "Promoter %s of rollout #%s is gone; taking the promotion over", holder, rollout_id
                )
                self.store.release_lease(name, str(holder))
                if self.store.acquire_lease(name, owner, PROMOTION_LEASE_S):
                    return owner
        return None

    def _await_promotion(self, rollout_id: int) -> tuple[Rollout, str | None]:
        """Wait while another process promotes ``rollout_id``: the rollout once that promotion ended
        (lease None), or with the lease if its promoter gave it up without finishing."""
        deadline = time.monotonic() + PROMOTION_LEASE_S + 5.0
        while True:
            r = self.repo.get(rollout_id)
            if r.terminal:
                return r, None
            lease = self._take_promotion(rollout_id)
            if lease is not None:
                return r, lease
            if time.monotonic() > deadline:
                raise RolloutError(
                    f"Rollout #{rollout_id} is being promoted by another process; check "
                    "`mloop rollout status` in a moment."
                )
            time.sleep(_POLL_S)

    def _hold_promotion(self, rollout_id: int, lease: str | None) -> None:
        if lease is not None and not self.store.acquire_lease(
            self._lease_name(rollout_id), lease, PROMOTION_LEASE_S
        ):
            raise ConflictError(
                f"Rollout #{rollout_id}'s promotion was taken over by another process (this one was "
                "too slow); nothing more was done here. Check `mloop rollout status`."
            )

    def _release_promotion(self, rollout_id: int, lease: str | None) -> None:
        if lease is not None:
            try:
                self.store.release_lease(self._lease_name(rollout_id), lease)
            except MloopError as exc:  # it expires on its own
                log.warning("Could not release the promotion lease of rollout #%s: %s", rollout_id, exc)

    def _adopt_promotion(self, r: Rollout, *, actor: str, reason: str) -> Rollout:
        """``r`` is promoting: finish it if its promoter is gone, else leave it to its promoter."""
        lease = self._take_promotion(r.id)
        if lease is None:
            return r
        try:
            r = self.repo.get(r.id)
            if r.state != "promoting":
                return r
            return self._finish_promotion(r, actor=actor, reason=reason, lease=lease)
        finally:
            self._release_promotion(r.id, lease)

    def _promotion_target(self, r: Rollout, version: str | int | None) -> str:
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

    def _finish_promotion(
        self,
        r: Rollout,
        *,
        actor: str,
        reason: str,
        target: str | None = None,
        lease: str | None = None,
    ) -> Rollout:
        target = target or self.promoted_version(r)
        try:
            self._hold_promotion(r.id, lease)
            self._move_alias("champion", target, reason=f"rollout #{r.id}: {reason}", actor=actor)
            # The promoted version is no longer a challenger; the one it replaced stays reachable
            # as `previous` (the rollback target), as with `mloop models promote`.
            self._drop_challenger(
                target,
                reason=f"v{target} promoted",
                actor=actor,
                renew=lambda: self._hold_promotion(r.id, lease),
            )
            if r.baseline_version and str(r.baseline_version) != str(target):
                self._hold_promotion(r.id, lease)
                self._move_alias("previous", r.baseline_version, reason=f"replaced by v{target}", actor=actor)
        except TrackingError as exc:
            return self.rollback(
                r.id, actor=actor, reason=f"promotion failed: {exc.message}", check="promote", lease=lease
            )
        return self.repo.transition(
            r.id,
            expected_revision=r.revision,
            state="promoted",
            champion=target,
            actor=actor,
            reason=reason,
            kind="rollout.promoted",
            data={"version": target, "previous": r.baseline_version},
        )

    def _drop_challenger(
        self, version: Any, *, reason: str, actor: str, renew: Callable[[], None] | None = None
    ) -> None:
        """Remove the ``challenger`` alias if it names ``version`` (promoted or rolled back, it is no
        longer one); ``renew`` runs just before the move (a promoter renews its lease there)."""
        challenger = self.registry.by_alias("challenger")
        if challenger is not None and str(challenger.version) == str(version):
            if renew is not None:
                renew()
            self.registry.delete_alias("challenger", reason=reason, actor=actor)

    def _move_alias(self, alias: str, version: str | int, *, reason: str, actor: str) -> None:
        """Point ``alias`` at ``version`` unless it already is (so a retried step records no move)."""
        now = self.registry.by_alias(alias)
        if now is not None and str(now.version) == str(version):
            return
        self.registry.set_alias(alias, version, reason=reason, actor=actor)

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
        r = self.get(rollout_id)
        if r.state == "rolled_back":
            return r
        if r.state == "promoted":
            raise RolloutError(
                f"Rollout #{r.id} is already promoted (v{self.promoted_version(r)} is champion); to go "
                "back to the previous champion, run `mloop rollout rollback` without --id (it rolls "
                "the deployment back when no rollout is active)."
            )
        if r.terminal:
            raise RolloutError(
                f"Rollout #{r.id} was {r.state}; the champion never moved, so there is nothing to roll back."
            )
        if r.baseline_version is None:
            raise RolloutError(
                f"Rollout #{r.id} has no baseline to roll back to (it was the first deployment)."
            )
        owned = None
        if r.state == "promoting" and lease is None:
            owned = lease = self._take_promotion(r.id)
            if lease is None:
                raise RolloutError(
                    f"Rollout #{r.id} is being promoted by another process right now; once it is "
                    "promoted, `mloop rollout rollback` returns to the previous champion."
                )
        try:
            return self._roll_back(r, actor=actor, reason=reason, check=check, analysis=analysis, lease=lease)
        finally:
            self._release_promotion(r.id, owned)

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
        if r.state == "promoting":
            self._hold_promotion(r.id, lease)
            self._move_alias(
                "champion", r.baseline_version, reason=f"rollback of rollout #{r.id}", actor=actor
            )
        weights = {a.arm: (1.0 if a.arm == plan.BASELINE else 0.0) for a in r.arms}
        try:
            rolled = self.repo.transition(
                r.id,
                expected_revision=r.revision,
                state="rolled_back",
                weights=weights,
                analysis=analysis,
                actor=actor,
                reason=reason or f"rolled back by {actor}",
                kind="rollout.rolled_back",
                data={"check": check, "version": r.candidate_version, "baseline": r.baseline_version},
            )
        except ConflictError:
            now = self.repo.get(r.id)
            if now.state == "rolled_back":  # someone else rolled it back first: what was asked
                return now
            raise
        # A rolled-back version is no longer a challenger (after the transition: only the winner
        # of the compare-and-set touches the alias).
        self._drop_challenger(r.candidate_version, reason=f"v{r.candidate_version} rolled back", actor=actor)
        return rolled

    def abort(
        self, rollout_id: int | None = None, *, actor: str = "mloop", reason: str | None = None
    ) -> Rollout:
        """Stop a running rollout without judging it: the baseline takes all traffic again (a
        rollout already aborted is returned unchanged)."""
        r = self.get(rollout_id)
        if r.state == "aborted":
            return r
        self._require_running(r, "abort")
        weights = {a.arm: (1.0 if a.arm == plan.BASELINE else 0.0) for a in r.arms}
        try:
            return self.repo.transition(
                r.id,
                expected_revision=r.revision,
                state="aborted",
                weights=weights,
                actor=actor,
                reason=reason or f"aborted by {actor}",
                kind="rollout.aborted",
            )
        except ConflictError:
            now = self.repo.get(r.id)
            if now.state == "aborted":
                return now
            raise

    # -- the deployment outside rollouts ---------------------------------------------------------
    def rollback_deployment(self, *, actor: str = "mloop", reason: str | None = None) -> Deployment:
        """After a promotion: swap the registry's ``champion`` and ``previous`` aliases.

        The target is the version ``previous`` points at (the registry is the source of truth), and
        the champion it replaces becomes ``previous`` — like ``cd -``, a second rollback rolls forward
        again. The store's deployment record follows (``deployment.rolled_back`` event)."""
        self._refuse_during_rollout("roll it back with `mloop rollout rollback` first")
        champion = self.registry.by_alias("champion")
        previous = self.registry.by_alias("previous")
        if champion is None or previous is None:
            raise RolloutError(
                f"Model {self.model_name!r} has no `previous` version to roll back to (a promotion "
                "sets it on the champion it replaces); see `mloop models list`."
            )
        if str(previous.version) == str(champion.version):
            raise RolloutError(
                f"Both `champion` and `previous` of {self.model_name!r} are v{champion.version}; there is "
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
        self._refuse_during_rollout("promote it with `mloop rollout promote` or abort it first")
        target = str(self.registry.get(version).version)
        champion = self.registry.by_alias("champion")
        old = None if champion is None else str(champion.version)
        if old == target:
            dep = self.repo.record_champion(self.model_name, target)
            if dep.champion_version == target:
                return dep
            return self.repo.set_champion(
                self.model_name,
                target,
                expected_revision=dep.revision,
                reason=f"the registry's champion is v{target}; the store's record follows it",
                actor=actor,
                kind="deployment.synced",
            )
        return self._move_champion(target, old, actor=actor, reason=reason, kind="deployment.promoted")

    def _refuse_during_rollout(self, hint: str) -> None:
        active = self.current()
        if active is not None:
            raise RolloutError(
                f"Model {self.model_name!r} has rollout #{active.id} active ({active.state}); {hint}."
            )

    def _move_champion(
        self, target: str, old: str | None, *, actor: str, reason: str, kind: str
    ) -> Deployment:
        """Record ``target`` as champion (``old`` as previous) in the store, then move the aliases.

        The store's compare-and-set comes first, so of two concurrent commands only one moves
        aliases. A store record that drifted from the registry (an alias moved behind its back) is
        first brought back to the registry's champion."""
        dep = self.repo.record_champion(self.model_name, old)
        if old is not None and dep.champion_version != old:
            dep = self.repo.set_champion(
                self.model_name,
                old,
                expected_revision=dep.revision,
                reason=f"the registry's champion is v{old}; the store's record follows it",
                actor=actor,
                kind="deployment.synced",
            )
        moved = self.repo.set_champion(
            self.model_name, target, expected_revision=dep.revision, reason=reason, actor=actor, kind=kind
        )
        if old is not None:
            self._move_alias("previous", old, reason=f"replaced by v{target}", actor=actor)
        self._move_alias("champion", target, reason=reason, actor=actor)
        self._drop_challenger(target, reason=f"v{target} promoted to champion", actor=actor)
        return moved

    @staticmethod
    def _require_running(r: Rollout, action: str) -> None:
        if r.state != "running":
            raise RolloutError(f"Rollout #{r.id} is {r.state}; only a running rollout can {action}.")
