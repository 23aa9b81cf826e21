"""Decision benchmark: how often do mloop's rollout decisions go wrong on simulated traffic?

Replays simulated traffic through the real analysis code (no HTTP, no store): each canary rollout
advances every ``TICK_S`` simulated seconds exactly as :class:`~mloop.rollout.RolloutController`
does (one look, at most one move), and each A/B test re-runs :func:`~mloop.rollout.compare_arms` every
tick. The same traffic (same seed) goes through today's analysis (``legacy_analysis.py``, kept verbatim
from git) and the statistical one (:func:`mloop.rollout.analysis.analyze_step` +
:func:`~mloop.rollout.analysis.next_move`). Rates come with Wilson 95 % intervals.

Traffic: 60 requests/s; latency lognormal (median 20 ms, sigma 0.35) with a 1 % heavy tail (x3-x10)
and load spikes (a tick in ten has every request of both arms 3x slower); 0.2 % server errors;
8 % positives; a binormal scorer with ROC AUC 0.85; labels arrive after an exponential delay
(mean 10 min) and 20 % never do.

    python benchmarks/decisions/bench_decisions.py            # 300 rollouts per scenario
    python benchmarks/decisions/bench_decisions.py --runs 50  # quicker
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parent))

import legacy_abtest
import legacy_analysis

from mloop.config.settings import RolloutSettings
from mloop.monitoring.estimation import QualityEstimator
from mloop.rollout.abtest import compare_arms
from mloop.rollout.analysis import analyze_step, next_move, step_has_traffic
from mloop.rollout.checks import look_alpha
from mloop.rollout.estimated import estimate_arm, estimated_quality_check_of
from mloop.rollout.stats import ArmStats
from mloop.training.probability_calibration import fit_quality_estimator

RPS, TICK_S = 60.0, 20.0
STEPS = [5.0, 25.0, 50.0, 100.0]
POSITIVES = 0.08
BASE_AUC = 0.85
THRESHOLD = 1.6  # score above which the model predicts the positive class (~6 % of traffic)
LABEL_DELAY_S, LABEL_LOST = 600.0, 0.2
MAX_TICKS = 400  # 2 h 13 min of simulated traffic per rollout at most


def _mu(auc: float) -> float:
    """Separation of the binormal scorer giving ROC AUC ``auc``."""
    return math.sqrt(2) * float(norm.ppf(auc))


@dataclass
class Model:
    name: str
    auc: float = BASE_AUC
    latency_x: float = 1.0
    error_rate: float = 0.002
    score_shift: float = 0.0
    majority: bool = False


@dataclass
class Arm:
    """Everything one arm served so far, as growing arrays."""

    model: Model
    requests: int = 0
    errors: int = 0
    latency: list[np.ndarray] = field(default_factory=list)
    pred: list[np.ndarray] = field(default_factory=list)
    y: list[np.ndarray] = field(default_factory=list)
    score: list[np.ndarray] = field(default_factory=list)
    label_at: list[np.ndarray] = field(default_factory=list)

    def serve(self, n: int, now: float, spike: bool, rng: np.random.Generator) -> None:
        m = self.model
        errors = int(rng.binomial(n, m.error_rate))
        self.requests += n
        self.errors += errors
        k = n - errors
        lat = 20.0 * np.exp(rng.normal(0, 0.35, k)) * m.latency_x
        tail = rng.random(k) < 0.01
        lat[tail] *= rng.uniform(3, 10, int(tail.sum()))
        if spike:
            lat *= 3.0
        y = (rng.random(k) < POSITIVES).astype(int)
        s = rng.normal(0, 1, k) + y * _mu(m.auc) + m.score_shift
        if m.majority:
            s = rng.normal(0, 1, k) * 1e-3 - 5.0
        arrive = now + rng.uniform(0, TICK_S, k) + rng.exponential(LABEL_DELAY_S, k)
        arrive[rng.random(k) < LABEL_LOST] = np.inf
        self.latency.append(lat)
        self.pred.append((s > THRESHOLD).astype(int))
        self.y.append(y)
        self.score.append(1 / (1 + np.exp(-(s - 2.5))))
        self.label_at.append(arrive)

    def frame(self) -> pd.DataFrame:
        """What the prediction log holds of this arm: predictions and probabilities, no labels."""
        p = np.concatenate(self.score) if self.score else np.empty(0)
        pred = np.concatenate(self.pred) if self.pred else np.empty(0, int)
        return pd.DataFrame({"prediction": pred, "proba_0": 1 - p, "proba_1": p})

    def stats(self, name: str, now: float, step_tick: int) -> ArmStats:
        cat = np.concatenate
        pred = cat(self.pred) if self.pred else np.empty(0, int)
        seen = cat(self.label_at) <= now if self.label_at else np.empty(0, bool)
        y = cat(self.y)[seen] if self.y else np.empty(0, int)
        p = pred[seen]
        return ArmStats(
            name,
            self.model.name,
            requests=self.requests,
            errors=self.errors,
            logged=int(pred.size),
            latency_ms=cat(self.latency) if self.latency else np.empty(0),
            predictions=pred.tolist(),
            outcomes=(p == y).astype(float),
            labels=y.tolist(),
            labelled_predictions=p.tolist(),
            scores=cat(self.score)[seen] if self.score else np.empty(0),
            step_latency_ms=cat(self.latency[step_tick:]) if self.latency[step_tick:] else np.empty(0),
        )


_ESTIMATORS: dict[str, QualityEstimator] = {}


def estimator(model: Model) -> QualityEstimator:
    """The model's quality estimator, fitted on a 20,000-row holdout as training fits it."""
    if model.name not in _ESTIMATORS:
        arm = Arm(model)
        # Each model its own holdout (the A/A canary's calibration differs from the baseline's too).
        arm.serve(20_000, 0.0, False, np.random.default_rng(zlib.crc32(model.name.encode())))
        y, p = np.concatenate(arm.y), np.concatenate(arm.score)
        _ESTIMATORS[model.name] = fit_quality_estimator(
            "classification",
            predictions=np.concatenate(arm.pred),
            proba=np.column_stack([1 - p, p]),
            classes=[0, 1],
            y_true=y,
        )
    return _ESTIMATORS[model.name]


def run_canary(
    canary: Model, seed: int, cfg: RolloutSettings, legacy: bool, estimate: bool = False
) -> tuple[str, int, int]:
    """One rollout: (outcome, step at decision, canary requests at decision); ``estimate``: with the
    ``estimated_quality`` check while labels are missing, as the controller computes it."""
    rng = np.random.default_rng(seed)
    base, can = Arm(Model("baseline")), Arm(canary)
    step, step_base, step_started, step_tick = 0, 0, 0.0, 0
    analysis: dict[str, Any] = {}
    state = "running"
    for tick in range(1, MAX_TICKS + 1):
        now = tick * TICK_S
        n = int(rng.poisson(RPS * TICK_S))
        share = STEPS[step] / 100
        spike = rng.random() < 0.1
        n_can = int(rng.binomial(n, share))
        can.serve(n_can, now, spike, rng)
        base.serve(n - n_can, now, spike, rng)
        b, c = base.stats("champion", now, step_tick), can.stats("canary", now, step_tick)
        if legacy:
            a = legacy_analysis.analyze_step(
                b,
                c,
                cfg,
                classification=True,
                step_requests=c.requests - step_base,
                held_s=now - step_started,
            )
            if a.verdict == "fail":
                return "rolled_back", step, c.requests
            if a.verdict == "pass":
                if step + 1 >= len(STEPS):
                    return "promoted", step, c.requests
                step, step_base, step_started, step_tick = step + 1, c.requests, now, tick
            continue
        # The controller's canary advance, without the store (mloop.rollout.controller._advance_canary).
        label_look, waited = 0, None
        labelled = min(b.labelled, c.labelled)
        if state == "awaiting_labels":
            waited = now - analysis["label_wait_started"]
            label_look = analysis["label_look"] + 1
            due = labelled >= max(cfg.min_labelled, 1.5 * analysis["label_look_n"])
            expiring = waited >= cfg.label_wait_s and not analysis.get("expired")
            if not (due or expiring):
                continue
        extra = []
        looking = step_has_traffic(cfg, c.requests - step_base, now - step_started, label_look)
        if estimate and looking and labelled < cfg.min_labelled:
            est_b = estimate_arm(base.frame(), estimator(base.model), min_rows=100)
            est_c = estimate_arm(can.frame(), estimator(can.model), min_rows=100)
            alpha = look_alpha(cfg, step, label_look)
            extra = [estimated_quality_check_of(est_b, est_c, "roc_auc", cfg, alpha)]
        new = analyze_step(
            b,
            c,
            cfg,
            classification=True,
            step_requests=c.requests - step_base,
            held_s=now - step_started,
            step=step,
            label_look=label_look,
            metric="roc_auc",
            extra=extra,
            concurrent=STEPS[step] < 100,
        )
        move = next_move(new, cfg, step=step, verified=analysis.get("verified", False), label_waited_s=waited)
        analysis["verified"] = move.verified
        if state == "awaiting_labels":
            analysis.update(label_look=label_look, label_look_n=labelled)
            analysis["expired"] = waited is not None and waited >= cfg.label_wait_s
        if move.action == "rollback":
            return "rolled_back", step, c.requests
        if move.action in ("promote", "promote_unverified"):
            return ("promoted" if move.action == "promote" else "promoted_unverified"), step, c.requests
        if move.action == "await_labels" and state == "running":
            state = "awaiting_labels"
            analysis.update(label_wait_started=now, label_look=0, label_look_n=labelled)
        if move.action == "step":
            state = "running"
            step, step_base, step_started, step_tick = step + 1, c.requests, now, tick
    return ("held" if state == "awaiting_labels" else "undecided"), step, can.requests


def ab_first_winner(
    better: float, seed: int, cfg: RolloutSettings, legacy: bool, ticks: int = 180
) -> str | None:
    """One A/B test re-analysed every tick (as ``advance`` does), champion accuracy 0.80 against
    ``0.80 + better``: the first winner it declares, if any."""
    rng = np.random.default_rng(seed)
    acc = {"champion": 0.80, "b": 0.80 + better}
    outcomes: dict[str, list[np.ndarray]] = {a: [] for a in acc}
    arrive: dict[str, list[np.ndarray]] = {a: [] for a in acc}
    for tick in range(1, ticks + 1):
        now = tick * TICK_S
        stats = {}
        for a, p in acc.items():
            k = int(rng.poisson(1.5 * TICK_S))  # labelled traffic is scarcer: 1.5 requests/s per arm
            outcomes[a].append((rng.random(k) < p).astype(float))
            t = now + rng.uniform(0, TICK_S, k) + rng.exponential(LABEL_DELAY_S, k)
            t[rng.random(k) < LABEL_LOST] = np.inf
            arrive[a].append(t)
            seen = np.concatenate(arrive[a]) <= now
            stats[a] = ArmStats(a, a, requests=1, outcomes=np.concatenate(outcomes[a])[seen])
        compare = legacy_abtest.compare_arms if legacy else compare_arms
        winner = compare(stats, "champion", cfg, classification=True)["winner"]
        if winner is not None:
            return str(winner)
    return None


def ab_auc_first_winner(better: float, seed: int, cfg: RolloutSettings, ticks: int = 180) -> str | None:
    """One A/B test on ROC AUC (the gate metric) re-analysed every tick: champion AUC 0.85 against
    ``0.85 + better``, 8 % positives; the first winner it declares, if any."""
    rng = np.random.default_rng(seed)
    auc = {"champion": BASE_AUC, "b": BASE_AUC + better}
    ys: dict[str, list[np.ndarray]] = {a: [] for a in auc}
    ss: dict[str, list[np.ndarray]] = {a: [] for a in auc}
    arrive: dict[str, list[np.ndarray]] = {a: [] for a in auc}
    for tick in range(1, ticks + 1):
        now = tick * TICK_S
        stats = {}
        for a, value in auc.items():
            k = int(rng.poisson(1.5 * TICK_S))
            y = (rng.random(k) < POSITIVES).astype(int)
            ys[a].append(y)
            ss[a].append(rng.normal(0, 1, k) + y * _mu(value))
            t = now + rng.uniform(0, TICK_S, k) + rng.exponential(LABEL_DELAY_S, k)
            t[rng.random(k) < LABEL_LOST] = np.inf
            arrive[a].append(t)
            seen = np.concatenate(arrive[a]) <= now
            y_all, s_all = np.concatenate(ys[a])[seen], np.concatenate(ss[a])[seen]
            pred = (s_all > THRESHOLD).astype(int)
            arm = ArmStats(a, a, requests=1, logged=int(seen.size))
            arm.labels, arm.labelled_predictions = y_all.tolist(), pred.tolist()
            arm.scores, arm.outcomes = 1 / (1 + np.exp(-(s_all - 2.5))), (pred == y_all).astype(float)
            stats[a] = arm
        winner = compare_arms(stats, "champion", cfg, classification=True, metric="roc_auc")["winner"]
        if winner is not None:
            return str(winner)
    return None


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"{k / n:6.1%} [{lo:.1%}, {hi:.1%}]"


CANARIES = [
    ("A/A (identical canary)", Model("same"), "false rollback", "<= 1 %"),
    ("2x latency", Model("slow", latency_x=2.0), "caught before 100 %", ">= 95 %"),
    ("+2 % errors", Model("errors", error_rate=0.022), "caught before 100 %", ">= 95 %"),
    ("-0.05 ROC AUC", Model("worse", auc=BASE_AUC - 0.05), "caught before 100 %", ">= 95 %"),
    ("always majority class", Model("majority", majority=True), "caught before 100 %", ">= 95 %"),
    ("shifted predictions", Model("shifted", score_shift=1.0), "caught before 100 %", ">= 95 %"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=300, help="rollouts per scenario")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--canary",
        default="legacy,stats,estimate",
        help="canary tables to print: legacy (today's), stats (labels only), estimate (stats + quality "
        "estimated before labels)",
    )
    ap.add_argument(
        "--ab", default="accuracy,roc_auc", help="A/B tables: accuracy, roc_auc (the gate metric)"
    )
    args = ap.parse_args()
    tables = set(args.canary.split(",")) - {""}
    common = {"steps": STEPS, "min_requests_per_step": 600, "min_labelled": 200, "max_wait_s": 1e9}
    legacy_cfg = RolloutSettings.model_validate({**common, "max_latency_ratio": 2.0})
    new_cfg = RolloutSettings.model_validate({**common, "label_wait_s": 3600.0, "max_quality_drop": 0.02})
    for key, title, legacy, estimate in (
        ("legacy", "today's analysis (p99 ratio, accuracy, fixed thresholds)", True, False),
        ("stats", "statistical checks, labels only", False, False),
        ("estimate", "statistical checks + quality estimated before labels", False, True),
    ):
        if key not in tables:
            continue
        cfg = legacy_cfg if legacy else new_cfg
        print(f"\n## Canary — {title}\n")
        print(
            "| scenario | measure | rate [95 % CI] | target | promoted | unverified/held "
            "| canary requests to decision (median) | s |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for name, model, measure, target in CANARIES:
            started = time.perf_counter()
            results = [
                run_canary(model, args.seed * 100_003 + i, cfg, legacy, estimate) for i in range(args.runs)
            ]
            wrong = sum(
                (o == "rolled_back") if model.name == "same" else not (o == "rolled_back" and STEPS[s] < 100)
                for o, s, _ in results
            )
            k = wrong if model.name == "same" else args.runs - wrong
            promoted = sum(o == "promoted" for o, _, _ in results)
            other = sum(o in ("held", "promoted_unverified", "undecided") for o, _, _ in results)
            reqs = int(np.median([r for _, _, r in results]))
            print(
                f"| {name} | {measure} | {rate(k, args.runs)} | {target} | {promoted} | {other} | {reqs} | "
                f"{time.perf_counter() - started:.0f} |",
                flush=True,
            )
    ab_cfg = RolloutSettings.model_validate({"min_labelled": 50})
    if "roc_auc" in args.ab:
        print(
            "\n## A/B on ROC AUC (the gate metric: 0.85 against 0.85 or 0.90, 8 % positives, same traffic)\n"
        )
        print("| analysis | scenario | measure | rate [95 % CI] | target |")
        print("|---|---|---|---|---|")
        k = sum(ab_auc_first_winner(0.0, args.seed * 7919 + i, ab_cfg) is not None for i in range(args.runs))
        print(f"| mSPRT, DeLong | equal arms | false winner (any winner) | {rate(k, args.runs)} | <= 5 % |")
        k = sum(
            ab_auc_first_winner(0.05, args.seed * 7919 + 10_000 + i, ab_cfg) == "b" for i in range(args.runs)
        )
        print(f"| mSPRT, DeLong | b better by 0.05 | power (b declared first) | {rate(k, args.runs)} | - |")
    if "accuracy" not in args.ab:
        return
    print(
        "\n## A/B (accuracy 0.80 against 0.80 or 0.85, labelled traffic 1.5 requests/s per arm, "
        "re-analysed every 20 s for 1 h)\n"
    )
    print("| analysis | scenario | measure | rate [95 % CI] | target |")
    print("|---|---|---|---|---|")
    for title, legacy in (("today's (z-test at every look)", True), ("mSPRT (always valid)", False)):
        k = sum(
            ab_first_winner(0.0, args.seed * 7919 + i, ab_cfg, legacy) is not None for i in range(args.runs)
        )
        print(
            f"| {title} | equal arms | false winner (any winner declared) | {rate(k, args.runs)} | <= 5 % |"
        )
        k = sum(
            ab_first_winner(0.05, args.seed * 7919 + 10_000 + i, ab_cfg, legacy) == "b"
            for i in range(args.runs)
        )
        print(
            f"| {title} | b better by 0.05 | power (b declared the first winner) | {rate(k, args.runs)} | - |"
        )


if __name__ == "__main__":
    main()
