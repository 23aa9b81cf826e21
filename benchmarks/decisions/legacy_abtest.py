"""Today's A/B significance test (a fixed-sample z-test re-run at every look), kept verbatim from git
(6ab1b2e:src/mloop/rollout/abtest.py) for the decision benchmark.

A/B significance: compare each challenger arm with the champion arm on labelled traffic.

The compared metric is accuracy for classifiers (a rate: two-proportion z-test) and the absolute
error for regressors (continuous: Welch's t-test, lower is better). Before a test is run both arms
need the minimum sample size for detecting ``rollout.ab_min_effect`` at ``rollout.confidence`` with
``rollout.power`` (and at least ``rollout.min_labelled``); until then no winner is declared. With
several challengers the significance level is split between them (Bonferroni).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mloop.config.settings import RolloutSettings
from mloop.rollout.stats import ArmStats

__all__ = [
    "Comparison",
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


def compare_arms(
    stats: dict[str, ArmStats], champion: str, cfg: RolloutSettings, *, classification: bool
) -> dict[str, Any]:
    """Comparisons of every challenger with ``champion`` and the winner, if one is declared."""
    base = stats[champion]
    challengers = [a for a in stats if a != champion]
    alpha = (1 - cfg.confidence) / max(len(challengers), 1)
    metric = "accuracy" if classification else "mae"
    out: list[Comparison] = []
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
            "two-proportion z-test" if classification else "Welch t-test",
            a.size,
            b.size,
            float(a.mean()) if a.size else None,
            float(b.mean()) if b.size else None,
            need,
            enough=min(a.size, b.size) >= need,
        )
        if c.enough:
            if classification:
                _, p, eff, ci = two_proportion_ztest(int(a.sum()), a.size, int(b.sum()), b.size, 1 - alpha)
            else:
                _, p, eff, ci = welch_ttest(a, b, 1 - alpha)
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
        key = (lambda c: c.effect or 0.0) if comps[0].metric == "accuracy" else (lambda c: -(c.effect or 0.0))
        best = max(better, key=key)
        return best.arm, f"{best.arm} is better than {champion}: effect {best.effect:+.4f}, CI {_ci(best.ci)}"
    if all(c.better == champion for c in comps):
        return champion, f"{champion} is better than every challenger"
    return None, "no significant difference at the configured confidence"


def _ci(ci: tuple[float, float] | None) -> str:
    return "n/a" if ci is None else f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"
