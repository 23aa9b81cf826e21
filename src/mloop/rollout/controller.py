"""The rollout state machine: start, advance one analysis at a time, promote, roll back, abort.

States: ``running`` → ``promoting`` → ``promoted``; ``running`` → ``rolled_back`` | ``aborted``.
Everything lives in the store, so any process may drive a rollout and a restarted one resumes where
the store says it is; each transition is compare-and-set on the rollout's revision, so a step is never
applied twice and two concurrent promote/rollback commands cannot both apply (the loser gets
:class:`~mloop.errors.ConflictError`). Promotion first claims the rollout (``promoting``, all traffic to
the winner), then moves the ``champion`` alias in MLflow, then records ``promoted``; a crash between
the two is finished by the next :meth:`RolloutController.advance`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from mloop.config import Settings
from mloop.errors import ConflictError, RolloutError, TrackingError
from mloop.rollout import plan
from mloop.rollout.abtest import compare_arms
from mloop.rollout.analysis import analyze_step, shadow_report
from mloop.rollout.stats import ArmStats, collect_stats
from mloop.store import Store, open_store
from mloop.store.rollouts import Deployment, Rollout, RolloutStore

__all__ = ["RolloutController"]

log = logging.getLogger("mloop.rollout")


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
            from mloop.serving.predlog import open_prediction_log

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
            return self._finish_promotion(r, actor=actor, reason=r.reason)
        if r.strategy == "direct":
            return self.promote(r.id, actor=actor)
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
                r.id, actor=actor, reason=f"canary passed every step ({a.reason})", analysis=report
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
    ) -> Rollout:
        """Give all traffic to the winner and move the ``champion`` alias to it."""
        r = self.get(rollout_id)
        if r.state == "promoting":
            return self._finish_promotion(r, actor=actor, reason=reason or r.reason)
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
        return self._finish_promotion(claimed, actor=actor, reason=why, target=target)

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

    def _finish_promotion(self, r: Rollout, *, actor: str, reason: str, target: str | None = None) -> Rollout:
        target = target or next(
            (a.version for a in r.arms if a.weight >= 1.0 and a.arm != plan.BASELINE), r.candidate_version
        )
        try:
            self.registry.set_alias("champion", target, reason=f"rollout #{r.id}: {reason}", actor=actor)
            # The promoted version is no longer a challenger; the one it replaced stays reachable
            # as `previous` (the rollback target), as with `mloop models promote`.
            challenger = self.registry.by_alias("challenger")
            if challenger is not None and str(challenger.version) == str(target):
                self.registry.delete_alias("challenger", reason=f"v{target} promoted", actor=actor)
            if r.baseline_version and str(r.baseline_version) != str(target):
                self.registry.set_alias(
                    "previous", r.baseline_version, reason=f"replaced by v{target}", actor=actor
                )
        except TrackingError as exc:
            return self.rollback(
                r.id, actor=actor, reason=f"promotion failed: {exc.message}", check="promote"
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

    def rollback(
        self,
        rollout_id: int | None = None,
        *,
        actor: str = "mloop",
        reason: str | None = None,
        check: str | None = None,
        analysis: dict[str, Any] | None = None,
    ) -> Rollout:
        """Send all traffic back to the baseline and mark the rollout rolled back (``check``: why)."""
        r = self.get(rollout_id)
        if r.terminal:
            raise RolloutError(
                f"Rollout #{r.id} is already {r.state}; use `mloop rollout rollback --deployment` "
                "to go back to the previous champion."
            )
        if r.baseline_version is None:
            raise RolloutError(
                f"Rollout #{r.id} has no baseline to roll back to (it was the first deployment)."
            )
        if r.state == "promoting":
            self.registry.set_alias(
                "champion", r.baseline_version, reason=f"rollback of rollout #{r.id}", actor=actor
            )
        weights = {a.arm: (1.0 if a.arm == plan.BASELINE else 0.0) for a in r.arms}
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
        # A rolled-back version is no longer a challenger (after the transition: only the winner
        # of the compare-and-set touches the alias).
        challenger = self.registry.by_alias("challenger")
        if challenger is not None and str(challenger.version) == str(r.candidate_version):
            self.registry.delete_alias(
                "challenger", reason=f"v{r.candidate_version} rolled back", actor=actor
            )
        return rolled

    def abort(
        self, rollout_id: int | None = None, *, actor: str = "mloop", reason: str | None = None
    ) -> Rollout:
        """Stop a running rollout without judging it: the baseline takes all traffic again."""
        r = self.get(rollout_id)
        self._require_running(r, "abort")
        weights = {a.arm: (1.0 if a.arm == plan.BASELINE else 0.0) for a in r.arms}
        return self.repo.transition(
            r.id,
            expected_revision=r.revision,
            state="aborted",
            weights=weights,
            actor=actor,
            reason=reason or f"aborted by {actor}",
            kind="rollout.aborted",
        )

    def rollback_deployment(self, *, actor: str = "mloop", reason: str | None = None) -> Deployment:
        """After a promotion: move ``champion`` back to the previous champion (the rollback target)."""
        if self.current() is not None:
            raise RolloutError("A rollout is active; roll it back with `mloop rollout rollback` first.")
        dep = self.deployment()
        if dep is None or dep.previous_version is None:
            raise RolloutError(
                f"Model {self.model_name!r} has no previous champion recorded to roll back to."
            )
        target = dep.previous_version
        why = reason or f"roll back to v{target} by {actor}"
        moved = self.repo.set_champion(
            self.model_name,
            target,
            expected_revision=dep.revision,
            reason=why,
            actor=actor,
            kind="deployment.rolled_back",
        )
        self.registry.set_alias("champion", target, reason=why, actor=actor)
        return moved

    @staticmethod
    def _require_running(r: Rollout, action: str) -> None:
        if r.state != "running":
            raise RolloutError(f"Rollout #{r.id} is {r.state}; only a running rollout can {action}.")
