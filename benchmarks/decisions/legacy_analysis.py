"""Today's canary analysis (before the statistical checks), kept verbatim from git
(fe97aae^:src/mloop/rollout/analysis.py) for the decision benchmark.

One canary step's analysis: canary against baseline on errors, latency, prediction drift, quality.

:func:`analyze_step` is pure: it takes the two arms' :class:`~mloop.rollout.stats.ArmStats` and the
thresholds, and returns a :class:`StepAnalysis` whose ``verdict`` is ``pass`` (go to the next step),
``fail`` (roll back; ``failing`` names the check) or ``wait`` (not enough traffic yet; after
``max_wait_s`` the step fails safe with the check ``traffic``).

Checks, in the order they are reported:

* ``error_rate`` — canary errors / requests ≤ ``max_error_rate``. It fails early, before the step has
  its traffic, once the errors alone exceed what ``min_requests_per_step`` requests may contain.
  Errors are the arm's own failures only (5xx: the model raised, the server failed or shed the
  request); a request refused for what its client sent (4xx: broken contract, malformed body) is
  not the arm's doing and is counted neither as a request nor as an error (the serving service
  reports only model calls and 5xx to the rollout's counters), so malformed traffic cannot roll
  back a healthy canary.
* ``latency`` — canary p99 / baseline p99 ≤ ``max_latency_ratio`` (from the prediction log).
* ``prediction_drift`` — Jensen-Shannon distance between the arms' outputs ≤ ``max_prediction_drift``:
  classifiers compare the shares of predicted classes, regressors the shares over the baseline's deciles.
* ``quality`` — when both arms have ``min_labelled`` labelled predictions: baseline accuracy - canary
  accuracy ≤ ``max_quality_drop`` (regressors: relative increase of the mean absolute error).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from mloop.config.settings import RolloutSettings
from mloop.monitoring.stattests import fill_zeros
from mloop.monitoring.stattests.jensenshannon import js_distance
from mloop.rollout.stats import ArmStats

__all__ = ["Check", "StepAnalysis", "analyze_step", "output_drift", "shadow_report"]

Verdict = Literal["pass", "fail", "wait"]


@dataclass
class Check:
    """One check: its value against its threshold; ``passed`` is None when it could not run yet."""

    name: str
    passed: bool | None
    value: float | None
    threshold: float
    detail: str


@dataclass
class StepAnalysis:
    verdict: Verdict
    reason: str
    checks: list[Check] = field(default_factory=list)
    failing: str | None = None
    arms: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def output_drift(baseline: list[Any], candidate: list[Any], classification: bool) -> float | None:
    """Jensen-Shannon distance between two arms' outputs (None if either has none)."""
    if not baseline or not candidate:
        return None
    if classification:
        levels = sorted({str(v) for v in baseline} | {str(v) for v in candidate})
        p = np.array([sum(str(v) == lv for v in baseline) for lv in levels], dtype=float)
        q = np.array([sum(str(v) == lv for v in candidate) for lv in levels], dtype=float)
    else:
        b = np.asarray(baseline, dtype=float)
        c = np.asarray(candidate, dtype=float)
        edges = np.unique(np.quantile(b, np.linspace(0.1, 0.9, 9)))
        p = np.bincount(np.searchsorted(edges, b, side="right"), minlength=edges.size + 1).astype(float)
        q = np.bincount(np.searchsorted(edges, c, side="right"), minlength=edges.size + 1).astype(float)
    return float(js_distance(fill_zeros(p / p.sum()), fill_zeros(q / q.sum())))


def analyze_step(
    baseline: ArmStats,
    canary: ArmStats,
    cfg: RolloutSettings,
    *,
    classification: bool,
    step_requests: int,
    held_s: float,
) -> StepAnalysis:
    """Compare ``canary`` with ``baseline`` for the current step (see the module docstring).

    ``step_requests`` is how many requests the canary answered during this step and ``held_s`` how
    long the step has lasted; both decide whether the step has enough traffic to be judged.
    """
    arms = {a.arm: a.summary(classification) for a in (baseline, canary)}
    checks: list[Check] = []
    enough = step_requests >= cfg.min_requests_per_step and held_s >= cfg.step_hold_s
    budget = cfg.max_error_rate * max(cfg.min_requests_per_step, 1)
    err_fail = canary.errors > budget if not enough else canary.error_rate > cfg.max_error_rate
    checks.append(
        Check(
            "error_rate",
            None if not (enough or err_fail) else not err_fail,
            canary.error_rate,
            cfg.max_error_rate,
            f"{canary.errors} server errors (5xx) in {canary.requests} canary requests "
            f"(baseline {baseline.errors}/{baseline.requests}; client errors are not counted)",
        )
    )
    if enough:
        b99, c99 = baseline.latency_p99(), canary.latency_p99()
        ratio = None if not b99 or c99 is None else c99 / b99
        checks.append(
            Check(
                "latency",
                None if ratio is None else ratio <= cfg.max_latency_ratio,
                ratio,
                cfg.max_latency_ratio,
                f"p99 {c99 if c99 is None else round(c99, 2)} ms vs baseline "
                f"{b99 if b99 is None else round(b99, 2)} ms",
            )
        )
        drift = output_drift(baseline.predictions, canary.predictions, classification)
        checks.append(
            Check(
                "prediction_drift",
                None if drift is None else drift <= cfg.max_prediction_drift,
                drift,
                cfg.max_prediction_drift,
                f"Jensen-Shannon distance between outputs of {baseline.logged} baseline and "
                f"{canary.logged} canary predictions",
            )
        )
    checks.append(_quality_check(baseline, canary, cfg, classification))
    failed = [c for c in checks if c.passed is False]
    if failed:
        first = failed[0]
        value = "n/a" if first.value is None else f"{first.value:.4g}"
        reason = f"{first.name} check failed: {value} vs threshold {first.threshold:g} ({first.detail})"
        return StepAnalysis("fail", reason, checks, first.name, arms)
    if not enough:
        return StepAnalysis(
            "wait",
            f"waiting for traffic: {step_requests}/{cfg.min_requests_per_step} canary requests, "
            f"held {held_s:.0f}/{cfg.step_hold_s:.0f} s",
            checks,
            None,
            arms,
        )
    return StepAnalysis("pass", "every check passed", checks, None, arms)


def _quality_check(baseline: ArmStats, canary: ArmStats, cfg: RolloutSettings, classification: bool) -> Check:
    n = min(baseline.labelled, canary.labelled)
    detail = f"{canary.labelled} canary and {baseline.labelled} baseline labelled predictions"
    if n < cfg.min_labelled:
        return Check("quality", None, None, cfg.max_quality_drop, f"{detail}; needs {cfg.min_labelled} each")
    bq, cq = baseline.quality(classification), canary.quality(classification)
    assert bq is not None and cq is not None
    if classification:
        drop = bq - cq
        detail = f"accuracy {cq:.4f} vs baseline {bq:.4f}; {detail}"
    else:
        drop = (cq - bq) / bq if bq > 0 else (0.0 if cq == 0 else float("inf"))
        detail = f"MAE {cq:.4g} vs baseline {bq:.4g}; {detail}"
    return Check("quality", drop <= cfg.max_quality_drop, drop, cfg.max_quality_drop, detail)


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
