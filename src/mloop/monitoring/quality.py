"""Live quality: the window's predictions scored against the labels sent to ``/feedback``.

Labels arrive late and for some predictions only, so quality is computed on the labelled rows of a
window (joined by ``prediction_id``) and always reported with their number. Below
``min_labelled_rows`` labelled rows no metric is given: a handful of labels says little and would
make quality alerts fire on noise. Classifiers get accuracy, precision, recall, F1 (binary: of the
positive class, ``classes[1]``; otherwise macro averages named ``*_macro``) and ROC AUC when the log
holds probabilities and both outcomes occur; regressors get RMSE, MAE and R². Names match the
holdout metrics in the version's evaluation, so live and holdout values can be put side by side.

A label that cannot be scored — a class the model does not have, a regressor's label that is not a
finite number — is left out and counted (``unusable_labels``), never allowed to fail the window:
labels come from outside, and one bad label would otherwise stop every later cycle that sees it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mloop.monitoring.window import label_key

__all__ = ["LiveQuality", "live_quality"]


@dataclass
class LiveQuality:
    """Quality of one window: ``metrics`` from ``labelled_rows`` of its ``rows`` predictions."""

    metrics: dict[str, float] = field(default_factory=dict)
    labelled_rows: int = 0
    rows: int = 0
    min_labelled_rows: int = 0
    note: str = ""
    unusable_labels: int = 0
    """Labels left out because they cannot be scored (unknown class, not a finite number)."""

    @property
    def coverage(self) -> float:
        """Share of the window's predictions that have a label."""
        return self.labelled_rows / self.rows if self.rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "coverage": self.coverage}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LiveQuality:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


def _finite(values: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}


def _classification(
    y_true: list[str], y_pred: list[str], proba: pd.DataFrame, classes: Sequence[str]
) -> dict[str, float]:
    from sklearn import metrics as skm

    out: dict[str, float] = {"accuracy": skm.accuracy_score(y_true, y_pred)}
    if len(classes) == 2:
        pos = classes[1]
        out["precision"] = skm.precision_score(y_true, y_pred, pos_label=pos, zero_division=0)
        out["recall"] = skm.recall_score(y_true, y_pred, pos_label=pos, zero_division=0)
        out["f1"] = skm.f1_score(y_true, y_pred, pos_label=pos, zero_division=0)
    else:
        labels = list(classes) or sorted(set(y_true) | set(y_pred))
        for name, fn in (
            ("precision", skm.precision_score),
            ("recall", skm.recall_score),
            ("f1", skm.f1_score),
        ):
            out[f"{name}_macro"] = fn(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    columns = [f"proba_{c}" for c in classes]
    present = set(y_true)
    if classes and all(c in proba.columns for c in columns) and len(present) > 1:
        scores = proba[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
        ok = ~np.isnan(scores).any(axis=1)
        truth = np.asarray(y_true, dtype=object)[ok]
        try:
            if len(classes) == 2 and len(set(truth.tolist())) == 2:
                out["roc_auc"] = skm.roc_auc_score(truth == classes[1], scores[ok, 1])
            elif len(classes) > 2 and present >= set(classes):
                out["roc_auc"] = skm.roc_auc_score(truth, scores[ok], multi_class="ovr", labels=list(classes))
        except ValueError:
            pass  # probabilities that do not sum to one or a class missing after NaN filtering
    return out


def _regression(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    from sklearn import metrics as skm

    out = {
        "rmse": math.sqrt(skm.mean_squared_error(y_true, y_pred)),
        "mae": skm.mean_absolute_error(y_true, y_pred),
    }
    if y_true.size > 1 and np.ptp(y_true) > 0:
        out["r2"] = skm.r2_score(y_true, y_pred)
    return out


def live_quality(
    window: pd.DataFrame,
    labels: Mapping[str, Any],
    *,
    task: str | None,
    classes: Sequence[Any] | None = None,
    min_labelled_rows: int = 1,
) -> LiveQuality:
    """Score the labelled rows of ``window`` (a prediction-log frame).

    ``labels`` maps prediction id to the observed label (``Store.feedback(ids=...)``).
    """
    rows = len(window)
    result = LiveQuality(rows=rows, min_labelled_rows=min_labelled_rows)
    if rows == 0:
        result.note = "the window has no predictions"
        return result
    truth = window["prediction_id"].map(labels)
    labelled = window[truth.notna()]
    truth = truth[truth.notna()]
    labelled, truth, result.unusable_labels = _usable(labelled, truth, task, classes)
    result.labelled_rows = len(labelled)
    skipped = (
        f"; {result.unusable_labels} unusable labels left out (not one of the model's classes, or not a "
        "finite number)"
        if result.unusable_labels
        else ""
    )
    if result.labelled_rows == 0:
        result.note = "no labels received for this window's predictions (POST /feedback)" + skipped
        return result
    if result.labelled_rows < max(min_labelled_rows, 1):
        result.note = (
            f"only {result.labelled_rows} labelled predictions; metrics need at least {min_labelled_rows} "
            "(monitoring.min_labelled_rows)" + skipped
        )
        return result
    result.note = skipped[2:]
    with warnings.catch_warnings():
        # One-class windows are normal with delayed labels; the metrics say what they can.
        warnings.simplefilter("ignore", category=UserWarning)
        if task == "regression":
            y_true = pd.to_numeric(truth, errors="coerce").to_numpy(dtype=float)
            y_pred = pd.to_numeric(labelled["prediction"], errors="coerce").to_numpy(dtype=float)
            ok = np.isfinite(y_true) & np.isfinite(y_pred)
            if not ok.any():
                result.note = "labels or predictions are not numbers; cannot score a regressor"
                return result
            result.metrics = _finite(_regression(y_true[ok], y_pred[ok]))
        else:
            keys = [label_key(c) for c in classes or []]
            result.metrics = _finite(
                _classification(
                    [label_key(v) or "" for v in truth],
                    [label_key(v) or "" for v in labelled["prediction"]],
                    labelled,
                    [k for k in keys if k is not None],
                )
            )
    return result


def _usable(
    labelled: pd.DataFrame, truth: pd.Series, task: str | None, classes: Sequence[Any] | None
) -> tuple[pd.DataFrame, pd.Series, int]:
    """The labelled rows whose label can be scored, the labels, and how many were left out."""
    if task == "regression":
        numbers = pd.to_numeric(truth.map(_number), errors="coerce").to_numpy(dtype=float)
        keep = np.isfinite(numbers)
    else:
        known = {label_key(c) for c in classes or []} - {None}
        if not known:
            return labelled, truth, 0
        keep = truth.map(lambda v: label_key(v) in known).to_numpy(dtype=bool)
    if keep.all():
        return labelled, truth, 0
    return labelled[keep], truth[keep], int((~keep).sum())


def _number(value: Any) -> float:
    """A label as a float, NaN when it is not a single number (lists, text, booleans)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | np.number):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return math.nan
