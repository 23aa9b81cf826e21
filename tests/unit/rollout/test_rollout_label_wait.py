"""The statistical canary checks on injected data, and the wait for labels before 100 % traffic.

Latencies, errors and scores are generated here (seeded), never measured, so no decision depends on
the machine's load.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mloop.config import Settings
from mloop.config.settings import RolloutSettings
from mloop.predlog import MemoryPredictionLog
from mloop.predlog.record import PredictionRecord, new_prediction_id
from mloop.rollout import RolloutController
from mloop.rollout.analysis import analyze_step, summarize
from mloop.rollout.checks import Check, estimated_quality_check, latency_check, look_alpha
from mloop.rollout.quality import delong_auc, quality_check
from mloop.rollout.stats import ArmStats

RNG = np.random.default_rng(7)


def _latencies(n: int, scale: float = 1.0) -> np.ndarray:
    """Lognormal around 20 ms with a 2 % tail up to 10x: the noise of a shared machine."""
    x = 20.0 * np.exp(RNG.normal(0, 0.4, n)) * scale
    tail = RNG.random(n) < 0.02
    x[tail] *= RNG.uniform(3, 10, int(tail.sum()))
    return x


def test_latency_needs_samples_ignores_noise_and_catches_a_slower_canary() -> None:
    cfg = RolloutSettings()
    alpha = look_alpha(cfg, 0)
    few = latency_check(_latencies(500), _latencies(10), cfg, alpha)
    assert few.status == "not_evaluated" and few.passed is None
    same = [latency_check(_latencies(2000), _latencies(300), cfg, alpha).status for _ in range(40)]
    assert same.count("failed") == 0
    slow = latency_check(_latencies(2000), _latencies(300, scale=2.0), cfg, alpha)
    assert slow.status == "failed" and slow.value is not None and slow.value > 1.5
    # 2 ms slower on a 1 ms model is twice as slow but within the 10 ms margin: not a rollback.
    tiny = latency_check(np.full(500, 1.0), np.full(300, 3.0), cfg, alpha)
    assert tiny.status == "passed"


def _scored(n: int, auc_shift: float, seed: int) -> ArmStats:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.08).astype(int)
    s = rng.normal(0, 1, n) + y * auc_shift
    arm = ArmStats("arm", "v", requests=n, logged=n)
    arm.labels, arm.labelled_predictions = y.tolist(), (s > 1.6).astype(int).tolist()
    arm.scores = 1 / (1 + np.exp(-s))
    arm.outcomes = (np.array(arm.labelled_predictions) == y).astype(float)
    return arm


def test_delong_matches_the_rank_auc_and_quality_fails_a_worse_model() -> None:
    from sklearn.metrics import roc_auc_score

    arm = _scored(4000, 1.47, 1)
    auc, var = delong_auc(np.array(arm.labels), arm.scores)
    assert auc == pytest.approx(roc_auc_score(arm.labels, arm.scores)) and 0 < var < 1e-3
    cfg = RolloutSettings(min_labelled=200, max_quality_drop=0.02)
    base = _scored(20_000, 1.47, 2)  # ROC AUC 0.85
    worse = quality_check(base, _scored(8000, 1.19, 3), cfg, "roc_auc", look_alpha(cfg, 1))  # 0.80
    assert worse.status == "failed" and "roc_auc" in worse.detail
    loose = RolloutSettings(min_labelled=200, max_quality_drop=0.05)
    same = quality_check(base, _scored(20_000, 1.47, 4), loose, "roc_auc", look_alpha(loose, 1))
    assert same.status == "passed"
    few = quality_check(_scored(150, 1.47, 5), _scored(150, 1.47, 6), cfg, "roc_auc", 0.01)
    assert few.status == "not_evaluated" and few.passed is None and "needs 200 each" in few.detail


def test_a_check_not_evaluated_is_never_called_passed() -> None:
    cfg = RolloutSettings(min_requests_per_step=10, min_labelled=50)
    base = ArmStats(
        "champion", "1", requests=100, logged=100, latency_ms=_latencies(100), predictions=[0, 1] * 50
    )
    can = ArmStats(
        "canary", "2", requests=100, logged=100, latency_ms=_latencies(100), predictions=[0, 1] * 50
    )
    a = analyze_step(base, can, cfg, classification=True, step_requests=100, held_s=1)
    assert a.verdict == "pass" and a.unverified == ["quality"]
    assert "passed" not in a.reason.split("quality")[1] and "quality not evaluated" in a.reason
    assert summarize([Check("x", "passed", 0.0, 1.0, "")]) == "all 1 checks passed (x)"
    hook = estimated_quality_check(None, None, cfg, 0.01, "no estimator")
    assert hook.status == "not_evaluated"
    estimated = estimated_quality_check(-0.2, 0.01, cfg, 0.01, "estimated roc_auc")
    failed = analyze_step(base, can, cfg, classification=True, step_requests=100, held_s=1, extra=[estimated])
    assert failed.verdict == "fail" and failed.failing == "estimated_quality"


def _ctl(store: Any, registry: Any, predlog: MemoryPredictionLog, **rollout: Any) -> RolloutController:
    settings = Settings.model_validate(
        {
            "model": {"name": "fraud"},
            "rollout": {
                "steps": [50, 100],
                "min_requests_per_step": 20,
                "min_labelled": 20,
                "quality_metric": "accuracy",
                **rollout,
            },
        }
    )
    return RolloutController(settings, store=store, registry=registry, predlog=predlog, model_name="fraud")


def _serve(ctl: RolloutController, predlog: MemoryPredictionLog, rid: int, n: int) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = {}
    for arm, version in (("champion", "1"), ("canary", "2")):
        before = ctl.repo.counters(rid).get(arm, (0, 0))
        ctl.repo.write_counters(rid, "p1", {arm: (before[0] + n, before[1])})
        for i in range(n):
            pid = new_prediction_id()
            ids.setdefault(arm, []).append(pid)
            predlog.write_batch(
                [PredictionRecord(pid, "fraud", version, {"x": i}, i % 2, latency_ms=5.0, arm=arm)]
            )
    return ids


@pytest.mark.parametrize("policy", ["hold", "rollback", "promote_unverified"])
def test_unlabelled_canary_waits_for_labels_then_follows_the_policy(
    store, registry, predlog, policy: str
) -> None:
    ctl = _ctl(store, registry, predlog, label_wait_s=0, unlabelled_policy=policy)
    r = ctl.start(strategy="canary")
    _serve(ctl, predlog, r.id, 30)
    r = ctl.advance(r.id)
    assert r.state == "awaiting_labels" and r.weights() == {"champion": 0.5, "canary": 0.5}
    r = ctl.advance(r.id)  # the wait (0 s) is over
    expected = {
        "hold": "awaiting_labels",
        "rollback": "rolled_back",
        "promote_unverified": "promoted_unverified",
    }
    assert r.state == expected[policy], r.reason
    kinds = [e.kind for e in store.events(subject=f"rollout:{r.id}", limit=None)]
    assert "rollout.awaiting_labels" in kinds
    if policy == "promote_unverified":
        assert "UNVERIFIED" in r.reason and registry.aliases["champion"] == 2
        assert "rollout.promoted_unverified" in kinds and "rollout.promoted" not in kinds
    if policy == "rollback":
        assert r.analysis["failing"] == "quality" or "quality not verified" in r.reason


def test_labels_arriving_during_the_wait_verify_and_promote(store, registry, predlog) -> None:
    ctl = _ctl(store, registry, predlog, label_wait_s=3600)
    r = ctl.start(strategy="canary")
    ids = _serve(ctl, predlog, r.id, 30)
    assert ctl.advance(r.id).state == "awaiting_labels"
    store.add_feedback([(i, n % 2) for arm in ids.values() for n, i in enumerate(arm)])  # all right
    r = ctl.advance(r.id)
    assert r.state == "running" and r.step == 1 and r.analysis["quality_verified"]
    _serve(ctl, predlog, r.id, 30)
    r = ctl.advance(r.id)
    assert r.state == "promoted" and "quality verified" in r.reason


def test_an_unverified_promotion_is_verified_once_labels_arrive(store, registry, predlog) -> None:
    ctl = _ctl(store, registry, predlog, label_wait_s=0, unlabelled_policy="promote_unverified")
    r = ctl.start(strategy="canary")
    ids = _serve(ctl, predlog, r.id, 30)
    ctl.advance(r.id)
    assert ctl.advance(r.id).state == "promoted_unverified"
    assert ctl.advance(r.id).state == "promoted_unverified"  # no labels yet: nothing to judge
    store.add_feedback([(i, n % 2) for arm in ids.values() for n, i in enumerate(arm)])
    r = ctl.advance(r.id)
    assert r.state == "promoted" and "verified" in r.reason


def test_verify_promotions_judges_unverified_promotions_once_their_labels_are_in(
    store, registry, predlog
) -> None:
    ctl = _ctl(store, registry, predlog, label_wait_s=0, unlabelled_policy="promote_unverified")
    r = ctl.start(strategy="canary")
    ids = _serve(ctl, predlog, r.id, 30)
    ctl.advance(r.id)
    assert ctl.advance(r.id).state == "promoted_unverified"
    assert ctl.verify_promotions() == []  # no labels yet: left as it is
    # The canary got every label wrong, the champion every one right: the promotion is rolled back.
    store.add_feedback([(i, n % 2) for n, i in enumerate(ids["champion"])])
    store.add_feedback([(i, 1 - n % 2) for n, i in enumerate(ids["canary"])])
    [after] = ctl.verify_promotions(actor="loop")
    assert after.id == r.id and after.state == "rolled_back" and "unverified promotion" in after.reason
    assert ctl.verify_promotions() == []  # terminal now
