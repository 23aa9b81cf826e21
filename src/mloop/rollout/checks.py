"""The canary's statistical checks: each one a test with its own share of the false-rollback budget.

Every check returns a :class:`Check` whose ``status`` is ``passed``, ``failed``, ``not_evaluated``
(too little data to say anything) or ``inconclusive`` (evaluated, but the interval is still too wide
to verify the canary). Only ``failed`` rolls a canary back, and only ``passed`` counts as passed.

Multiple testing: a rollout looks at its canary once per step and, while it waits for labels, again
each time the labelled sample has grown by half. The false-rollback budget
``rollout.false_rollback_rate`` is split equally between the checks (Bonferroni), and each check
spends its share over the looks (:func:`look_alpha`): three quarters spread evenly over the planned
looks (one per step), a quarter over the label-wait looks as ``6 / (pi^2 m^2)`` (a series that sums to
one however many looks there are). A canary as good as the baseline is so rolled back with at most
``false_rollback_rate`` probability over the whole rollout.

* ``error_rate`` — Fisher's exact test (canary more errors than the baseline, by more than
  ``error_rate_margin``) and an exact binomial (Clopper-Pearson) lower bound above ``max_error_rate``.
* ``latency`` — the canary against the baseline scaled by ``max_latency_ratio`` and shifted by
  ``latency_margin_ms`` (the slower of the two): a one-sided Mann-Whitney test on the whole
  distribution, and a distribution-free (order-statistic) confidence bound on the
  ``latency_quantile`` for the tail.
* ``prediction_drift`` — Jensen-Shannon distance above ``max_prediction_drift`` *and* a chi-square
  test saying the arms' output distributions differ.
* ``quality`` — the configured metric with a confidence interval of (canary - baseline): DeLong's
  variance for ROC AUC, the bootstrap for the others (see :mod:`mloop.rollout.quality`).
* ``estimated_quality`` — the same non-inferiority rule fed with a label-free estimate (and its
  standard error) by whoever estimates it: :func:`estimated_quality_check`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mloop.config.settings import RolloutSettings
from mloop.monitoring.stattests import fill_zeros
from mloop.monitoring.stattests.jensenshannon import js_distance

__all__ = [
    "CHECKS",
    "Check",
    "Status",
    "drift_check",
    "error_check",
    "estimated_quality_check",
    "latency_check",
    "look_alpha",
    "non_inferiority",
    "quantile_bounds",
    "verify_level",
]

Status = Literal["passed", "failed", "not_evaluated", "inconclusive"]

CHECKS = ("error_rate", "latency", "prediction_drift", "quality", "estimated_quality")
"""The checks that share the false-rollback budget."""

PLANNED_SHARE = 0.75
"""Share of a check's alpha spent on the planned looks (one per step); the rest on label-wait looks."""


@dataclass
class Check:
    """One check: ``status`` says what it concluded; ``passed`` is True/False/None (None: not decided)."""

    name: str
    status: Status
    value: float | None
    threshold: float
    detail: str
    p_value: float | None = None
    ci: tuple[float, float] | None = None
    alpha: float | None = None

    @property
    def passed(self) -> bool | None:
        return {"passed": True, "failed": False}.get(self.status)


def look_alpha(cfg: RolloutSettings, step: int, label_look: int = 0) -> float:
    """Alpha one check may spend at the look of canary step ``step`` (0-based), or at the
    ``label_look``-th look while the rollout waits for labels (1-based; 0: a planned look)."""
    per_check = cfg.false_rollback_rate / len(CHECKS)
    if label_look > 0:
        return per_check * (1 - PLANNED_SHARE) * 6 / (math.pi**2 * label_look**2)
    return per_check * PLANNED_SHARE / max(len(cfg.steps), 1)


def _clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    from scipy.stats import beta

    return 0.0 if k == 0 else float(beta.ppf(alpha, k, n - k + 1))


def error_check(
    base_errors: int, base_requests: int, errors: int, requests: int, cfg: RolloutSettings, alpha: float
) -> Check:
    """Fisher's exact test against the baseline and an exact bound against ``max_error_rate``."""
    from scipy.stats import fisher_exact

    detail = (
        f"{errors} server errors (5xx) in {requests} canary requests (baseline {base_errors}/"
        f"{base_requests}; client errors are not counted)"
    )
    rate = errors / requests if requests else 0.0
    if requests == 0 or base_requests == 0:
        return Check("error_rate", "not_evaluated", None, cfg.max_error_rate, f"{detail}; no traffic yet")
    base_rate = base_errors / base_requests
    table = [[errors, requests - errors], [base_errors, base_requests - base_errors]]
    p = float(fisher_exact(table, alternative="greater")[1])
    lower = _clopper_pearson_lower(errors, requests, alpha / 2)
    worse = p < alpha / 2 and rate - base_rate > cfg.error_rate_margin
    above = lower > cfg.max_error_rate
    detail += f"; Fisher p={p:.3g}, rate lower bound {lower:.4f}"
    return Check(
        "error_rate", "failed" if worse or above else "passed", rate, cfg.max_error_rate, detail, p,
        None, alpha,
    )  # fmt: skip


def quantile_bounds(x: np.ndarray, q: float, alpha: float) -> tuple[float, float] | None:
    """Distribution-free two-sided (1 - alpha) bounds of the ``q`` quantile from order statistics
    (binomial), or None when ``x`` is too small for them."""
    from scipy.stats import binom

    n = x.size
    lo_k = int(binom.ppf(alpha / 2, n, q))  # P(Bin(n, q) < lo_k) <= alpha/2: x_(lo_k) <= quantile
    hi_k = int(binom.ppf(1 - alpha / 2, n, q)) + 1
    if lo_k < 1 or hi_k > n:
        return None
    s = np.sort(x)
    return float(s[lo_k - 1]), float(s[hi_k - 1])


def latency_check(
    baseline_ms: np.ndarray, canary_ms: np.ndarray, cfg: RolloutSettings, alpha: float
) -> Check:
    """Is the canary slower than both ``max_latency_ratio`` x and ``latency_margin_ms`` + the baseline?"""
    from scipy.stats import mannwhitneyu

    ratio, margin, q = cfg.max_latency_ratio, cfg.latency_margin_ms, cfg.latency_quantile
    nb, nc = baseline_ms.size, canary_ms.size
    qs = f"p{q * 100:g}"
    if min(nb, nc) < cfg.min_latency_samples:
        return Check(
            "latency", "not_evaluated", None, ratio,
            f"{nc} canary and {nb} baseline latencies; needs {cfg.min_latency_samples} each",
        )  # fmt: skip
    b_q, c_q = float(np.quantile(baseline_ms, q)), float(np.quantile(canary_ms, q))
    observed = c_q / b_q if b_q > 0 else None
    allowed = np.maximum(baseline_ms * ratio, baseline_ms + margin)
    p = float(mannwhitneyu(canary_ms, allowed, alternative="greater").pvalue)
    bulk = p < alpha / 2
    tail = False
    cb, bb = quantile_bounds(canary_ms, q, alpha / 2), quantile_bounds(baseline_ms, q, alpha / 2)
    ci = None
    if cb is not None and bb is not None:
        ci = (cb[0], cb[1])
        tail = cb[0] > max(bb[1] * ratio, bb[1] + margin)
    detail = (
        f"{qs} {c_q:.2f} ms vs baseline {b_q:.2f} ms ({nc} and {nb} requests); slower than "
        f"max({ratio:g}x, +{margin:g} ms): Mann-Whitney p={p:.3g}"
        + (
            ""
            if cb is None or bb is None
            else f", {qs} bounds {cb[0]:.2f}-{cb[1]:.2f} vs {bb[0]:.2f}-{bb[1]:.2f} ms"
        )
    )
    return Check("latency", "failed" if bulk or tail else "passed", observed, ratio, detail, p, ci, alpha)


def _outputs(baseline: list[Any], canary: list[Any], classification: bool) -> tuple[np.ndarray, np.ndarray]:
    if classification:
        b_str, c_str = np.asarray(baseline).astype(str), np.asarray(canary).astype(str)
        levels, codes = np.unique(np.concatenate([b_str, c_str]), return_inverse=True)
        p = np.bincount(codes[: b_str.size], minlength=levels.size).astype(float)
        c = np.bincount(codes[b_str.size :], minlength=levels.size).astype(float)
        return p, c
    b = np.asarray(baseline, dtype=float)
    c_ = np.asarray(canary, dtype=float)
    edges = np.unique(np.quantile(b, np.linspace(0.1, 0.9, 9)))
    p = np.bincount(np.searchsorted(edges, b, side="right"), minlength=edges.size + 1).astype(float)
    q = np.bincount(np.searchsorted(edges, c_, side="right"), minlength=edges.size + 1).astype(float)
    return p, q


def output_drift(baseline: list[Any], candidate: list[Any], classification: bool) -> float | None:
    """Jensen-Shannon distance between two arms' outputs (None if either has none)."""
    if not baseline or not candidate:
        return None
    p, q = _outputs(baseline, candidate, classification)
    return float(js_distance(fill_zeros(p / p.sum()), fill_zeros(q / q.sum())))


def drift_check(
    baseline: list[Any], canary: list[Any], cfg: RolloutSettings, alpha: float, *, classification: bool
) -> Check:
    """Jensen-Shannon distance above the threshold, confirmed by a chi-square test of the two histograms."""
    from scipy.stats import chi2_contingency

    detail = f"outputs of {len(baseline)} baseline and {len(canary)} canary predictions"
    if len(baseline) < cfg.min_latency_samples or len(canary) < cfg.min_latency_samples:
        return Check(
            "prediction_drift", "not_evaluated", None, cfg.max_prediction_drift,
            f"{detail}; needs {cfg.min_latency_samples} each",
        )  # fmt: skip
    p_counts, c_counts = _outputs(baseline, canary, classification)
    dist = float(js_distance(fill_zeros(p_counts / p_counts.sum()), fill_zeros(c_counts / c_counts.sum())))
    table = np.vstack([p_counts, c_counts])
    table = table[:, table.sum(axis=0) > 0]
    p = 1.0 if table.shape[1] < 2 else float(chi2_contingency(table)[1])
    failed = dist > cfg.max_prediction_drift and p < alpha
    detail = f"Jensen-Shannon distance between {detail}; chi-square p={p:.3g}"
    return Check(
        "prediction_drift", "failed" if failed else "passed", dist, cfg.max_prediction_drift, detail, p,
        None, alpha,
    )  # fmt: skip


def verify_level(cfg: RolloutSettings, label_look: int = 0) -> float:
    """Confidence of the lower bound that verifies quality at label-wait look ``label_look`` (0: the
    planned look): ``1 - confidence`` is spent over the looks as ``6 / (pi^2 (m + 1)^2)``, so a canary
    worse than the margin is verified with at most that chance however long it waits for labels."""
    return 1 - (1 - cfg.confidence) * 6 / (math.pi**2 * (label_look + 1) ** 2)


def non_inferiority(
    name: str,
    delta: float,
    se: float,
    cfg: RolloutSettings,
    alpha: float,
    what: str,
    level: float | None = None,
) -> Check:
    """Judge ``delta`` = canary - baseline (higher is better) with standard error ``se``: failed when
    significantly below zero at one-sided ``alpha`` and worse than half the margin, passed when the
    one-sided ``level`` (default ``confidence``) lower bound is above ``-max_quality_drop``, else
    inconclusive."""
    from scipy.stats import norm

    level = cfg.confidence if level is None else level
    margin = cfg.max_quality_drop
    upper = delta + float(norm.ppf(1 - alpha)) * se
    lower = delta - float(norm.ppf(level)) * se
    p = float(norm.cdf(delta / se)) if se > 0 else (0.0 if delta < 0 else 1.0)
    detail = f"{what}; change {delta:+.4f}, {level:.1%} lower bound {lower:+.4f} (margin -{margin:g})"
    if upper < 0 and delta < -margin / 2:
        status: Status = "failed"
    elif lower >= -margin:
        status = "passed"
    else:
        status = "inconclusive"
        detail += "; interval too wide to verify, needs more labels"
    return Check(name, status, -delta, margin, detail, p, (lower, upper), alpha)


def estimated_quality_check(
    estimated_delta: float | None, standard_error: float | None, cfg: RolloutSettings, alpha: float, what: str
) -> Check:
    """The quality rule fed with a label-free estimate of (canary - baseline) and its standard error
    (from a performance estimator): ``not_evaluated`` when no estimate is available."""
    if estimated_delta is None or standard_error is None or not math.isfinite(standard_error):
        return Check("estimated_quality", "not_evaluated", None, cfg.max_quality_drop, f"{what}; no estimate")
    return non_inferiority("estimated_quality", estimated_delta, standard_error, cfg, alpha, what)
