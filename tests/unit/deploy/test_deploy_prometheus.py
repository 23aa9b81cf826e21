"""Alert rules: ``promtool check rules`` accepts them and ``promtool test rules`` shows each one fires
on the series it is about (and stays quiet on healthy ones)."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mloop.config import Settings
from mloop.deploy import DeployOptions, alert_rule_groups, generate, render_rules
from mloop.deploy.grafana import metric_names
from mloop.deploy.rule_tests import humanize_duration, humanize_percentage

CONTRACT_METRICS = {
    "mloop_requests_total",
    "mloop_request_latency_seconds",
    "mloop_model_latency_seconds",
    "mloop_batch_size",
    "mloop_queue_depth",
    "mloop_validation_errors_total",
    "mloop_predictions_total",
    "mloop_prediction_value",
    "mloop_model_info",
    "mloop_prediction_log_dropped_total",
    "mloop_drift_score",
    "mloop_estimated_quality",
    "mloop_drift_detected",
    "mloop_drift_share",
    "mloop_live_quality",
    "mloop_labelled_rows",
    "mloop_rollout_weight",
    "mloop_loop_heartbeat_timestamp_seconds",
    "mloop_loop_last_cycle_timestamp_seconds",
}
"""The serving metrics contract (the names `mloop serve` / `mloop run` export)."""


def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    reason = "promtool is not installed (Debian package `prometheus`)"
    if os.environ.get("MLOOP_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason}, and MLOOP_REQUIRE_SERVICES=1 requires it.")
    pytest.skip(f"{reason}; apt-get install -y prometheus")


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def settings() -> Settings:
    return Settings(
        project="fraud", model={"name": "fraud"}, gates={"thresholds": {"roc_auc": 0.8, "rmse": 3.0}}
    )


def test_rules_query_only_contract_metrics(settings: Settings) -> None:
    used = {n for g in alert_rule_groups(settings) for r in g["rules"] for n in metric_names(r["expr"])}
    # `up` is Prometheus' own series of every scrape target.
    assert used and used <= CONTRACT_METRICS | {"up"}, used - CONTRACT_METRICS


def test_gate_thresholds_become_rules_in_the_right_direction(settings: Settings) -> None:
    rules = {r["alert"]: r for g in alert_rule_groups(settings) for r in g["rules"]}
    assert rules["MloopLiveQualityBelowGate_roc_auc"]["expr"] == 'mloop_live_quality{metric="roc_auc"} < 0.8'
    assert rules["MloopLiveQualityBelowGate_rmse"]["expr"] == 'mloop_live_quality{metric="rmse"} > 3'


def test_promtool_check_rules(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(render_rules(settings, DeployOptions()))
    done = _run("check", "rules", "rules.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def _expect(alert: str, at: str, firing: list[dict[str, str]]) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert, "exp_alerts": [{"exp_labels": labels} for labels in firing]}


def test_promtool_test_rules_fire_on_their_signals(settings: Settings, tmp_path: Path) -> None:
    groups = copy.deepcopy(alert_rule_groups(settings, DeployOptions()))
    # promtool compares annotations verbatim; their templates are checked by `check rules` above,
    # so the unit tests compare labels only.
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations")
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": groups}))
    sev = {"service": "mloop"}
    m = {"model": "fraud"}
    ok = {"model": "ok"}
    series = [
        _series(
            "mloop_requests_total", {**m, "version": "1", "endpoint": "/predict", "status": "200"}, "0+100x40"
        ),
        _series(
            "mloop_requests_total", {**m, "version": "1", "endpoint": "/predict", "status": "500"}, "0+20x40"
        ),
        _series(
            "mloop_requests_total",
            {**ok, "version": "1", "endpoint": "/predict", "status": "200"},
            "0+100x40",
        ),
        *[
            _series(
                "mloop_request_latency_seconds_bucket",
                {**m, "endpoint": "/predict", "status": "2xx", "le": le},
                v,
            )
            for le, v in (("0.1", "0+0x40"), ("1", "0+10x40"), ("+Inf", "0+10x40"))
        ],
        *[
            _series(
                "mloop_request_latency_seconds_bucket",
                {**ok, "endpoint": "/predict", "status": "2xx", "le": le},
                "0+10x40",
            )
            for le in ("0.1", "1", "+Inf")
        ],
        # Slow refusals of the healthy model: they must not count in its latency (status class label).
        *[
            _series(
                "mloop_request_latency_seconds_bucket",
                {**ok, "endpoint": "/predict", "status": "4xx", "le": le},
                v,
            )
            for le, v in (("0.1", "0+0x40"), ("1", "0+100x40"), ("+Inf", "0+100x40"))
        ],
        _series("mloop_drift_share", m, "0.8x40"),
        _series("mloop_drift_share", ok, "0.1x40"),
        _series("mloop_live_quality", {**m, "version": "1", "metric": "roc_auc"}, "0.9x20 0.7x40"),
        _series("mloop_live_quality", {**ok, "version": "1", "metric": "roc_auc"}, "0.9x60"),
        _series("mloop_loop_heartbeat_timestamp_seconds", m, "0+60x10 600x40"),
        _series("mloop_loop_heartbeat_timestamp_seconds", ok, "0+60x60"),
        _series("mloop_prediction_log_dropped_total", {}, "0+5x40"),
    ]
    tests = [
        _expect("MloopHighErrorRate", "15m", [{**sev, "severity": "critical", **m}]),
        _expect("MloopHighErrorRate", "3m", []),  # not yet for 5m
        _expect("MloopLatencySLOBreach", "25m", [{**sev, "severity": "warning", **m}]),
        _expect("MloopDataDrift", "20m", [{**sev, "severity": "warning", **m}]),
        _expect(
            "MloopLiveQualityDrop",
            "45m",
            [{**sev, "severity": "warning", **m, "version": "1", "metric": "roc_auc"}],
        ),
        _expect("MloopLiveQualityDrop", "15m", []),
        _expect(
            "MloopLiveQualityBelowGate_roc_auc",
            "45m",
            [{**sev, "severity": "critical", **m, "version": "1", "metric": "roc_auc"}],
        ),
        _expect("MloopLoopStalled", "25m", [{**sev, "severity": "critical", **m}]),
        _expect("MloopLoopStalled", "8m", []),
        _expect("MloopPredictionLogDropping", "20m", [{**sev, "severity": "warning"}]),
    ]
    spec = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": tests}],
    }
    (tmp_path / "rules_test.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    done = _run("test", "rules", "rules_test.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_detects_a_wrong_expectation(settings: Settings, tmp_path: Path) -> None:
    # The test above means something only if promtool fails when an alert does not fire as expected.
    (tmp_path / "rules.yml").write_text(render_rules(settings))
    spec = {
        "rule_files": ["rules.yml"],
        "tests": [
            {
                "interval": "1m",
                "input_series": [_series("mloop_drift_share", {"model": "fraud"}, "0.1x30")],
                "alert_rule_test": [_expect("MloopDataDrift", "20m", [{"model": "fraud"}])],
            }
        ],
    }
    (tmp_path / "bad_test.yml").write_text(yaml.safe_dump(spec))
    assert _run("test", "rules", "bad_test.yml", cwd=tmp_path).returncode != 0


def test_generated_rule_tests_pass_beside_the_generated_rules(settings: Settings, tmp_path: Path) -> None:
    written = generate("prometheus", settings, tmp_path, DeployOptions())
    assert {p.name for p in written} == {"rules.yml", "rules_test.yml"}
    spec = yaml.safe_load((tmp_path / "rules_test.yml").read_text())
    tested = {t["alertname"] for group in spec["tests"] for t in group["alert_rule_test"] if t["exp_alerts"]}
    assert {"MloopLoopAbsent", "MloopTargetDown", "MloopLoopStalled", "MloopHighErrorRate"} <= tested
    done = _run("test", "rules", "rules_test.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_generated_rule_tests_fail_when_a_rule_breaks(settings: Settings, tmp_path: Path) -> None:
    generate("prometheus", settings, tmp_path, DeployOptions())
    rules = yaml.safe_load((tmp_path / "rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == "MloopLoopAbsent":  # the dead-loop alert that once could not fire
                rule["expr"] = "absent(mloop_loop_heartbeat_timestamp_seconds) * 0 > 1"
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    done = _run("test", "rules", "rules_test.yml", cwd=tmp_path)
    assert done.returncode != 0 and "MloopLoopAbsent" in done.stdout + done.stderr


def test_absent_and_down_alerts_exist(settings: Settings) -> None:
    rules = {r["alert"]: r for g in alert_rule_groups(settings) for r in g["rules"]}
    assert rules["MloopLoopAbsent"]["expr"] == 'absent(mloop_loop_heartbeat_timestamp_seconds{model="fraud"})'
    assert rules["MloopTargetDown"]["expr"] == 'up{job="mloop"} == 0'


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(1.5, "1.5s"), (59, "59s"), (600, "10m 0s"), (3725, "1h 2m 5s"), (90061, "1d 1h 1m 1s")],
)
def test_humanize_duration_follows_prometheus(seconds: float, text: str) -> None:
    assert humanize_duration(seconds) == text


def test_humanize_percentage_follows_prometheus() -> None:
    assert [humanize_percentage(v) for v in (0.2, 1.0, 0.12345)] == ["20%", "100%", "12.35%"]
