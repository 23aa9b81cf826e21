"""Holdout metrics, which direction is better for each, and :func:`score_model` (call a model, score it)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn import metrics as skm

from mloop.data.predict import model_classes, predict_with_proba

__all__ = ["LOWER_IS_BETTER", "Scored", "better", "default_metric", "evaluate", "score_model"]

LOWER_IS_BETTER = {"log_loss", "rmse", "mae", "mse"}


def default_metric(task: str, n_classes: int) -> str:
    if task == "regression":
        return "rmse"
    return "roc_auc" if n_classes == 2 else "f1_macro"


def better(metric: str, candidate: float, reference: float, min_improvement: float = 0.0) -> bool:
    """True if ``candidate`` beats ``reference`` by at least ``min_improvement`` on ``metric``."""
    if metric in LOWER_IS_BETTER:
        return candidate <= reference - min_improvement
    return candidate >= reference + min_improvement


def _finite(d: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if v is not None and math.isfinite(float(v))}


def evaluate(
    task: str, y_true: Any, y_pred: Any, proba: Any | None = None, classes: Any = None
) -> dict[str, float]:
    """Accuracy, precision, recall, F1, ROC AUC, PR AUC, log loss; or RMSE, MAE, R²."""
    if task == "regression":
        y_true = np.asarray(y_true, dtype=float)
        y_pred = np.asarray(y_pred, dtype=float)
        mse = skm.mean_squared_error(y_true, y_pred)
        return _finite(
            {
                "rmse": math.sqrt(mse),
                "mae": skm.mean_absolute_error(y_true, y_pred),
                "r2": skm.r2_score(y_true, y_pred),
            }
        )
    out: dict[str, float] = {"accuracy": skm.accuracy_score(y_true, y_pred)}
    classes = list(classes) if classes is not None else sorted(set(np.asarray(y_true).tolist()))
    binary = len(classes) == 2
    if binary:
        pos = classes[1]
        out["precision"] = skm.precision_score(y_true, y_pred, pos_label=pos, zero_division=0)
        out["recall"] = skm.recall_score(y_true, y_pred, pos_label=pos, zero_division=0)
        out["f1"] = skm.f1_score(y_true, y_pred, pos_label=pos, zero_division=0)
    out["f1_macro"] = skm.f1_score(y_true, y_pred, average="macro", zero_division=0)
    out["precision_macro"] = skm.precision_score(y_true, y_pred, average="macro", zero_division=0)
    out["recall_macro"] = skm.recall_score(y_true, y_pred, average="macro", zero_division=0)
    if proba is not None and len(set(np.asarray(y_true).tolist())) > 1:
        proba = np.asarray(proba)
        if binary:
            y_bin = (np.asarray(y_true) == classes[1]).astype(int)
            out["roc_auc"] = skm.roc_auc_score(y_bin, proba[:, 1])
            out["pr_auc"] = skm.average_precision_score(y_bin, proba[:, 1])
        else:
            out["roc_auc"] = skm.roc_auc_score(y_true, proba, multi_class="ovr", labels=classes)
        out["log_loss"] = skm.log_loss(y_true, np.clip(proba, 1e-15, 1 - 1e-15), labels=classes)
    return _finite(out)


@dataclass
class Scored:
    """A model's answers on a holdout (as serving gives them) and their metrics."""

    predictions: np.ndarray
    proba: np.ndarray | None
    classes: list[Any] | None
    metrics: dict[str, float]


def score_model(model: Any, task: str, x: Any, y: Any) -> Scored:
    """Call ``model`` on ``x`` the way serving and batch do, then :func:`evaluate` against ``y``."""
    classes = model_classes(model, task)
    predictions, proba = predict_with_proba(model, x, classes)
    return Scored(predictions, proba, classes, evaluate(task, y, predictions, proba, classes))
