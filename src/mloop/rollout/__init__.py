"""Rollouts: deliver a new model version to traffic safely — direct, A/B, canary or shadow.

A rollout is a persisted state machine (:mod:`mloop.rollout.states`) in the platform store: its
arms, their traffic weights, the current canary step and every transition as an event. The
:class:`RolloutController` starts rollouts, runs one analysis per :meth:`~RolloutController.advance`
(canary checks in :mod:`mloop.rollout.analysis`, A/B significance in :mod:`mloop.rollout.abtest`) and
promotes, rolls back or aborts with compare-and-set, so concurrent commands never both apply.
Serving processes follow the store with :class:`RolloutSync` (:mod:`mloop.rollout.sync`). Nothing here
knows HTTP.

    >>> r = start_rollout(settings, "3", "canary")        # doctest: +SKIP
    >>> r = advance(settings, r.id)                        # one analysis, at most one transition
    >>> r.state in TERMINAL_STATES
"""

from mloop.rollout.abtest import compare_arms, two_proportion_ztest, welch_ttest
from mloop.rollout.analysis import Check, StepAnalysis, analyze_step, output_drift, shadow_report
from mloop.rollout.api import advance, current, start_rollout
from mloop.rollout.controller import RolloutController
from mloop.rollout.keys import routing_key
from mloop.rollout.plan import STRATEGIES
from mloop.rollout.states import ACTIVE_STATES, ROLLOUT_MACHINE, TERMINAL_STATES, RolloutState
from mloop.rollout.stats import ArmStats, collect_stats
from mloop.store.rollouts import Arm, Deployment, Rollout

__all__ = [
    "ACTIVE_STATES",
    "ROLLOUT_MACHINE",
    "STRATEGIES",
    "TERMINAL_STATES",
    "Arm",
    "ArmStats",
    "Check",
    "Deployment",
    "Rollout",
    "RolloutController",
    "RolloutState",
    "StepAnalysis",
    "advance",
    "analyze_step",
    "collect_stats",
    "compare_arms",
    "current",
    "output_drift",
    "routing_key",
    "shadow_report",
    "start_rollout",
    "two_proportion_ztest",
    "welch_ttest",
]
