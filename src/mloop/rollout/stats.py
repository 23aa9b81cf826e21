"""Per-arm observations of a rollout, gathered from where the serving layer leaves them.

Where each number comes from (a deliberate split):

* **requests and errors** — every serving process counts, per arm, the requests its model answered
  and the ones the model failed (an exception, a timeout, a full queue) and writes its cumulative
  counts to the store's ``rollout_counters`` every ``rollout.refresh_s``; the sum over processes is
  the arm's total. Failed requests leave no prediction, so the prediction log cannot count them.
* **latency, outputs** — the prediction log (``arm`` and ``latency_ms`` of every logged prediction).
* **live quality** — labels sent to ``/feedback``, joined to the arm's predictions by prediction id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from mloop.store.rollouts import Rollout

__all__ = ["ArmStats", "arm_rows", "collect_stats", "same_label"]


@dataclass
class ArmStats:
    """What one arm did since the rollout started."""

    arm: str
    version: str
    requests: int = 0
    errors: int = 0
    logged: int = 0
    latency_ms: np.ndarray = field(default_factory=lambda: np.empty(0))
    predictions: list[Any] = field(default_factory=list)
    prediction_ids: list[str] = field(default_factory=list)
    outcomes: np.ndarray = field(default_factory=lambda: np.empty(0))
    """Per labelled prediction: 1/0 correct (classifiers) or the absolute error (regressors)."""
    step_latency_ms: np.ndarray | None = None
    """Latencies since the current canary step started (None: not split by step). Latency is compared
    on this window, where both arms served side by side under the same load; over the whole rollout
    the arms' shares changed step by step, so a load spike would weigh more on one arm."""
    labels: list[Any] = field(default_factory=list)
    """Per labelled prediction (classifiers): the label sent to /feedback."""
    labelled_predictions: list[Any] = field(default_factory=list)
    """Per labelled prediction (classifiers): what the arm predicted."""
    scores: np.ndarray = field(default_factory=lambda: np.empty(0))
    """Per labelled prediction (binary classifiers): the logged probability of the positive class (the
    second of the sorted class labels); NaN where none was logged."""

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def labelled(self) -> int:
        return int(self.outcomes.size)

    def latency_p99(self) -> float | None:
        return float(np.percentile(self.latency_ms, 99)) if self.latency_ms.size else None

    def quality(self, classification: bool) -> float | None:
        """Accuracy (classifiers) or mean absolute error (regressors) on labelled predictions."""
        if not self.outcomes.size:
            return None
        return float(self.outcomes.mean())

    def summary(self, classification: bool) -> dict[str, Any]:
        p99 = self.latency_p99()
        return {
            "arm": self.arm,
            "version": self.version,
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 6),
            "logged": self.logged,
            "latency_p99_ms": None if p99 is None else round(p99, 3),
            "labelled": self.labelled,
            ("accuracy" if classification else "mae"): self.quality(classification),
        }


def same_label(prediction: Any, label: Any) -> bool:
    """Whether a prediction equals a label, comparing numbers as numbers (``1`` == ``1.0`` == ``"1"``)."""
    if prediction == label:
        return True
    try:
        return float(prediction) == float(label)
    except (TypeError, ValueError):
        return str(prediction) == str(label)


def _outcomes(predictions: list[Any], labels: list[Any], classification: bool) -> np.ndarray:
    if classification:
        return np.array([1.0 if same_label(p, y) else 0.0 for p, y in zip(predictions, labels, strict=True)])
    out = []
    for p, y in zip(predictions, labels, strict=True):
        try:
            out.append(abs(float(p) - float(y)))
        except (TypeError, ValueError):
            continue  # a label that is not a number cannot score a regressor
    return np.asarray(out, dtype="float64")


def _positive_scores(rows: pd.DataFrame, keep: list[int]) -> np.ndarray:
    """The logged probability of the positive class (second sorted class) of rows ``keep``, NaN if none."""
    proba = sorted(c for c in rows.columns if str(c).startswith("proba_"))
    if len(proba) != 2:
        return np.full(len(keep), np.nan)
    values = pd.to_numeric(rows[proba[1]].iloc[keep], errors="coerce")
    return np.asarray(values.to_numpy(dtype=float), dtype=float)


def arm_rows(frame: pd.DataFrame, arm: str, version: str) -> pd.DataFrame:
    """The prediction-log rows one arm of a rollout answered: matched by arm name *and* version, so
    rows of another rollout never count."""
    if frame.empty:
        return frame
    return frame[(frame["arm"] == arm) & (frame["model_version"].astype(str) == str(version))]


def collect_stats(
    rollout: Rollout,
    counters: Mapping[str, tuple[int, int]],
    log: pd.DataFrame,
    labels: Mapping[str, Any],
    *,
    classification: bool,
    since: datetime | None = None,
    step_since: datetime | None = None,
) -> dict[str, ArmStats]:
    """Stats per arm of ``rollout`` from its counters, its prediction-log rows and their labels.

    ``log`` is the prediction log of the model since the rollout started (``since`` narrows it);
    rows are matched to an arm by arm name *and* version, so rows of another rollout never count.
    """
    out: dict[str, ArmStats] = {}
    frame = log
    if since is not None and not frame.empty:
        frame = frame[pd.to_datetime(frame["ts"], utc=True) >= pd.Timestamp(since)]
    for arm in rollout.arms:
        req, err = counters.get(arm.arm, (0, 0))
        stats = ArmStats(arm.arm, arm.version, requests=req, errors=err)
        if not frame.empty:
            rows = arm_rows(frame, arm.arm, arm.version)
            stats.logged = len(rows)
            stats.latency_ms = pd.to_numeric(rows["latency_ms"], errors="coerce").dropna().to_numpy(float)
            if step_since is not None:
                recent = rows[pd.to_datetime(rows["ts"], utc=True) >= pd.Timestamp(step_since)]
                latency = pd.to_numeric(recent["latency_ms"], errors="coerce").dropna()
                stats.step_latency_ms = latency.to_numpy(float)
            stats.predictions = rows["prediction"].tolist()
            stats.prediction_ids = rows["prediction_id"].astype(str).tolist()
            keep = [k for k, i in enumerate(stats.prediction_ids) if i in labels]
            if keep:
                preds = [stats.predictions[k] for k in keep]
                ys = [labels[stats.prediction_ids[k]] for k in keep]
                stats.outcomes = _outcomes(preds, ys, classification)
                if classification:
                    stats.labels, stats.labelled_predictions = ys, preds
                    stats.scores = _positive_scores(rows, keep)
        out[arm.arm] = stats
    return out
