"""The rollout controller: start a rollout, advance it one analysis at a time, abort it.

The states and their moves are :mod:`mloop.rollout.states`; promotion and rollback are
:mod:`mloop.rollout.promotion`; champion moves outside rollouts are :mod:`mloop.rollout.deployment`.
Everything lives in the store, so any process may drive a rollout and a restarted one resumes where
the store says it is; each transition is compare-and-set on the rollout's revision, so a step is never
applied twice and two concurrent commands cannot both apply (the loser gets
:class:`~mloop.errors.ConflictError`). A rollout start holds the store lease ``deployment:<model>``,
as ``mloop models promote`` does, so the two never both apply. Asking for the state a rollout is
already in (promote a promoted rollout, roll back a rolled-back one, abort an aborted one) returns it
unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from mloop.config import Settings
from mloop.errors import ConflictError, RolloutError
from mloop.rollout import plan
from mloop.rollout.abtest import compare_arms
from mloop.rollout.analysis import analyze_step, next_move, shadow_report, step_has_traffic
from mloop.rollout.checks import Check, look_alpha, verify_level
from mloop.rollout.deployment import Aliases, DeploymentMoves, deployment_lease
from mloop.rollout.promotion import Promotions, promoted_version, require_running
from mloop.rollout.quality import quality_check, quality_metric
from mloop.rollout.states import ROLLOUT_MACHINE, RolloutState
from mloop.rollout.stats import ArmStats, arm_rows, collect_stats
from mloop.store import Store, open_store
from mloop.store.rollouts import Deployment, Rollout, RolloutStore

__all__ = ["RolloutController"]


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
        estimators: dict[str, Any] | None = None,
    ) -> None:
        """``estimators``: version -> quality estimator, instead of reading each version's from the
        registry (tools and tests whose registry is not MLflow's)."""
        self.settings = settings
        self.cfg = settings.rollout
        self.model_name = model_name or settings.model.name
        self._owns_store = store is None
        self.store = store if store is not None else open_store(settings.store_url)
        self.repo = RolloutStore(self.store, ROLLOUT_MACHINE)
        self._registry = registry
        self._predlog = predlog
        self.classification = settings.model.task == "classification"
        self.metric = quality_metric(settings)
        self._estimators: dict[str, Any] = dict(estimators or {})  # version -> estimator, read once
        aliases = Aliases(self)
        self.promotions = Promotions(self, aliases)
        self.deployments = DeploymentMoves(self, aliases)

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
        # Under the lease `mloop models promote` holds too: the champion read here is still the
        # champion when the rollout is recorded.
        with deployment_lease(self, "rollout start"):
            candidates = [str(self.registry.get(ref).version) for ref in refs]
            champion = self.registry.by_alias("champion")
            baseline = None if champion is None else str(champion.version)
            self._check_start(strategy, baseline, candidates)
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

    def _check_start(self, strategy: str, baseline: str | None, candidates: list[str]) -> None:
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

    # -- advance -------------------------------------------------------------------------------
    def advance(self, rollout_id: int | None = None, *, actor: str = "rollout") -> Rollout:
        """Run one analysis of the rollout and apply at most one transition; returns the new state."""
        r = self.get(rollout_id)
        if r.terminal:
            return r
        if r.state == RolloutState.PROMOTING:
            return self.promotions.adopt(r, actor=actor, reason=r.reason)
        if r.state == RolloutState.PROMOTED_UNVERIFIED:
            return self._verify(r, actor)
        if r.strategy == "direct":
            return self.promote(r.id, actor=actor, wait=False)
        frame = self._log(r)
        stats = self.stats(r, step_since=r.step_started_at if r.strategy == "canary" else None, frame=frame)
        if r.strategy == "canary":
            return self._advance_canary(r, stats, actor, frame)
        guard = self._error_guard(r, stats)
        if guard is not None:
            return self.rollback(r.id, actor=actor, reason=guard, check="error_rate")
        if r.strategy == "ab":
            report = compare_arms(
                stats, plan.BASELINE, self.cfg, classification=self.classification, metric=self.metric
            )
        else:
            report = shadow_report(stats[plan.BASELINE], stats["shadow"], self.classification)
        report["arms"] = {a: s.summary(self.classification) for a, s in stats.items()}
        return self._save(r, report)

    def _log(self, r: Rollout) -> pd.DataFrame:
        """The model's prediction log since ``r`` started."""
        frame: pd.DataFrame = self.predlog.read(model_name=r.model_name, since=r.created_at)
        return frame

    def stats(
        self, r: Rollout, *, step_since: datetime | None = None, frame: pd.DataFrame | None = None
    ) -> dict[str, ArmStats]:
        """Per-arm stats of ``r`` from the store's counters, the prediction log (``frame``, when the
        caller has read it) and feedback (``step_since``: also the latencies since then, see
        :attr:`ArmStats.step_latency_ms`)."""
        frame = self._log(r) if frame is None else frame
        ids = frame["prediction_id"].astype(str).tolist() if not frame.empty else []
        labels = self.store.feedback(ids) if ids else {}
        return collect_stats(
            r,
            self.repo.counters(r.id),
            frame,
            labels,
            classification=self.classification,
            step_since=step_since,
        )

    def _estimated_quality(
        self, r: Rollout, stats: dict[str, ArmStats], frame: pd.DataFrame, alpha: float
    ) -> list[Check]:
        """The ``estimated_quality`` check while the arms have too few labels for ``quality``
        (:mod:`mloop.rollout.estimated`); nothing once labels can speak, or when turned off."""
        canary, baseline = stats["canary"], stats[plan.BASELINE]
        labelled = min(canary.labelled, baseline.labelled)
        if not self.cfg.estimated_quality_check or labelled >= self.cfg.min_labelled:
            return []
        from mloop.rollout.estimated import estimate_arm, estimated_quality_check_of, estimators_of

        missing = [v for v in (baseline.version, canary.version) if v not in self._estimators]
        if missing:
            self._estimators.update(estimators_of(self.settings, self.registry, r.model_name, missing))
        min_rows = self.settings.monitoring.estimate_min_rows
        est_b, est_c = (
            estimate_arm(arm_rows(frame, s.arm, s.version), self._estimators[s.version], min_rows=min_rows)
            for s in (baseline, canary)
        )
        return [estimated_quality_check_of(est_b, est_c, self.metric, self.cfg, alpha)]

    def _advance_canary(
        self, r: Rollout, stats: dict[str, ArmStats], actor: str, frame: pd.DataFrame | None = None
    ) -> Rollout:
        canary, baseline = stats["canary"], stats[plan.BASELINE]
        prev = r.analysis or {}
        base_requests = int(prev.get("step_base_requests", 0))
        now = datetime.now(UTC)
        held = (now - r.step_started_at).total_seconds()
        awaiting = r.state == RolloutState.AWAITING_LABELS
        labelled = min(baseline.labelled, canary.labelled)
        waited = None
        label_look = 0
        if awaiting:
            waited = (now - datetime.fromisoformat(str(prev["label_wait_started"]))).total_seconds()
            label_look = int(prev.get("label_look", 0)) + 1
            due = labelled >= max(self.cfg.min_labelled, 1.5 * int(prev.get("label_look_n", 0)))
            expiring = waited >= self.cfg.label_wait_s and not prev.get("label_wait_expired")
            if not (due or expiring):  # no new look until the labelled sample grew by half
                return self._save(
                    r,
                    {
                        **prev,
                        "arms": {a: s.summary(self.classification) for a, s in stats.items()},
                        "labelled": labelled,
                    },
                )
        step_requests = canary.requests - base_requests
        extra = (
            self._estimated_quality(r, stats, frame, look_alpha(self.cfg, r.step, label_look))
            if frame is not None and step_has_traffic(self.cfg, step_requests, held, label_look)
            else []
        )
        a = analyze_step(
            baseline,
            canary,
            self.cfg,
            classification=self.classification,
            step_requests=step_requests,
            held_s=held,
            step=r.step,
            label_look=label_look,
            metric=self.metric,
            extra=extra,
            concurrent=self.cfg.steps[r.step] < 100.0,
        )
        move = next_move(
            a, self.cfg, step=r.step, verified=bool(prev.get("quality_verified")), label_waited_s=waited
        )
        report: dict[str, Any] = {
            **a.to_dict(),
            "step": r.step,
            "percent": self.cfg.steps[r.step],
            "step_base_requests": base_requests,
            "quality_verified": move.verified,
            "labelled": labelled,
        }
        if awaiting:
            report.update(
                label_wait_started=prev["label_wait_started"],
                label_look=label_look,
                label_look_n=labelled,
                label_wait_expired=bool(waited is not None and waited >= self.cfg.label_wait_s),
            )
        if move.action == "wait":
            if held > self.cfg.max_wait_s:
                report.update(
                    verdict="fail",
                    failing="traffic",
                    reason=f"not enough traffic after {held:.0f} s (rollout.max_wait_s): {a.reason}",
                )
                return self.rollback(
                    r.id, actor=actor, reason=report["reason"], check="traffic", analysis=report
                )
            return self._save(r, report)
        if move.action == "rollback":
            return self.rollback(r.id, actor=actor, reason=move.reason, check=move.check, analysis=report)
        if move.action == "await_labels":
            report["reason"] = move.reason
            if awaiting:
                return self._save(r, report)
            report.update(label_wait_started=now.isoformat(), label_look=0, label_look_n=labelled)
            return self.repo.transition(
                r.id,
                expected_revision=r.revision,
                state=RolloutState.AWAITING_LABELS,
                analysis=report,
                actor=actor,
                reason=move.reason,
                kind="rollout.awaiting_labels",
                data={"step": r.step, "labelled": labelled, "label_wait_s": self.cfg.label_wait_s},
            )
        if move.action in ("promote", "promote_unverified"):
            report["promote_unverified"] = move.action == "promote_unverified"
            return self.promote(r.id, actor=actor, reason=move.reason, analysis=report, wait=False)
        nxt = r.step + 1
        report["step_base_requests"] = canary.requests
        weights = plan.canary_weights(self.cfg, nxt)
        return self.repo.transition(
            r.id,
            expected_revision=r.revision,
            state=RolloutState.RUNNING,
            step=nxt,
            weights=weights,
            analysis=report,
            actor=actor,
            reason=(
                f"step {r.step + 1} ({self.cfg.steps[r.step]:g}%) passed; canary at "
                f"{self.cfg.steps[nxt]:g}%: {a.reason}"
            ),
            kind="rollout.step",
            data={
                "step": nxt,
                "checks": {c.name: c.status for c in a.checks},
            },
        )

    def verify_promotions(self, *, actor: str = "rollout") -> list[Rollout]:
        """Look again at the model's ``promoted_unverified`` rollouts (newest 20): each is verified
        (``promoted``), rolled back on the quality check, or left as it is until more labels arrive.
        Returns the rollouts whose state changed."""
        changed = []
        for r in self.repo.list(self.model_name, limit=20):
            if r.state != RolloutState.PROMOTED_UNVERIFIED:
                continue
            try:
                after = self._verify(r, actor)
            except ConflictError:
                continue  # another process (the loop's leader or a replica) moved it first
            if after.state != r.state:
                changed.append(after)
        return changed

    def _verify(self, r: Rollout, actor: str) -> Rollout:
        """A promotion recorded unverified: judge the canary's quality once its labels have arrived."""
        stats = self.stats(r)
        prev = r.analysis or {}
        labelled = min(s.labelled for s in stats.values())
        if labelled < max(self.cfg.min_labelled, 1.5 * int(prev.get("label_look_n", 0))):
            return r
        look = int(prev.get("label_look", 0)) + 1
        check = quality_check(
            stats[plan.BASELINE],
            stats["canary"],
            self.cfg,
            self.metric,
            look_alpha(self.cfg, 0, look),
            verify_level(self.cfg, look),
        )
        report = {**prev, "label_look": look, "label_look_n": labelled, "verification": asdict(check)}
        if check.status == "failed":
            return self.rollback(
                r.id,
                actor=actor,
                reason=f"quality check failed after an unverified promotion: {check.detail}",
                check="quality",
                analysis=report,
            )
        if check.status == "passed":
            return self.repo.transition(
                r.id,
                expected_revision=r.revision,
                state=RolloutState.PROMOTED,
                analysis={**report, "quality_verified": True},
                actor=actor,
                reason=f"promotion verified: {check.detail}",
                kind="rollout.verified",
                data={"version": promoted_version(r)},
            )
        return self._save(r, report)

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

    # -- decisions (mloop.rollout.promotion) and champion moves (mloop.rollout.deployment) --------
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
        """Give all traffic to the winner and make it champion (:meth:`Promotions.promote`)."""
        return self.promotions.promote(
            rollout_id, version=version, actor=actor, reason=reason, analysis=analysis, wait=wait
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
        """Send all traffic back to the baseline (``check``: why; :meth:`Promotions.rollback`)."""
        return self.promotions.rollback(
            rollout_id, actor=actor, reason=reason, check=check, analysis=analysis
        )

    @staticmethod
    def promoted_version(r: Rollout) -> str:
        """The version ``r`` gives all traffic to once promoting (its winner)."""
        return promoted_version(r)

    def rollback_deployment(self, *, actor: str = "mloop", reason: str | None = None) -> Deployment:
        """Swap ``champion`` and ``previous`` (:meth:`DeploymentMoves.rollback_deployment`)."""
        return self.deployments.rollback_deployment(actor=actor, reason=reason)

    def promote_version(
        self, version: str | int, *, actor: str = "mloop", reason: str = "manual promotion"
    ) -> Deployment:
        """Make ``version`` champion without a rollout (:meth:`DeploymentMoves.promote_version`)."""
        return self.deployments.promote_version(version, actor=actor, reason=reason)

    def abort(
        self, rollout_id: int | None = None, *, actor: str = "mloop", reason: str | None = None
    ) -> Rollout:
        """Stop a running rollout without judging it: the baseline takes all traffic again (a
        rollout already aborted is returned unchanged)."""
        r = self.get(rollout_id)
        if r.state == RolloutState.ABORTED:
            return r
        require_running(r, "abort")
        weights = {a.arm: (1.0 if a.arm == plan.BASELINE else 0.0) for a in r.arms}
        try:
            return self.repo.transition(
                r.id,
                expected_revision=r.revision,
                state=RolloutState.ABORTED,
                weights=weights,
                actor=actor,
                reason=reason or f"aborted by {actor}",
                kind="rollout.aborted",
            )
        except ConflictError:
            now = self.repo.get(r.id)
            if now.state == RolloutState.ABORTED:
                return now
            raise
