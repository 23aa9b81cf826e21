"""Prometheus gauges of live monitoring (listed in docs/monitoring.md, "Prometheus gauges").

``mloop_drift_score{model,feature}``, ``mloop_drift_detected{model,feature}``,
``mloop_drift_share{model}``, ``mloop_live_quality{model,version,metric}``,
``mloop_estimated_quality{model,version,metric}`` (quality estimated without labels) with
``mloop_estimated_quality_bound{model,version,metric,bound}`` (``lower``/``upper`` of its interval) and
``mloop_labelled_rows{model,version}``, set from a window summary (see
:mod:`mloop.monitoring.history`), and the counter ``mloop_monitoring_cycle_failures_total{model,error}``
of cycles that failed. They live on the serving registry so ``/metrics`` shows them.

With several worker processes (``PROMETHEUS_MULTIPROC_DIR``) the gauges use the ``livemostrecent``
mode: every worker refreshes them from the newest persisted window, and the scrape shows the most
recently written value, not a sum over workers. Prometheus' multiprocess mode cannot remove a label
set, so a feature that left the reference is set to NaN there instead of being removed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["MonitoringGauges"]

_MODE: Final = "livemostrecent"


def _multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class MonitoringGauges:
    """The monitoring gauges on ``registry`` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.drift_score = Gauge(
            "mloop_drift_score",
            "Drift statistic of each feature in the latest monitoring window.",
            ["model", "feature"],
            registry=r,
            multiprocess_mode=_MODE,
        )
        self.drift_detected = Gauge(
            "mloop_drift_detected",
            "1 when the feature drifted in the latest monitoring window.",
            ["model", "feature"],
            registry=r,
            multiprocess_mode=_MODE,
        )
        self.drift_share = Gauge(
            "mloop_drift_share",
            "Share of drifted features in the latest monitoring window.",
            ["model"],
            registry=r,
            multiprocess_mode=_MODE,
        )
        self.multivariate_auc = Gauge(
            "mloop_multivariate_drift_auc",
            "Held-out ROC AUC of the domain classifier telling current rows from reference rows "
            "(0.5: no difference) in the latest monitoring window.",
            ["model"],
            registry=r,
            multiprocess_mode=_MODE,
        )
        self.multivariate_detected = Gauge(
            "mloop_multivariate_drift_detected",
            "1 when the multivariate check flagged the latest monitoring window.",
            ["model"],
            registry=r,
            multiprocess_mode=_MODE,
        )
        self.live_quality = Gauge(
            "mloop_live_quality",
            "Live quality from delayed labels (/feedback) in the latest window.",
            ["model", "version", "metric"],
            registry=r,
            multiprocess_mode=_MODE,
        )
        self.estimated_quality = Gauge(
            "mloop_estimated_quality",
            "Quality estimated without labels (calibrated probabilities or error bins) in the latest window.",
            ["model", "version", "metric"],
            registry=r,
            multiprocess_mode=_MODE,
        )
        self.estimated_bound = Gauge(
            "mloop_estimated_quality_bound",
            "Lower and upper end of the estimated quality's confidence interval in the latest window.",
            ["model", "version", "metric", "bound"],
            registry=r,
            multiprocess_mode=_MODE,
        )
        self.labelled_rows = Gauge(
            "mloop_labelled_rows",
            "Labelled predictions in the latest monitoring window.",
            ["model", "version"],
            registry=r,
            multiprocess_mode=_MODE,
        )
        self.cycle_failures = Counter(
            "mloop_monitoring_cycle_failures",
            "Monitoring cycles that failed, by model and error type (the next cycle runs regardless).",
            ["model", "error"],
            registry=r,
        )
        self._features: dict[str, set[str]] = {}
        self._metrics: dict[tuple[str, str], set[str]] = {}
        self._estimated: dict[tuple[str, str], set[str]] = {}
        self.last_ts: dict[str, str] = {}

    def update(self, summary: Mapping[str, Any]) -> None:
        """Set every gauge from one window summary (``MonitorResult.summary()`` or the stored event)."""
        model, version = str(summary["model"]), str(summary["version"])
        drift = summary.get("drift") or {}
        scores: Mapping[str, float | None] = drift.get("scores") or {}
        detected: Mapping[str, bool] = drift.get("detected") or {}
        for feature, score in scores.items():
            self.drift_score.labels(model, feature).set(math.nan if score is None else float(score))
            self.drift_detected.labels(model, feature).set(1.0 if detected.get(feature) else 0.0)
        self._forget(self._features, model, set(scores), (self.drift_score, self.drift_detected), (model,))
        if drift:
            self.drift_share.labels(model).set(float(drift.get("share_drifted") or 0.0))
        multi = drift.get("multivariate") or {}
        if multi.get("auc") is not None:
            self.multivariate_auc.labels(model).set(float(multi["auc"]))
            self.multivariate_detected.labels(model).set(1.0 if multi.get("drifted") else 0.0)
        quality = summary.get("quality") or {}
        metrics: Mapping[str, float] = quality.get("metrics") or {}
        for metric, value in metrics.items():
            self.live_quality.labels(model, version, metric).set(float(value))
        self._forget(self._metrics, (model, version), set(metrics), (self.live_quality,), (model, version))
        self.labelled_rows.labels(model, version).set(float(quality.get("labelled_rows") or 0))
        self._update_estimate(model, version, summary.get("estimated_quality") or {})
        self.last_ts[model] = str(summary.get("ts") or "")

    def _update_estimate(self, model: str, version: str, est: Mapping[str, Any]) -> None:
        metrics: Mapping[str, float] = est.get("metrics") or {}
        bounds = {"lower": est.get("lower") or {}, "upper": est.get("upper") or {}}
        for metric, value in metrics.items():
            self.estimated_quality.labels(model, version, metric).set(float(value))
            for bound, values in bounds.items():
                self.estimated_bound.labels(model, version, metric, bound).set(
                    float(values.get(metric, math.nan))
                )
        key = (model, version)
        for gone in self._estimated.get(key, set()) - set(metrics):
            for gauge, extra in (
                (self.estimated_quality, ()),
                *((self.estimated_bound, (b,)) for b in bounds),
            ):
                if _multiprocess():
                    gauge.labels(model, version, gone, *extra).set(math.nan)
                else:
                    gauge.remove(model, version, gone, *extra)
        self._estimated[key] = set(metrics)

    @staticmethod
    def _forget(
        seen: dict[Any, set[str]], key: Any, now: set[str], gauges: tuple[Gauge, ...], prefix: tuple[str, ...]
    ) -> None:
        """Drop label sets that the newest window no longer has (NaN in multiprocess mode)."""
        for gone in seen.get(key, set()) - now:
            for gauge in gauges:
                if _multiprocess():
                    gauge.labels(*prefix, gone).set(math.nan)
                else:
                    gauge.remove(*prefix, gone)
        seen[key] = now

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """The current value of one sample (tests)."""
        return self.registry.get_sample_value(name, labels or {})
