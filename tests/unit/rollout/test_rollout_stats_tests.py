"""A/B significance tests against scipy and simulated experiments; canary step analysis."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as st

from mloop.config.settings import RolloutSettings
from mloop.rollout import (
    ArmStats,
    analyze_step,
    compare_arms,
    output_drift,
    two_proportion_ztest,
    welch_ttest,
)
from mloop.rollout.abtest import min_sample_size_mean, min_sample_size_proportion


def test_two_proportion_ztest_matches_the_textbook_formula() -> None:
    z, p, diff, (lo, hi) = two_proportion_ztest(450, 500, 400, 500)
    pooled = 850 / 1000
    expected_z = (0.8 - 0.9) / np.sqrt(pooled * (1 - pooled) * (2 / 500))
    assert z == pytest.approx(expected_z)
    assert p == pytest.approx(2 * st.norm.sf(abs(expected_z)))
    assert diff == pytest.approx(-0.1)
    half = 1.959964 * np.sqrt(0.9 * 0.1 / 500 + 0.8 * 0.2 / 500)
    assert (lo, hi) == pytest.approx((-0.1 - half, -0.1 + half), rel=1e-5)


def test_welch_ttest_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 80), rng.normal(1.4, 2.0, 120)
    t, p, diff, (lo, hi) = welch_ttest(a, b)
    ref = st.ttest_ind(b, a, equal_var=False)
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    assert lo < diff < hi and diff == pytest.approx(b.mean() - a.mean())


def test_minimum_sample_sizes_grow_as_the_effect_shrinks() -> None:
    assert min_sample_size_proportion(0.8, 0.05, 0.05, 0.8) > min_sample_size_proportion(0.8, 0.1, 0.05, 0.8)
    # The classic value: p 0.5 vs 0.6 needs about 385-390 per arm at 5% / 80% power.
    assert 380 <= min_sample_size_proportion(0.6, 0.1, 0.05, 0.8) <= 400
    assert min_sample_size_mean(1.0, 0.5, 0.05, 0.8) == pytest.approx(63, abs=1)


def _arm(name: str, outcomes: np.ndarray) -> ArmStats:
    return ArmStats(name, name, requests=outcomes.size, outcomes=outcomes.astype(float))


def test_ab_declares_the_better_arm_with_a_ci_covering_the_true_effect() -> None:
    rng = np.random.default_rng(1)
    cfg = RolloutSettings(ab_min_effect=0.1, min_labelled=30)
    arms = {"champion": _arm("champion", rng.random(600) < 0.70), "b": _arm("b", rng.random(600) < 0.85)}
    report = compare_arms(arms, "champion", cfg, classification=True)
    assert report["winner"] == "b"
    [c] = report["comparisons"]
    assert c["enough"] and c["p_value"] < 0.05 and c["ci"][0] < 0.15 < c["ci"][1]
    assert c["min_sample_size"] <= 600


def test_ab_declares_no_winner_without_a_difference_nor_before_the_minimum_sample() -> None:
    rng = np.random.default_rng(2)
    cfg = RolloutSettings(ab_min_effect=0.1, min_labelled=30)
    same = {"champion": _arm("champion", rng.random(600) < 0.8), "b": _arm("b", rng.random(600) < 0.8)}
    report = compare_arms(same, "champion", cfg, classification=True)
    assert report["winner"] is None and "no significant difference" in report["verdict"]
    few = {"champion": _arm("champion", np.ones(40)), "b": _arm("b", np.zeros(40))}
    early = compare_arms(few, "champion", cfg, classification=True)
    assert early["winner"] is None and early["verdict"].startswith("collecting")
    assert early["comparisons"][0]["p_value"] is None


def test_ab_regression_compares_absolute_errors_lower_is_better() -> None:
    rng = np.random.default_rng(3)
    cfg = RolloutSettings(ab_min_effect=0.3, min_labelled=30)
    arms = {
        "champion": _arm("champion", np.abs(rng.normal(0, 1.5, 400))),
        "b": _arm("b", np.abs(rng.normal(0, 1, 400))),
    }
    report = compare_arms(arms, "champion", cfg, classification=False)
    assert report["comparisons"][0]["test"] == "mSPRT (always valid), difference of means"
    assert report["winner"] == "b"


def test_ab_always_valid_test_stays_quiet_when_looked_at_after_every_label() -> None:
    """Equal arms looked at after every new pair of labels: the always-valid p-value is meant for this
    (a fixed-sample z-test re-run the same way declares a winner far more often than its level)."""
    from mloop.rollout.abtest import always_valid

    rng = np.random.default_rng(11)
    false_winners = 0
    for _ in range(100):
        a, b = rng.random(1500) < 0.8, rng.random(1500) < 0.8
        n = np.arange(200, 1501, 10)
        ca, cb = np.cumsum(a)[n - 1] / n, np.cumsum(b)[n - 1] / n
        var = ca * (1 - ca) / n + cb * (1 - cb) / n
        false_winners += any(
            always_valid(float(d), float(v), 0.05, 0.05)[0] < 0.05 for d, v in zip(cb - ca, var, strict=True)
        )
    assert false_winners <= 8


def _stats(
    name: str, n: int, errors: int = 0, latency: float = 5.0, preds: list[int] | None = None
) -> ArmStats:
    return ArmStats(
        name,
        name,
        requests=n,
        errors=errors,
        logged=n - errors,
        latency_ms=np.full(n - errors, latency),
        predictions=preds if preds is not None else [0, 1] * ((n - errors) // 2),
    )


def test_canary_step_passes_fails_on_each_check_and_waits() -> None:
    cfg = RolloutSettings(min_requests_per_step=20, max_error_rate=0.05, max_latency_ratio=2.0)
    base = _stats("champion", 200)
    ok = analyze_step(base, _stats("canary", 30), cfg, classification=True, step_requests=30, held_s=1)
    assert ok.verdict == "pass"
    errors = analyze_step(
        base, _stats("canary", 30, errors=6), cfg, classification=True, step_requests=30, held_s=1
    )
    assert errors.verdict == "fail" and errors.failing == "error_rate"
    slow = analyze_step(
        base, _stats("canary", 30, latency=50), cfg, classification=True, step_requests=30, held_s=1
    )
    assert slow.verdict == "fail" and slow.failing == "latency"
    drift = analyze_step(
        base, _stats("canary", 30, preds=[1] * 30), cfg, classification=True, step_requests=30, held_s=1
    )
    assert drift.verdict == "fail" and drift.failing == "prediction_drift"
    wait = analyze_step(base, _stats("canary", 5), cfg, classification=True, step_requests=5, held_s=1)
    assert wait.verdict == "wait" and "5/20" in wait.reason


def test_errors_are_judged_at_the_step_look_not_before() -> None:
    """Checks are evaluated once per step (a planned look): looking at every advance would spend the
    false-rollback budget many times over."""
    cfg = RolloutSettings(min_requests_per_step=100, max_error_rate=0.01)
    early = analyze_step(
        _stats("champion", 500),
        _stats("canary", 4, errors=2),
        cfg,
        classification=True,
        step_requests=4,
        held_s=0,
    )
    assert early.verdict == "wait" and early.checks == []
    look = analyze_step(
        _stats("champion", 500),
        _stats("canary", 100, errors=8),
        cfg,
        classification=True,
        step_requests=100,
        held_s=0,
    )
    assert look.verdict == "fail" and look.failing == "error_rate"


def test_quality_check_needs_labels_then_compares_accuracy() -> None:
    cfg = RolloutSettings(
        min_requests_per_step=10, min_labelled=20, max_quality_drop=0.05, max_prediction_drift=1.0
    )
    base, can = _stats("champion", 60), _stats("canary", 60)
    base.outcomes, can.outcomes = np.ones(10), np.zeros(10)
    few = analyze_step(base, can, cfg, classification=True, step_requests=60, held_s=1)
    assert few.verdict == "pass" and next(c for c in few.checks if c.name == "quality").passed is None
    base.outcomes, can.outcomes = np.r_[np.ones(45), np.zeros(5)], np.r_[np.ones(20), np.zeros(30)]
    bad = analyze_step(base, can, cfg, classification=True, step_requests=60, held_s=1)
    assert bad.verdict == "fail" and bad.failing == "quality" and bad.checks[-1].value == pytest.approx(0.5)


def test_output_drift_is_zero_for_equal_outputs_and_large_for_opposite_ones() -> None:
    assert output_drift([0, 1] * 50, [0, 1] * 50, True) == pytest.approx(0.0, abs=1e-9)
    assert output_drift([0] * 90 + [1] * 10, [1] * 90 + [0] * 10, True) > 0.5
    rng = np.random.default_rng(0)
    assert output_drift(list(rng.normal(0, 1, 500)), list(rng.normal(0, 1, 500)), False) < 0.1
    assert output_drift(list(rng.normal(0, 1, 500)), list(rng.normal(3, 1, 500)), False) > 0.5
    assert output_drift([], [1], True) is None


def _ranked_arm(name: str, n: int, auc_shift: float, seed: int) -> ArmStats:
    """Labelled predictions of a binormal scorer at 8 % positives (``auc_shift``: its separation)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.08).astype(int)
    s = rng.normal(0, 1, n) + y * auc_shift
    pred = (s > 1.6).astype(int)
    arm = ArmStats(name, name, requests=n, logged=n)
    arm.labels, arm.labelled_predictions = y.tolist(), pred.tolist()
    arm.scores = 1 / (1 + np.exp(-s))
    arm.outcomes = (pred == y).astype(float)
    return arm


def test_ab_on_the_gate_metric_finds_the_better_ranking_accuracy_cannot_see() -> None:
    # At 8 % positives a better ranking barely moves accuracy; the A/B test on ROC AUC (the gate
    # metric) declares it, with DeLong's variance inside the always-valid test.
    cfg = RolloutSettings(ab_min_effect=0.05, min_labelled=50)
    arms = {"champion": _ranked_arm("champion", 4000, 1.4, 1), "b": _ranked_arm("b", 4000, 2.2, 2)}
    by_auc = compare_arms(arms, "champion", cfg, classification=True, metric="roc_auc")
    [c] = by_auc["comparisons"]
    assert by_auc["winner"] == "b" and by_auc["metric"] == "roc_auc", by_auc["verdict"]
    assert c["test"] == "mSPRT (always valid), difference of roc_auc" and c["ci"][0] > 0
    by_accuracy = compare_arms(arms, "champion", cfg, classification=True)
    assert by_accuracy["winner"] is None
    same = {"champion": _ranked_arm("champion", 4000, 1.4, 3), "b": _ranked_arm("b", 4000, 1.4, 4)}
    assert compare_arms(same, "champion", cfg, classification=True, metric="roc_auc")["winner"] is None
    few = {"champion": _ranked_arm("champion", 30, 1.4, 5), "b": _ranked_arm("b", 30, 2.2, 6)}
    early = compare_arms(few, "champion", cfg, classification=True, metric="roc_auc")
    assert early["winner"] is None and early["verdict"].startswith("collecting")
