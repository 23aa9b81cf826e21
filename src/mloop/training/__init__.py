"""Training: load → validate → split → tune → fit → evaluate → gate → register, on MLflow.

:func:`train` runs the whole pipeline for a project's settings. Built-in estimators live in a small
registry (:func:`register_estimator`); ``model.estimator: "module:function"`` plugs in your own.
Preprocessing is part of the saved pipeline, so serving receives raw records.
"""

from mloop.training.estimators import ESTIMATORS, build_estimator, register_estimator, search_space
from mloop.training.gates import GateCheck, GateResult, evaluate_gates
from mloop.training.metrics import LOWER_IS_BETTER, default_metric, evaluate
from mloop.training.pipeline import train
from mloop.training.run import TrainResult
from mloop.training.tuning import TuningResult, open_study, tune

__all__ = [
    "ESTIMATORS",
    "LOWER_IS_BETTER",
    "GateCheck",
    "GateResult",
    "TrainResult",
    "TuningResult",
    "build_estimator",
    "default_metric",
    "evaluate",
    "evaluate_gates",
    "open_study",
    "register_estimator",
    "search_space",
    "train",
    "tune",
]
