"""The canary's quality *estimated* before its labels arrive, as a check beside the others.

Labels come late (fraud chargebacks take weeks), so for most of a canary's life the ``quality`` check
is ``not_evaluated``. Each version carries a quality estimator fitted on its holdout (calibrated
probabilities, :mod:`mloop.monitoring.estimation`); from each arm's logged probabilities it gives the
expected value of the gate metric and an interval. ``estimated_quality`` compares the two arms'
estimates with the same non-inferiority rule as ``quality`` (:func:`~mloop.rollout.checks.non_inferiority`).

What it is for: rolling back a canary that is clearly worse *before* labels arrive (a model that
always predicts the majority class, a much weaker ranking). What it never does: verify quality — a
``passed`` estimate moves no canary past the label gate, because a change of P(y|x) with unchanged
inputs is invisible to it (docs/monitoring.md). It is computed only while ``quality`` is not
evaluated, and it has its own share of the false-rollback budget (``CHECKS``).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from mloop.config.settings import RolloutSettings
from mloop.monitoring.estimation import EstimatedQuality, QualityEstimator, estimate_quality
from mloop.rollout.checks import Check, non_inferiority

__all__ = ["ESTIMATED_METRICS", "estimate_arm", "estimated_quality_check_of", "estimators_of"]

#: Gate metrics a label-free estimate exists for; lower is better for ``mae`` and ``rmse``.
ESTIMATED_METRICS = {
    "accuracy": True,
    "f1": True,
    "roc_auc": True,
    "precision": True,
    "recall": True,
    "mae": False,
    "rmse": False,
}

#: Label draws behind each arm's interval: fewer than monitoring's, as a canary is looked at often.
SAMPLES = 200


def estimate_arm(
    rows: pd.DataFrame, estimator: QualityEstimator | None, *, min_rows: int, seed: int = 0
) -> EstimatedQuality:
    """One arm's estimate from its prediction-log rows (``prediction`` and ``proba_<class>``)."""
    return estimate_quality(rows, estimator, min_rows=min_rows, samples=SAMPLES, seed=seed)


def _value_and_se(est: EstimatedQuality, metric: str) -> tuple[float, float] | None:
    value, lo, hi = est.metrics.get(metric), est.lower.get(metric), est.upper.get(metric)
    if value is None or lo is None or hi is None:
        return None
    from scipy.stats import norm

    se = (hi - lo) / (2 * float(norm.ppf(0.5 + est.confidence / 2)))
    return (value, se) if math.isfinite(se) else None


def estimated_quality_check_of(
    baseline: EstimatedQuality, canary: EstimatedQuality, metric: str, cfg: RolloutSettings, alpha: float
) -> Check:
    """Canary against baseline on the *estimated* ``metric``: failed only when the estimate is
    significantly worse by more than half of ``rollout.max_quality_drop``."""

    def not_evaluated(why: str) -> Check:
        return Check("estimated_quality", "not_evaluated", None, cfg.max_quality_drop, why)

    higher_is_better = ESTIMATED_METRICS.get(metric)
    if higher_is_better is None:
        return not_evaluated(f"no label-free estimate of {metric}")
    for arm, est in (("baseline", baseline), ("canary", canary)):
        if est.status != "ok":
            return not_evaluated(f"{arm}: {est.note or 'no estimate'}")
    got_b, got_c = _value_and_se(baseline, metric), _value_and_se(canary, metric)
    if got_b is None or got_c is None:
        return not_evaluated(f"{metric} could not be estimated for both arms")
    (vb, se_b), (vc, se_c) = got_b, got_c
    if higher_is_better:
        delta, se = vc - vb, math.hypot(se_b, se_c)
    elif vb <= 0:
        return not_evaluated(f"baseline's estimated {metric} is {vb:g}")
    else:  # relative change (baseline - canary) / baseline, delta method for its error
        delta = (vb - vc) / vb
        se = math.sqrt(se_c**2 / vb**2 + se_b**2 * vc**2 / vb**4)
    what = (
        f"estimated {metric} {vc:.4f} vs baseline {vb:.4f} "
        f"({canary.rows} and {baseline.rows} predictions, no labels)"
    )
    check = non_inferiority("estimated_quality", delta, se, cfg, alpha, what)
    if check.status == "passed":
        # Never a verification: the label gate waits for realized quality.
        check.status, check.detail = "inconclusive", check.detail + "; an estimate does not verify quality"
    return check


def estimators_of(settings: Any, registry: Any, model: str, versions: list[str]) -> dict[str, Any]:
    """Each version's quality estimator from the registry (None when it carries none, or when the
    registry is not MLflow's, as in tests): read once per process by :func:`fetch_reference`."""
    from mloop.errors import MloopError
    from mloop.monitoring.reference import fetch_reference

    out: dict[str, Any] = {}
    for version in versions:
        if not hasattr(registry, "download"):
            out[version] = None
            continue
        try:
            out[version] = fetch_reference(settings, model, version).estimator
        except MloopError:
            out[version] = None  # no profile or artifacts: the estimate is simply not available
    return out
