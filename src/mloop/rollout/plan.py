"""The traffic plan of each strategy: which arms a rollout has and their weights at each step.

Arm names are fixed so every layer agrees: the baseline is always ``champion``; the candidate is
``canary`` (canary), ``shadow`` (shadow), ``challenger`` (direct) and ``b``, ``c``, … (A/B).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from mloop.config.settings import RolloutSettings
from mloop.errors import ConfigError, did_you_mean
from mloop.store.rollouts import Arm

__all__ = ["BASELINE", "STRATEGIES", "candidate_arm", "canary_weights", "initial_arms", "validate"]

BASELINE = "champion"
STRATEGIES = ("direct", "ab", "canary", "shadow")
_ARM = {"canary": "canary", "shadow": "shadow", "direct": "challenger"}


def validate(cfg: RolloutSettings, strategy: str) -> None:
    """Refuse a strategy or settings the rollout cannot run with."""
    if strategy not in STRATEGIES:
        raise ConfigError(
            f"Rollout strategy {strategy!r} is unknown; expected one of {', '.join(STRATEGIES)}."
            f"{did_you_mean(strategy, STRATEGIES)}"
        )
    steps = cfg.steps
    if strategy == "canary":
        if not steps or any(not 0 < s <= 100 for s in steps) or list(steps) != sorted(set(steps)):
            raise ConfigError(
                "rollout.steps must be increasing percentages in (0, 100], e.g. [5, 25, 50, 100]; "
                f"got {steps}."
            )
        if steps[-1] != 100:
            raise ConfigError(f"rollout.steps must end at 100 (the canary takes all traffic); got {steps}.")
    if cfg.min_requests_per_step < 1:
        raise ConfigError(
            f"rollout.min_requests_per_step must be at least 1; got {cfg.min_requests_per_step}."
        )
    if not 0 < cfg.shadow_share <= 1:
        raise ConfigError(f"rollout.shadow_share must be in (0, 1]; got {cfg.shadow_share}.")
    if not 0.5 <= cfg.confidence < 1:
        raise ConfigError(f"rollout.confidence must be in [0.5, 1); got {cfg.confidence}.")


def candidate_arm(strategy: str, index: int = 0) -> str:
    """The arm name of the ``index``-th candidate of ``strategy``."""
    if strategy == "ab":
        return chr(ord("b") + index)
    return _ARM[strategy]


def canary_weights(cfg: RolloutSettings, step: int) -> dict[str, float]:
    share = cfg.steps[step] / 100.0
    return {BASELINE: round(1.0 - share, 6), "canary": share}


def initial_arms(
    strategy: str,
    baseline: str | None,
    candidates: Sequence[str],
    cfg: RolloutSettings,
    weights: Sequence[float] | None = None,
) -> list[Arm]:
    """The arms a new rollout starts with."""
    if strategy != "ab" and len(candidates) != 1:
        raise ConfigError(f"A {strategy} rollout takes exactly one version; got {list(candidates)}.")
    if strategy == "direct":
        arms = [Arm(candidate_arm("direct"), candidates[0], 1.0)]
        return ([Arm(BASELINE, baseline, 0.0)] if baseline else []) + arms
    assert baseline is not None
    if strategy == "canary":
        w = canary_weights(cfg, 0)
        return [Arm(BASELINE, baseline, w[BASELINE]), Arm("canary", candidates[0], w["canary"])]
    if strategy == "shadow":
        return [
            Arm(BASELINE, baseline, 1.0),
            Arm("shadow", candidates[0], 0.0, shadow=True, share=cfg.shadow_share),
        ]
    given = list(weights if weights is not None else (cfg.ab_weights or [1.0] * (len(candidates) + 1)))
    numbers = all(isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) for w in given)
    if len(given) != len(candidates) + 1 or not numbers or any(w < 0 for w in given) or sum(given) <= 0:
        raise ConfigError(
            f"A/B weights must be {len(candidates) + 1} finite, non-negative numbers (champion first, then "
            f"each version), not all 0; got {given}."
        )
    total = sum(given)
    names = [BASELINE] + [candidate_arm("ab", i) for i in range(len(candidates))]
    versions = [baseline, *candidates]
    return [Arm(n, v, round(w / total, 6)) for n, v, w in zip(names, versions, given, strict=True)]
