"""The Grafana dashboard: well-formed, covers what the issue asks, queries only contract metrics."""

from __future__ import annotations

import json
from pathlib import Path

from test_deploy_prometheus import CONTRACT_METRICS

from mloop.config import Settings
from mloop.deploy import DASHBOARD_METRICS, dashboard, generate
from mloop.deploy.grafana import metric_names


def test_dashboard_queries_only_contract_metrics() -> None:
    assert DASHBOARD_METRICS <= CONTRACT_METRICS, DASHBOARD_METRICS - CONTRACT_METRICS


def test_dashboard_covers_each_signal() -> None:
    board = dashboard(Settings(project="fraud"))
    titles = " | ".join(p["title"].lower() for p in board["panels"])
    for signal in (
        "request rate",
        "latency",
        "error",
        "batch size",
        "queue depth",
        "drift score per feature",
        "live quality",
        "rollout traffic weights",
    ):
        assert signal in titles, signal
    for must in (
        "mloop_request_latency_seconds",
        "mloop_batch_size",
        "mloop_queue_depth",
        "mloop_drift_score",
        "mloop_live_quality",
        "mloop_rollout_weight",
        "mloop_requests_total",
    ):
        assert must in DASHBOARD_METRICS


def test_dashboard_is_valid_grafana_json(tmp_path: Path) -> None:
    (path,) = generate("grafana", Settings(project="fraud", root=tmp_path), tmp_path)
    board = json.loads(path.read_text())
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    assert board["uid"] and len(board["uid"]) <= 40 and board["schemaVersion"] >= 36
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource", "model"]
    for panel in board["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
            assert metric_names(target["expr"]), target["expr"]


def test_metric_names_strip_histogram_suffixes() -> None:
    expr = (
        "sum(rate(mloop_batch_size_sum[5m])) / sum(rate(mloop_batch_size_count[5m])) + mloop_requests_total"
    )
    assert metric_names(expr) == {"mloop_batch_size", "mloop_requests_total"}
