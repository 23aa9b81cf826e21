"""The closed loop: triggers (schedule, drift or quality alerts, new data) → retrain in a separate
process → gate → rollout → promote or roll back, with guardrails (retrain budget, backoff after
failures, manual approval, dry run) and crash safety (a persisted state machine per cycle).

:class:`Controller` runs it; ``mloop run`` serves and runs it side by side; ``mloop status`` shows it.
"""

from mloop.control.controller import Controller, RolloutDriver, approve
from mloop.control.retrain import CYCLE_TAG, recent_labelled, retrain_dataset
from mloop.control.status import status_report
from mloop.control.triggers import Trigger, schedule_trigger, source_fingerprint

__all__ = [
    "CYCLE_TAG",
    "Controller",
    "RolloutDriver",
    "Trigger",
    "approve",
    "recent_labelled",
    "retrain_dataset",
    "schedule_trigger",
    "source_fingerprint",
    "status_report",
]
