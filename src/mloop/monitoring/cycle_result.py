"""What one monitoring cycle found: :class:`MonitorResult`, and the compact summary kept over time."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from mloop.monitoring.estimation import EstimatedQuality
from mloop.monitoring.quality import LiveQuality
from mloop.monitoring.results import DriftReport
from mloop.monitoring.window import WindowSpec

if TYPE_CHECKING:
    from mloop.monitoring.alerts import Alert
    from mloop.monitoring.reference import ModelReference

__all__ = ["MonitorResult", "drift_summary", "estimated_summary", "prediction_summary"]

MAX_CLASS_SHARES = 20
"""Most frequent classes whose share a window keeps; the rest are summed under ``"(other)"``."""


def drift_summary(report: DriftReport | None) -> dict[str, Any] | None:
    """The facts of a drift report worth keeping per window (scores, thresholds, verdicts)."""
    if report is None:
        return None
    tested = [c for c in report.columns if c.status == "ok"]
    return {
        "share_drifted": report.share_drifted,
        "n_drifted": report.n_drifted,
        "n_tested": report.n_tested,
        "dataset_drifted": report.dataset_drifted,
        "share_rule_drifted": report.share_rule_drifted,
        "drifted_columns": report.drifted_columns,
        "scores": {c.column: c.statistic for c in tested},
        "thresholds": {c.column: c.threshold for c in tested},
        "tests": {c.column: c.test for c in tested},
        "detected": {c.column: c.drifted for c in tested},
        "not_tested": {c.column: c.status for c in report.columns if c.status != "ok"},
        "multivariate": (
            {
                "status": m.status,
                "auc": m.auc,
                "p_value": m.p_value,
                "drifted": m.drifted,
                "top_columns": m.top_columns,
            }
            if (m := report.multivariate) is not None
            else None
        ),
    }


def estimated_summary(est: EstimatedQuality) -> dict[str, Any]:
    """The estimate kept per window: metrics with their interval, or why there is none."""
    if est.status != "ok":
        return {"status": est.status, "note": est.note}
    return {
        "status": est.status,
        "method": est.method,
        "metrics": dict(est.metrics),
        "lower": dict(est.lower),
        "upper": dict(est.upper),
        "rows": est.rows,
        "confidence": est.confidence,
    }


def prediction_summary(outputs: pd.DataFrame | None, task: str | None) -> dict[str, Any] | None:
    """The window's predictions in a few numbers, kept per window to chart their distribution over
    time: the share of each predicted class for classifiers, the 10th/50th/90th percentiles for
    regressors. None when the window has no predictions."""
    if outputs is None or "prediction" not in outputs.columns:
        return None
    values = outputs["prediction"].dropna()
    if values.empty:
        return None
    if task == "classification":
        shares = values.astype(str).value_counts(normalize=True)
        kept = {str(k): float(v) for k, v in shares.iloc[:MAX_CLASS_SHARES].items()}
        if len(shares) > MAX_CLASS_SHARES:
            kept["(other)"] = float(shares.iloc[MAX_CLASS_SHARES:].sum())
        return {"kind": "classes", "rows": len(values), "shares": kept}
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    if numbers.empty:
        return None
    q = numbers.quantile([0.1, 0.5, 0.9])
    return {
        "kind": "quantiles",
        "rows": len(numbers),
        "quantiles": {"p10": float(q.iloc[0]), "p50": float(q.iloc[1]), "p90": float(q.iloc[2])},
    }


@dataclass
class MonitorResult:
    """One monitoring cycle of one model version over one window of the prediction log.

    ``status`` is ``"ok"`` or ``"no_traffic"`` (nothing to compare: ``message`` says why, every
    report is None and nothing was recorded). ``drift`` compares the window's features with the
    version's reference profile; ``prediction_drift`` its outputs with the holdout's; ``quality``
    scores the labelled rows; ``estimated`` estimates quality from the predictions alone; ``alerts``
    are the rules that fired (``rule``, ``message``; sent and recorded unless ``notified`` is False);
    ``reports`` maps ``"json"``/``"html"`` to written files.
    """

    model: str
    version: str | None
    status: Literal["ok", "no_traffic"]
    message: str
    window: WindowSpec
    created_at: str
    rows: int = 0
    first_ts: str | None = None
    last_ts: str | None = None
    drift: DriftReport | None = None
    prediction_drift: DriftReport | None = None
    quality: LiveQuality = field(default_factory=LiveQuality)
    estimated: EstimatedQuality = field(default_factory=EstimatedQuality)
    """Quality estimated from the window's predictions alone (labels or not): see
    :mod:`mloop.monitoring.estimation`."""
    holdout: dict[str, float] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    notified: bool = True
    reports: dict[str, Path] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list, repr=False)
    """Summaries of the version's earlier windows, oldest first (this one is :meth:`summary`)."""
    alert_state: dict[str, Any] = field(default_factory=dict, repr=False)
    reference: ModelReference | None = field(default=None, repr=False)
    features_frame: pd.DataFrame | None = field(default=None, repr=False)
    outputs_frame: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def has_traffic(self) -> bool:
        return self.status == "ok"

    @property
    def drifted(self) -> bool:
        """True when the features drifted (Benjamini-Hochberg) or the outputs did."""
        data = self.drift is not None and self.drift.dataset_drifted
        return data or (self.prediction_drift is not None and self.prediction_drift.dataset_drifted)

    def summary(self) -> dict[str, Any]:
        """The compact facts persisted per window (``monitor.window`` event data)."""
        pred = drift_summary(self.prediction_drift)
        return {
            "model": self.model,
            "version": self.version,
            "ts": self.created_at,
            "window": self.window.to_dict(),
            "rows": self.rows,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "drift": drift_summary(self.drift),
            "prediction_drift": pred,
            "predictions": prediction_summary(
                self.outputs_frame, self.reference.task if self.reference is not None else None
            ),
            "quality": {
                "metrics": dict(self.quality.metrics),
                "labelled_rows": self.quality.labelled_rows,
                "rows": self.quality.rows,
            },
            "estimated_quality": estimated_summary(self.estimated),
            "alerts": [{"rule": a.rule, "severity": a.severity, "message": a.message} for a in self.alerts],
            "notified": self.notified,
            "alert_state": self.alert_state,
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything the HTML report shows, as JSON-able data."""
        return {
            "model": self.model,
            "version": self.version,
            "status": self.status,
            "message": self.message,
            "created_at": self.created_at,
            "window": {**self.window.to_dict(), "rows_read": self.rows},
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "drift": self.drift.to_dict() if self.drift else None,
            "prediction_drift": self.prediction_drift.to_dict() if self.prediction_drift else None,
            "quality": self.quality.to_dict(),
            "estimated_quality": self.estimated.to_dict(),
            "holdout": self.holdout,
            "alerts": [a.to_dict() for a in self.alerts],
            "notified": self.notified,
            "history": [{k: v for k, v in h.items() if k != "alert_state"} for h in self.history],
            "reports": {k: str(v) for k, v in self.reports.items()},
        }
