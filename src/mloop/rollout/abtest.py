"""A/B significance: compare each challenger arm with the champion arm on labelled traffic.

The compared metric is the rollout's quality metric (``rollout.quality_metric``; ``auto``: the metric
the version was gated on, e.g. ROC AUC), or, when none is given, accuracy for classifiers (a rate)
and the absolute error for regressors (continuous, lower is better). For accuracy and the absolute
error both arms need the minimum sample size for detecting ``rollout.ab_min_effect`` at
``rollout.confidence`` with ``rollout.power`` (and at least ``rollout.min_labelled``) before a test is
run; for the other metrics (ROC AUC with DeLong's variance, PR AUC, F1 and RMSE with the bootstrap's,
as the canary's quality check computes them) at least ``rollout.min_labelled`` and, for the AUCs,
labels of both classes. Until then no winner is declared. With several challengers the
significance level is split between them (Bonferroni).

A rollout re-runs the comparison at every advance, on more labels each time. A fixed-sample test
(z-test, t-test) re-run like this declares false winners far more often than its level says, so the
decision uses the mixture sequential probability ratio test (mSPRT; Johari et al., "Always valid
inference", 2017), whose p-value and interval stay valid however often they are looked at: with
the effect estimate's variance ``V`` and a normal mixture of scale ``tau = ab_min_effect``,
``Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 * effect^2 / (2 V (V + tau^2)))`` and the p-value is
``min(1, 1 / Lambda)``. Written here because scipy and statsmodels have no mSPRT.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mloop.config.settings import RolloutSettings
from mloop.rollout.quality import arm_metric, higher_is_better
from mloop.rollout.stats import ArmStats

__all__ = [
    "Comparison",
    "always_valid",
    "compare_arms",
    "min_sample_size_mean",
    "min_sample_size_proportion",
    "two_proportion_ztest",
    "welch_ttest",
]


def _z(q: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(q))


def two_proportion_ztest(
    x_a: int, n_a: int, x_b: int, n_b: int, confidence: float = 0.95
) -> tuple[float, float, float, tuple[float, float]]:
    """(z, two-sided p-value, effect p_b - p_a, confidence interval of the effect)."""
    from scipy.stats import norm

    pa, pb = x_a / n_a, x_b / n_b
    pooled = (x_a + x_b) / (n_a + n_b)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    diff = pb - pa
    z = diff / se0 if se0 > 0 else 0.0
    p = float(2 * norm.sf(abs(z))) if se0 > 0 else 1.0
    se = math.sqrt(pa * (1 - pa) / n_a + pb * (1 - pb) / n_b)
    half = _z(1 - (1 - confidence) / 2) * se
    return z, p, diff, (diff - half, diff + half)


def welch_ttest(
    a: np.ndarray, b: np.ndarray, confidence: float = 0.95
) -> tuple[float, float, float, tuple[float, float]]:
    """(t, two-sided p-value, effect mean(b) - mean(a), confidence interval of the effect)."""
    from scipy.stats import t as t_dist

    va, vb = float(np.var(a, ddof=1)), float(np.var(b, ddof=1))
    na, nb = a.size, b.size
    se2 = va / na + vb / nb
    diff = float(b.mean() - a.mean())
    if se2 <= 0:
        return 0.0, 1.0 if diff == 0 else 0.0, diff, (diff, diff)
    se = math.sqrt(se2)
    df = se2**2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    t = diff / se
    p = float(2 * t_dist.sf(abs(t), df))
    half = float(t_dist.ppf(1 - (1 - confidence) / 2, df)) * se
    return t, p, diff, (diff - half, diff + half)


def always_valid(effect: float, var: float, tau: float, alpha: float) -> tuple[float, tuple[float, float]]:
    """mSPRT always-valid p-value of ``effect`` (variance ``var``) against 0, and the always-valid
    (1 - alpha) confidence interval of the effect (see the module docstring)."""
    if var <= 0:
        return (1.0 if effect == 0 else 0.0), (effect, effect)
    t2 = tau * tau
    log_lambda = 0.5 * math.log(var / (var + t2)) + t2 * effect * effect / (2 * var * (var + t2))
    p = 1.0 if log_lambda <= 0 else math.exp(-log_lambda)
    half = math.sqrt(var * (var + t2) / t2 * (2 * math.log(1 / alpha) + math.log((var + t2) / var)))
    return min(1.0, p), (effect - half, effect + half)


def min_sample_size_proportion(p_base: float, effect: float, alpha: float, power: float) -> int:
    """Per-arm n to detect a change of ``effect`` from the rate ``p_base`` (two-sided)."""
    p1 = min(max(p_base, 1e-6), 1 - 1e-6)
    p2 = p1 - effect if p1 - effect > 0 else p1 + effect
    p2 = min(max(p2, 1e-6), 1 - 1e-6)
    bar = (p1 + p2) / 2
    za, zb = _z(1 - alpha / 2), _z(power)
    n = (za * math.sqrt(2 * bar * (1 - bar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / effect**2
    return math.ceil(n)


def min_sample_size_mean(std: float, effect: float, alpha: float, power: float) -> int:
    """Per-arm n to detect a difference of means of ``effect`` with spread ``std`` (two-sided)."""
    za, zb = _z(1 - alpha / 2), _z(power)
    return max(2, math.ceil(2 * ((za + zb) * std / effect) ** 2))


@dataclass
class Comparison:
    """One challenger against the champion on the compared metric."""

    arm: str
    metric: str
    test: str
    n_champion: int
    n_challenger: int
    champion_value: float | None
    challenger_value: float | None
    min_sample_size: int | None
    enough: bool
    effect: float | None = None
    ci: tuple[float, float] | None = None
    p_value: float | None = None
    significant: bool = False
    better: str | None = None


def _compare_on(
    name: str, champion: str, base: ArmStats, ch: ArmStats, metric: str, cfg: RolloutSettings, alpha: float
) -> Comparison:
    """One challenger against the champion on a metric without a per-request outcome (ROC AUC, PR AUC,
    F1, RMSE): each arm's value and variance as the canary's quality check computes them."""
    got_a, got_b = arm_metric(base, metric, cfg, ch), arm_metric(ch, metric, cfg, base)
    c = Comparison(
        name,
        metric,
        "mSPRT (always valid), difference of " + metric,
        base.labelled,
        ch.labelled,
        None if isinstance(got_a, str) else got_a[0],
        None if isinstance(got_b, str) else got_b[0],
        cfg.min_labelled,
        enough=min(base.labelled, ch.labelled) >= cfg.min_labelled
        and not isinstance(got_a, str)
        and not isinstance(got_b, str),
    )
    if c.enough and not isinstance(got_a, str) and not isinstance(got_b, str):
        eff, var = got_b[0] - got_a[0], got_a[1] + got_b[1]
        if var > 0:
            p, ci = always_valid(eff, var, cfg.ab_min_effect, alpha)
            c.effect, c.ci, c.p_value = eff, ci, p
            c.significant = p < alpha and not (ci[0] <= 0 <= ci[1])
            if c.significant:
                c.better = name if (eff > 0) == higher_is_better(metric) else champion
    return c


def compare_arms(
    stats: dict[str, ArmStats],
    champion: str,
    cfg: RolloutSettings,
    *,
    classification: bool,
    metric: str | None = None,
) -> dict[str, Any]:
    """Comparisons of every challenger with ``champion`` on ``metric`` (default: accuracy, or the
    absolute error for regressors) and the winner, if one is declared."""
    base = stats[champion]
    challengers = [a for a in stats if a != champion]
    alpha = (1 - cfg.confidence) / max(len(challengers), 1)
    default = "accuracy" if classification else "mae"
    metric = metric or default
    out: list[Comparison] = []
    if metric != default:  # a metric without a per-request outcome
        out = [_compare_on(name, champion, base, stats[name], metric, cfg, alpha) for name in challengers]
        challengers = []
    for name in challengers:
        ch = stats[name]
        a, b = base.outcomes, ch.outcomes
        both = np.concatenate([a, b])
        if classification:
            need = min_sample_size_proportion(
                float(both.mean()) if both.size else 0.5, cfg.ab_min_effect, alpha, cfg.power
            )
        else:
            std = float(both.std(ddof=1)) if both.size > 1 else 0.0
            need = min_sample_size_mean(std, cfg.ab_min_effect, alpha, cfg.power) if std > 0 else 0
        need = max(need, cfg.min_labelled)
        c = Comparison(
            name,
            metric,
            "mSPRT (always valid), difference of proportions"
            if classification
            else "mSPRT (always valid), difference of means",
            a.size,
            b.size,
            float(a.mean()) if a.size else None,
            float(b.mean()) if b.size else None,
            need,
            enough=min(a.size, b.size) >= need,
        )
        if c.enough:
            eff = float(b.mean() - a.mean())
            if classification:
                pa, pb = float(a.mean()), float(b.mean())
                var = pa * (1 - pa) / a.size + pb * (1 - pb) / b.size
            else:
                var = float(np.var(a, ddof=1)) / a.size + float(np.var(b, ddof=1)) / b.size
            p, ci = always_valid(eff, var, cfg.ab_min_effect, alpha)
            c.effect, c.ci, c.p_value = eff, ci, p
            c.significant = p < alpha and not (ci[0] <= 0 <= ci[1])
            if c.significant:
                challenger_better = eff > 0 if classification else eff < 0
                c.better = name if challenger_better else champion
        out.append(c)
    winner, verdict = _winner(out, champion)
    return {
        "metric": metric,
        "confidence": cfg.confidence,
        "alpha_per_comparison": alpha,
        "comparisons": [asdict(c) for c in out],
        "winner": winner,
        "verdict": verdict,
    }


def _winner(comps: list[Comparison], champion: str) -> tuple[str | None, str]:
    if not comps:
        return None, "no challenger to compare"
    waiting = [c for c in comps if not c.enough]
    if waiting:
        parts = ", ".join(f"{c.arm} {min(c.n_champion, c.n_challenger)}/{c.min_sample_size}" for c in waiting)
        return None, f"collecting labelled traffic (labelled per arm / minimum sample size: {parts})"
    better = [c for c in comps if c.better == c.arm]
    if better:
        sign = 1.0 if higher_is_better(comps[0].metric) else -1.0
        key = lambda c: sign * (c.effect or 0.0)  # noqa: E731
        best = max(better, key=key)
        return best.arm, f"{best.arm} is better than {champion}: effect {best.effect:+.4f}, CI {_ci(best.ci)}"
    if all(c.better == champion for c in comps):
        return champion, f"{champion} is better than every challenger"
    return None, "no significant difference at the configured confidence"


def _ci(ci: tuple[float, float] | None) -> str:
    return "n/a" if ci is None else f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"
