"""A Grafana dashboard of one mloop deployment: traffic, latency, errors, batching, drift, live
quality, rollout weights and the closed loop.

Every query uses only metric names of the serving contract (:data:`DASHBOARD_METRICS` lists them, and a
test scrapes a live server to check each is exported). Import the JSON in Grafana, or let the
Grafana sidecar load it from a ConfigMap; pick the Prometheus data source in the ``datasource``
variable.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mloop.config import Settings

__all__ = ["DASHBOARD_METRICS", "dashboard", "metric_names", "render_dashboard"]

_DS = {"type": "prometheus", "uid": "${datasource}"}
_SEL = 'model=~"$model"'
_RATE = "[$__rate_interval]"


def _target(expr: str, legend: str, ref: str, *, instant: bool = False) -> dict[str, Any]:
    target: dict[str, Any] = {"datasource": _DS, "expr": expr, "legendFormat": legend, "refId": ref}
    if instant:
        target.update({"instant": True, "range": False, "format": "table"})
    return target


def _panel(
    title: str,
    targets: list[tuple[str, str]],
    *,
    unit: str = "short",
    kind: str = "timeseries",
    description: str = "",
    stack: bool = False,
    instant: bool = False,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": unit}
    if kind == "timeseries" and stack:
        defaults["custom"] = {"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 30}
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": _DS,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {},
        "targets": [
            _target(e, legend, chr(ord("A") + i), instant=instant) for i, (e, legend) in enumerate(targets)
        ],
    }


def _share_of_requests(status: str) -> str:
    total = f"sum(rate(mloop_requests_total{{{_SEL}}}{_RATE}))"
    return f'sum(rate(mloop_requests_total{{{_SEL},status=~"{status}"}}{_RATE})) / {total}'


def _quantiles(metric: str, by: str = "", where: str = "") -> list[tuple[str, str]]:
    extra = f", {by}" if by else ""
    legend_by = f" {{{{{by}}}}}" if by else ""
    sel = f"{_SEL}, {where}" if where else _SEL
    return [
        (
            f"histogram_quantile({q}, sum by (le{extra}) (rate({metric}_bucket{{{sel}}}{_RATE})))",
            f"p{int(q * 100)}{legend_by}",
        )
        for q in (0.5, 0.9, 0.99)
    ]


def _rows(settings: Settings) -> list[tuple[str, list[dict[str, Any]]]]:
    return [
        (
            "Traffic",
            [
                _panel(
                    "Request rate by version and status",
                    [
                        (
                            f"sum by (version, status) (rate(mloop_requests_total{{{_SEL}}}{_RATE}))",
                            "v{{version}} {{status}}",
                        ),
                    ],
                    unit="reqps",
                    stack=True,
                ),
                _panel(
                    "Error ratio",
                    [
                        (
                            _share_of_requests("5.."),
                            "5xx",
                        ),
                        (
                            _share_of_requests("4.."),
                            "4xx",
                        ),
                    ],
                    unit="percentunit",
                ),
                _panel(
                    "Request latency",
                    _quantiles("mloop_request_latency_seconds", where='status="2xx"'),
                    unit="s",
                    description="End-to-end latency quantiles of answered (2xx) requests; refusals "
                    "(4xx, 5xx) are in the error ratio.",
                ),
                _panel(
                    "Model latency by version (per batch)",
                    _quantiles("mloop_model_latency_seconds", "version"),
                    unit="s",
                ),
            ],
        ),
        (
            "Batching",
            [
                _panel(
                    "Batch size",
                    [
                        *_quantiles("mloop_batch_size"),
                        (
                            f"sum(rate(mloop_batch_size_sum{{{_SEL}}}{_RATE}))"
                            f" / sum(rate(mloop_batch_size_count{{{_SEL}}}{_RATE}))",
                            "mean",
                        ),
                    ],
                    description="Rows per model call (micro-batching).",
                ),
                _panel(
                    "Queue depth",
                    [(f"sum by (model) (mloop_queue_depth{{{_SEL}}})", "{{model}}")],
                    description="Rows waiting for the model; requests that do not fit the queue "
                    "(serving.max_queue, or the measured throughput x serving.latency_budget_ms) get 503.",
                ),
                _panel(
                    "Validation errors",
                    [
                        (
                            f"sum by (field, rule) (rate(mloop_validation_errors_total{{{_SEL}}}{_RATE}))",
                            "{{field}} {{rule}}",
                        ),
                    ],
                    unit="reqps",
                ),
                _panel(
                    "Prediction log drops",
                    [("sum(rate(mloop_prediction_log_dropped_total[$__rate_interval]))", "dropped")],
                    unit="reqps",
                ),
            ],
        ),
        (
            "Model health",
            [
                _panel(
                    "Drift score per feature",
                    [(f"max by (feature) (mloop_drift_score{{{_SEL}}})", "{{feature}}")],
                    description="Per-feature drift statistic against the training reference.",
                ),
                _panel(
                    "Drifted features",
                    [
                        (f"max by (model) (mloop_drift_share{{{_SEL}}})", "share drifted"),
                        (f"sum by (model) (mloop_drift_detected{{{_SEL}}})", "features drifted"),
                    ],
                    description=f"Dataset counts as drifted at share >= {settings.monitoring.drift_share:g}.",
                ),
                _panel(
                    "Live quality",
                    [
                        (f"mloop_live_quality{{{_SEL}}}", "v{{version}} {{metric}}"),
                        (f"mloop_estimated_quality{{{_SEL}}}", "v{{version}} {{metric}} (estimated)"),
                    ],
                    description="Quality on delayed labels sent to /feedback, and estimated without "
                    "labels from the calibrated probabilities (blind to a changed P(y|x)).",
                ),
                _panel(
                    "Labelled rows", [(f"sum by (version) (mloop_labelled_rows{{{_SEL}}})", "v{{version}}")]
                ),
                _panel(
                    "Predictions by class",
                    [
                        (
                            f"sum by (version, class) (rate(mloop_predictions_total{{{_SEL}}}{_RATE}))",
                            "v{{version}} {{class}}",
                        ),
                    ],
                    unit="reqps",
                    stack=True,
                ),
                _panel(
                    "Predicted value",
                    _quantiles("mloop_prediction_value", "version"),
                    description="Regressors: quantiles of predicted values.",
                ),
            ],
        ),
        (
            "Rollout and loop",
            [
                _panel(
                    "Rollout traffic weights",
                    [
                        (f"max by (version, arm) (mloop_rollout_weight{{{_SEL}}})", "v{{version}} {{arm}}"),
                    ],
                    unit="percentunit",
                    stack=True,
                ),
                _panel(
                    "Loaded models",
                    [(f"max by (model, version, alias, loaded_at) (mloop_model_info{{{_SEL}}})", "")],
                    kind="table",
                    instant=True,
                ),
                _panel(
                    "Seconds since the loop last checked",
                    [
                        (
                            f"time() - max by (model) (mloop_loop_heartbeat_timestamp_seconds{{{_SEL}}})",
                            "{{model}}",
                        ),
                    ],
                    unit="s",
                ),
                _panel(
                    "Last loop cycle by outcome",
                    [
                        (
                            f"time() - max by (outcome) (mloop_loop_last_cycle_timestamp_seconds{{{_SEL}}})",
                            "{{outcome}}",
                        ),
                    ],
                    unit="s",
                ),
            ],
        ),
    ]


def dashboard(settings: Settings) -> dict[str, Any]:
    """The dashboard as a dict (Grafana JSON model, schema version 39)."""
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for title, row_panels in _rows(settings):
        panels.append(
            {
                "type": "row",
                "title": title,
                "id": next_id,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        for i, panel in enumerate(row_panels):
            panel["id"] = next_id
            panel["gridPos"] = {"h": 8, "w": 12, "x": 12 * (i % 2), "y": y + 8 * (i // 2)}
            panels.append(panel)
            next_id += 1
        y += 8 * ((len(row_panels) + 1) // 2)
    return {
        "title": f"mloop · {settings.project}",
        "uid": re.sub(r"[^a-zA-Z0-9-]", "-", f"mloop-{settings.project}")[:40],
        "tags": ["mloop"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus"},
                {
                    "name": "model",
                    "label": "Model",
                    "type": "query",
                    "datasource": _DS,
                    "query": {"query": "label_values(mloop_model_info, model)", "refId": "model"},
                    "definition": "label_values(mloop_model_info, model)",
                    "refresh": 2,
                    "current": {"text": settings.model.name, "value": settings.model.name},
                    "includeAll": True,
                    "multi": True,
                },
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def render_dashboard(settings: Settings) -> str:
    return json.dumps(dashboard(settings), indent=2) + "\n"


_METRIC = re.compile(r"\bmloop_[a-z_]+")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr: str) -> set[str]:
    """Metric families an expression queries (``x_bucket``/``_sum``/``_count`` count as ``x``)."""
    names = set()
    for found in _METRIC.findall(expr):
        for suffix in _HISTOGRAM_SUFFIXES:
            if found.endswith(suffix):
                found = found[: -len(suffix)]
                break
        names.add(found)
    return names


def _dashboard_metrics() -> frozenset[str]:
    from mloop.config import Settings as _S

    board = dashboard(_S())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    exprs.append(board["templating"]["list"][1]["definition"])
    return frozenset(n for e in exprs for n in metric_names(e))


DASHBOARD_METRICS = _dashboard_metrics()
"""Every metric family the dashboard queries."""
