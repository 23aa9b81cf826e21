"""The closed loop: triggers (schedule, drift or quality alerts, new data) → retrain in a separate
process → gate → rollout → promote or roll back, with guardrails (retrain budget, backoff after
failures, manual approval, dry run) and crash safety (a persisted state machine per cycle).

:class:`Controller` runs it (cycle states: :mod:`mloop.control.states`; trainings through a
:class:`Trainer`); ``mloop run`` serves and runs it side by side; ``mloop status`` shows it.
"""

from mloop.control.controller import Controller, approve
from mloop.control.driver import RolloutDriver
from mloop.control.retrain import CYCLE_TAG, recent_labelled, retrain_dataset
from mloop.control.states import CYCLE_MACHINE, CycleState
from mloop.control.status import status_report
from mloop.control.trainer import SubprocessTrainer, Trainer
from mloop.control.triggers import Trigger, schedule_trigger, source_fingerprint

__all__ = [
    "CYCLE_MACHINE",
    "CYCLE_TAG",
    "Controller",
    "CycleState",
    "RolloutDriver",
    "SubprocessTrainer",
    "Trainer",
    "Trigger",
    "approve",
    "recent_labelled",
    "retrain_dataset",
    "schedule_trigger",
    "source_fingerprint",
    "status_report",
]
