"""Live quality of two arms on the configured metric, with the standard error of their difference.

ROC AUC uses DeLong's variance (Sun and Xu's fast algorithm, written here because scikit-learn
gives the AUC but not its variance); PR AUC, F1, accuracy, RMSE and MAE use the bootstrap (each arm
resampled on its own: the arms are independent samples), seeded so an analysis is reproducible.
Error metrics (RMSE, MAE) are compared as a relative change, as before: ``(baseline - canary) /
baseline``, so a positive change is always an improvement.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mloop.config.settings import RolloutSettings, Settings
from mloop.rollout.checks import Check, non_inferiority
from mloop.rollout.stats import ArmStats, same_label

__all__ = ["MIN_PER_CLASS", "arm_metric", "delong_auc", "higher_is_better", "quality_check", "quality_metric"]

MIN_PER_CLASS = 5
"""Labels of each class an arm needs before its ROC or PR AUC is computed."""

_HIGHER_IS_BETTER = {
    "accuracy": True,
    "roc_auc": True,
    "pr_auc": True,
    "f1": True,
    "rmse": False,
    "mae": False,
}


def higher_is_better(metric: str) -> bool:
    """Whether a larger ``metric`` is better (False for ``rmse`` and ``mae``)."""
    return _HIGHER_IS_BETTER[metric]


def arm_metric(
    arm: ArmStats, metric: str, cfg: RolloutSettings, *arms: ArmStats
) -> tuple[float, float] | str:
    """(value, variance) of ``metric`` on ``arm``'s labelled predictions, or why it cannot be computed;
    ``arms``: every arm compared (the positive class is chosen from all of their labels)."""
    return _arm_metric(arm, metric, _positive(arm, *arms), cfg, np.random.default_rng(0))


def quality_metric(settings: Settings) -> str:
    """The metric the canary is judged on (``rollout.quality_metric``; ``auto``: the gate's metric)."""
    chosen = settings.rollout.quality_metric
    if chosen != "auto":
        return chosen
    if settings.model.task != "classification":
        named = settings.gates.beat_champion_metric or settings.tuning.metric
        return named if named in ("rmse", "mae") else "rmse"
    named = settings.gates.beat_champion_metric or settings.tuning.metric
    if named in _HIGHER_IS_BETTER:
        return named
    aliases = {"average_precision": "pr_auc", "f1_macro": "f1", "f1_weighted": "f1"}
    return aliases.get(named or "", "roc_auc")


def delong_auc(y: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """ROC AUC of ``score`` for binary ``y`` (1 positive) and DeLong's variance of it."""
    from scipy.stats import rankdata

    pos, neg = score[y == 1], score[y == 0]
    m, n = pos.size, neg.size
    r_all = rankdata(np.concatenate([pos, neg]))
    v10 = (r_all[:m] - rankdata(pos)) / n  # per positive: share of negatives below it (ties half)
    v01 = 1.0 - (r_all[m:] - rankdata(neg)) / m  # per negative: share of positives above it
    auc = float(v10.mean())
    var = float(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n)
    return auc, var


def _binary(arm: ArmStats, positive: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.array([1 if same_label(v, positive) else 0 for v in arm.labels], dtype=int)
    pred = np.array([1 if same_label(v, positive) else 0 for v in arm.labelled_predictions], dtype=int)
    return y, pred, arm.scores


def _positive(*arms: ArmStats) -> Any:
    seen = {str(v) for a in arms for v in list(a.labels) + list(a.labelled_predictions)}
    ordered = sorted(seen)
    return ordered[1] if len(ordered) > 1 else (ordered[0] if ordered else None)


def _f1(y: np.ndarray, pred: np.ndarray, idx: np.ndarray) -> np.ndarray:
    yy, pp = y[idx], pred[idx]
    tp = (yy & pp).sum(axis=-1)
    fp = ((1 - yy) & pp).sum(axis=-1)
    fn = (yy & (1 - pp)).sum(axis=-1)
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def _pr_auc(y: np.ndarray, score: np.ndarray, idx: np.ndarray) -> np.ndarray:
    from sklearn.metrics import average_precision_score

    out = np.empty(idx.shape[0])
    for i, row in enumerate(idx):
        yy = y[row]
        out[i] = average_precision_score(yy, score[row]) if 0 < yy.sum() < yy.size else np.nan
    return out


def _bootstrap(
    fn: Callable[[np.ndarray], np.ndarray], n: int, resamples: int, rng: np.random.Generator
) -> tuple[float, float]:
    point = float(fn(np.arange(n)[None, :])[0])
    boot = fn(rng.integers(0, n, size=(resamples, n)))
    return point, float(np.nanvar(boot, ddof=1))


def _arm_metric(
    arm: ArmStats, metric: str, positive: Any, cfg: RolloutSettings, rng: np.random.Generator
) -> tuple[float, float] | str:
    """(value, variance) of ``metric`` on ``arm``'s labelled predictions, or why it cannot be computed."""
    n = arm.labelled
    if metric in ("rmse", "mae"):
        err = np.asarray(arm.outcomes, dtype=float)
        if metric == "mae":
            return _bootstrap(lambda idx: err[idx].mean(axis=-1), n, cfg.bootstrap_resamples, rng)
        sq = err**2
        return _bootstrap(lambda idx: np.sqrt(sq[idx].mean(axis=-1)), n, cfg.bootstrap_resamples, rng)
    if metric == "accuracy":
        ok = np.asarray(arm.outcomes, dtype=float)
        value = float(ok.mean())
        return value, value * (1 - value) / n
    y, pred, score = _binary(arm, positive)
    if metric == "f1":
        return _bootstrap(lambda idx: _f1(y, pred, idx), n, cfg.bootstrap_resamples, rng)
    if score.size != n or np.isnan(score).any():
        return f"{arm.arm} logged no class probabilities (needed for {metric})"
    positives = int(y.sum())
    if min(positives, n - positives) < MIN_PER_CLASS:
        return f"{arm.arm}: {positives} positive, {n - positives} negative labels; needs {MIN_PER_CLASS} each"
    if metric == "roc_auc":
        return delong_auc(y, score)
    return _bootstrap(lambda idx: _pr_auc(y, score, idx), n, cfg.bootstrap_resamples, rng)


def quality_check(
    baseline: ArmStats,
    canary: ArmStats,
    cfg: RolloutSettings,
    metric: str,
    alpha: float,
    level: float | None = None,
) -> Check:
    """Canary against baseline on ``metric`` (see the module docstring and :func:`non_inferiority`)."""
    detail = f"{canary.labelled} canary and {baseline.labelled} baseline labelled predictions"
    if min(baseline.labelled, canary.labelled) < cfg.min_labelled:
        return Check(
            "quality", "not_evaluated", None, cfg.max_quality_drop, f"{detail}; needs {cfg.min_labelled} each"
        )
    if metric not in ("accuracy", "rmse", "mae") and (
        len(baseline.labels) != baseline.labelled or len(canary.labels) != canary.labelled
    ):
        return Check("quality", "not_evaluated", None, cfg.max_quality_drop, f"{detail}; labels not kept")
    rng = np.random.default_rng(0)
    positive = _positive(baseline, canary)
    got_b = _arm_metric(baseline, metric, positive, cfg, rng)
    got_c = _arm_metric(canary, metric, positive, cfg, rng)
    for got in (got_b, got_c):
        if isinstance(got, str):
            return Check("quality", "not_evaluated", None, cfg.max_quality_drop, f"{metric}: {got}; {detail}")
    assert not isinstance(got_b, str) and not isinstance(got_c, str)
    (vb, var_b), (vc, var_c) = got_b, got_c
    if _HIGHER_IS_BETTER[metric]:
        delta, se = vc - vb, float(np.sqrt(var_b + var_c))
    else:
        if vb <= 0:
            delta, se = (0.0 if vc == 0 else -float("inf")), 0.0
        else:  # relative change (baseline - canary) / baseline, delta method for its error
            delta = (vb - vc) / vb
            se = float(np.sqrt(var_c / vb**2 + var_b * vc**2 / vb**4))
    what = f"{metric} {vc:.4f} vs baseline {vb:.4f}; {detail}"
    return non_inferiority("quality", delta, se, cfg, alpha, what, level)
