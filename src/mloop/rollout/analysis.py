"""One canary look: canary against baseline on errors, latency, prediction drift and quality.

:func:`analyze_step` is pure: it takes the two arms' :class:`~mloop.rollout.stats.ArmStats`, the
settings and which look this is, and returns a :class:`StepAnalysis` whose ``verdict`` is ``pass``
(no check failed), ``fail`` (roll back; ``failing`` names the check) or ``wait`` (the step has not
had its traffic yet; after ``max_wait_s`` the step fails safe with the check ``traffic``). A ``pass``
lists the checks that were not evaluated or stayed inconclusive in ``unverified``: a rollout never
calls them passed. :func:`next_move` turns a look into the rollout's next move: the next step,
waiting for labels before the canary gets all traffic, promotion, or rollback.

The checks, their tests and how the false-rollback budget is shared between them and over the
looks are :mod:`mloop.rollout.checks` (quality: :mod:`mloop.rollout.quality`). Errors are the arm's
own failures only (5xx); a request refused for what its client sent (4xx) is counted neither as a
request nor as an error, so malformed traffic cannot roll back a healthy canary.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from mloop.config.settings import RolloutSettings
from mloop.rollout.checks import (
    Check,
    drift_check,
    error_check,
    latency_check,
    look_alpha,
    output_drift,
    verify_level,
)
from mloop.rollout.quality import quality_check
from mloop.rollout.stats import ArmStats

__all__ = [
    "Check",
    "Move",
    "StepAnalysis",
    "analyze_step",
    "label_gate_step",
    "next_move",
    "output_drift",
    "shadow_report",
    "step_has_traffic",
]

Verdict = Literal["pass", "fail", "wait"]


@dataclass
class StepAnalysis:
    verdict: Verdict
    reason: str
    checks: list[Check] = field(default_factory=list)
    failing: str | None = None
    arms: dict[str, Any] = field(default_factory=dict)
    unverified: list[str] = field(default_factory=list)
    metric: str | None = None

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for c, d in zip(self.checks, out["checks"], strict=True):
            d["passed"] = c.passed
        return out


def step_has_traffic(cfg: RolloutSettings, step_requests: int, held_s: float, label_look: int = 0) -> bool:
    """Whether a look judges the canary: its step has had ``min_requests_per_step`` requests and
    ``step_hold_s`` seconds (a label-wait look always has)."""
    return label_look > 0 or (step_requests >= cfg.min_requests_per_step and held_s >= cfg.step_hold_s)


def analyze_step(
    baseline: ArmStats,
    canary: ArmStats,
    cfg: RolloutSettings,
    *,
    classification: bool,
    step_requests: int,
    held_s: float,
    step: int = 0,
    label_look: int = 0,
    metric: str | None = None,
    extra: list[Check] | None = None,
    concurrent: bool = True,
) -> StepAnalysis:
    """Compare ``canary`` with ``baseline`` at the look of step ``step`` (or label-wait look
    ``label_look``); see the module docstring.

    ``step_requests`` is how many requests the canary answered during this step and ``held_s`` how
    long the step has lasted; both decide whether the step has had its traffic (a label-wait look
    always has). ``metric`` is the quality metric (default: accuracy, or MAE for regressors).
    ``extra`` are checks computed elsewhere (e.g. quality estimated without labels); a failed one
    fails the look like any other. ``concurrent`` is False when the baseline no longer serves (the
    100 % step): latency is then not evaluated, as a load spike would hit the canary alone.
    """
    arms = {a.arm: a.summary(classification) for a in (baseline, canary)}
    metric = metric or ("accuracy" if classification else "mae")
    if not step_has_traffic(cfg, step_requests, held_s, label_look):
        return StepAnalysis(
            "wait",
            f"waiting for traffic: {step_requests}/{cfg.min_requests_per_step} canary requests, "
            f"held {held_s:.0f}/{cfg.step_hold_s:.0f} s",
            [],
            None,
            arms,
            metric=metric,
        )
    alpha = look_alpha(cfg, step, label_look)
    checks = [
        error_check(baseline.errors, baseline.requests, canary.errors, canary.requests, cfg, alpha),
        latency_check(*_latencies(baseline, canary), cfg, alpha)
        if concurrent
        else Check(
            "latency",
            "not_evaluated",
            None,
            cfg.max_latency_ratio,
            "the baseline serves no traffic at this step: no concurrent latencies to compare",
        ),
        drift_check(baseline.predictions, canary.predictions, cfg, alpha, classification=classification),
        quality_check(baseline, canary, cfg, metric, alpha, verify_level(cfg, label_look)),
        *(extra or []),
    ]
    failed = [c for c in checks if c.status == "failed"]
    if failed:
        first = failed[0]
        value = "n/a" if first.value is None else f"{first.value:.4g}"
        reason = f"{first.name} check failed: {value} vs threshold {first.threshold:g} ({first.detail})"
        return StepAnalysis("fail", reason, checks, first.name, arms, metric=metric)
    unverified = [c.name for c in checks if c.status != "passed"]
    return StepAnalysis("pass", summarize(checks), checks, None, arms, unverified, metric)


def _latencies(baseline: ArmStats, canary: ArmStats) -> tuple[np.ndarray, np.ndarray]:
    """The current step's latencies when both arms have them (served side by side), else all."""
    if baseline.step_latency_ms is not None and canary.step_latency_ms is not None:
        return baseline.step_latency_ms, canary.step_latency_ms
    return baseline.latency_ms, canary.latency_ms


def summarize(checks: list[Check]) -> str:
    """What the checks concluded, never calling a check that did not run "passed"."""
    passed = [c.name for c in checks if c.status == "passed"]
    others = [c for c in checks if c.status != "passed"]
    if not others:
        return f"all {len(checks)} checks passed ({', '.join(passed)})"
    said = "; ".join(f"{c.name} {c.status.replace('_', ' ')}: {c.detail}" for c in others)
    return f"no check failed; passed: {', '.join(passed) or 'none'}; {said}"


def label_gate_step(cfg: RolloutSettings) -> int:
    """The step whose look must verify quality before the canary goes on: the last step below 100 %
    (or the last step when every step is below 100 %)."""
    below = [i for i, p in enumerate(cfg.steps) if p < 100.0]
    return below[-1] if below else len(cfg.steps) - 1


@dataclass
class Move:
    """What a rollout does after a look."""

    action: Literal["wait", "step", "await_labels", "promote", "promote_unverified", "rollback"]
    reason: str
    check: str | None = None
    verified: bool = False
    """Quality has been verified (passed at a look from the label gate on)."""


def next_move(
    a: StepAnalysis, cfg: RolloutSettings, *, step: int, verified: bool, label_waited_s: float | None
) -> Move:
    """The move after look ``a`` at step ``step``. ``verified``: quality was verified at an earlier look;
    ``label_waited_s``: how long the rollout has waited for labels (None: it has not started to).

    Quality counts as verified only from the label gate's look on: each earlier look would be one
    more chance to verify a canary that is worse by the margin."""
    if a.verdict == "fail":
        return Move("rollback", a.reason, a.failing, verified)
    if a.verdict == "wait":
        return Move("wait", a.reason, None, verified)
    quality = a.check("quality")
    gate = step >= label_gate_step(cfg)
    verified = verified or (gate and quality is not None and quality.status == "passed")
    last = step + 1 >= len(cfg.steps)
    if gate and not verified:
        waited = label_waited_s or 0.0
        if label_waited_s is None or waited < cfg.label_wait_s:
            return Move("await_labels", f"waiting up to {cfg.label_wait_s:g} s for labels: {a.reason}")
        why = f"quality not verified after waiting {waited:.0f} s for labels (rollout.label_wait_s)"
        if cfg.unlabelled_policy == "rollback":
            return Move("rollback", f"{why}; rollout.unlabelled_policy is rollback: {a.reason}", "quality")
        if cfg.unlabelled_policy == "promote_unverified":
            return Move(
                "promote_unverified", f"{why}; promoted UNVERIFIED (rollout.unlabelled_policy): {a.reason}"
            )
        return Move(
            "await_labels", f"{why}; holding (rollout.unlabelled_policy: hold) for labels or an operator"
        )
    if last:
        return Move("promote", f"canary passed every step, quality verified ({a.reason})", None, True)
    return Move("step", a.reason, None, verified)


def shadow_report(champion: ArmStats, shadow: ArmStats, classification: bool) -> dict[str, Any]:
    """Agreement rate and latency of a shadow arm against the champion on the same requests."""
    by_id = dict(zip(champion.prediction_ids, champion.predictions, strict=True))
    pairs = [
        (by_id[i], p) for i, p in zip(shadow.prediction_ids, shadow.predictions, strict=True) if i in by_id
    ]
    if classification:
        agree = [float(str(a) == str(b)) for a, b in pairs]
    else:
        agree = [float(np.isclose(float(a), float(b), rtol=0.05, atol=1e-9)) for a, b in pairs]
    c99, s99 = champion.latency_p99(), shadow.latency_p99()
    return {
        "compared": len(pairs),
        "agreement_rate": float(np.mean(agree)) if agree else None,
        "champion_p99_ms": c99,
        "shadow_p99_ms": s99,
        "latency_ratio": None if not c99 or s99 is None else s99 / c99,
        "shadow_errors": shadow.errors,
        "shadow_requests": shadow.requests,
    }
