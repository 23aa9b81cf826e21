"""``promtool test rules`` cases for the generated alert rules, written beside them.

``mloop deploy prometheus`` writes ``rules.yml`` and ``rules_test.yml``; ``promtool test rules
rules_test.yml`` then shows, on synthetic series, that the alerts that matter most fire on their
signal and stay quiet without it: a high error rate, drift, a stalled loop, a loop that is gone
(``absent()``) and a target that is down (``up == 0``). promtool compares annotations verbatim, so
the expected annotations are the rules' own templates expanded here for the synthetic values
(:func:`humanize_duration` and :func:`humanize_percentage` follow Prometheus' template functions).
"""

from __future__ import annotations

import math
import re
from typing import Any

from mloop.config import Settings
from mloop.deploy.options import DeployOptions
from mloop.deploy.prometheus import RULES_FILE, SCRAPE_JOB, alert_rule_groups

__all__ = ["humanize_duration", "humanize_percentage", "rule_tests"]


def humanize_duration(seconds: float) -> str:
    """Prometheus' ``humanizeDuration`` for durations of a second or more."""
    if seconds < 1:
        raise ValueError("only durations of at least one second are used in the generated tests")
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m {secs}s"
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{seconds:.4g}s"


def humanize_percentage(ratio: float) -> str:
    """Prometheus' ``humanizePercentage`` (``%.4g`` of the ratio times 100)."""
    return f"{ratio * 100:.4g}%"


_PLACEHOLDER = re.compile(r"\{\{\s*(\$labels\.(\w+)|\$value(?:\s*\|\s*(\w+))?)\s*\}\}")


def _expand(text: str, labels: dict[str, str], value: float) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(2):
            return labels[match.group(2)]
        function = match.group(3)
        if function == "humanizePercentage":
            return humanize_percentage(value)
        if function == "humanizeDuration":
            return humanize_duration(value)
        if function is None:
            return f"{value:g}"
        raise ValueError(f"no expansion for template function {function!r}")

    return _PLACEHOLDER.sub(one, text)


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


class _Cases:
    """Expected alerts built from the rules themselves (labels and expanded annotations)."""

    def __init__(self, settings: Settings, options: DeployOptions) -> None:
        self.rules = {r["alert"]: r for g in alert_rule_groups(settings, options) for r in g["rules"]}

    def firing(self, alert: str, at: int, labels: dict[str, str], value: float) -> dict[str, Any]:
        rule = self.rules[alert]
        all_labels = {**labels, **rule["labels"]}
        expanded = {k: _expand(v, all_labels, value) for k, v in rule["annotations"].items()}
        return {
            "eval_time": f"{at}m",
            "alertname": alert,
            "exp_alerts": [{"exp_labels": all_labels, "exp_annotations": expanded}],
        }

    @staticmethod
    def quiet(alert: str, at: int) -> dict[str, Any]:
        return {"eval_time": f"{at}m", "alertname": alert, "exp_alerts": []}


def rule_tests(settings: Settings, options: DeployOptions | None = None) -> dict[str, Any]:
    """The ``promtool test rules`` file for the rules of ``settings`` (as a YAML-ready dict)."""
    options = options or DeployOptions()
    cases = _Cases(settings, options)
    model = {"model": settings.model.name}
    stalled = options.stalled_loop_seconds or max(300.0, 20 * settings.control.interval_s)
    # The heartbeat stops at t=0; the alert is due `stalled` seconds later plus its 2m `for`.
    stalled_at = math.ceil(stalled / 60) + 4
    span = max(stalled_at, 20) + 10  # every check below falls inside the series
    error_share = 0.2  # 20 of every 100 requests fail
    drift = 1.0  # every feature drifted: above any drift_share threshold
    broken = [
        _series("mloop_requests_total", {**model, "status": "200"}, f"0+80x{span}"),
        _series("mloop_requests_total", {**model, "status": "500"}, f"0+20x{span}"),
        _series("mloop_drift_share", model, f"{drift:g}x{span}"),
        _series("mloop_loop_heartbeat_timestamp_seconds", model, f"0x{span}"),
        _series("up", {"job": SCRAPE_JOB, "instance": "10.0.0.7:8000"}, f"0x{span}"),
        _series("up", {"job": SCRAPE_JOB, "instance": "10.0.0.8:8000"}, f"1x{span}"),
    ]
    broken_checks = [
        cases.quiet("MloopHighErrorRate", 3),  # not yet for its 5m
        cases.firing("MloopHighErrorRate", 15, model, error_share),
        cases.firing("MloopDataDrift", 20, model, drift),
        cases.quiet("MloopLoopStalled", max(1, math.floor(stalled / 60) - 1)),
        cases.firing("MloopLoopStalled", stalled_at, model, stalled_at * 60.0),
        cases.quiet("MloopLoopAbsent", 15),  # a stalled loop still exports its (old) heartbeat
        cases.quiet("MloopTargetDown", 3),
        cases.firing("MloopTargetDown", 10, {"job": SCRAPE_JOB, "instance": "10.0.0.7:8000"}, 0.0),
    ]
    healthy = [
        _series("mloop_requests_total", {**model, "status": "200"}, "0+100x30"),
        _series("mloop_drift_share", model, "0x30"),
        _series("mloop_loop_heartbeat_timestamp_seconds", model, "0+60x30"),
        _series("up", {"job": SCRAPE_JOB, "instance": "10.0.0.7:8000"}, "1x30"),
    ]
    healthy_checks = [
        cases.quiet(alert, 25)
        for alert in (
            "MloopHighErrorRate",
            "MloopDataDrift",
            "MloopLoopStalled",
            "MloopLoopAbsent",
            "MloopTargetDown",
        )
    ]
    gone = [_series("up", {"job": SCRAPE_JOB, "instance": "10.0.0.7:8000"}, "1x30")]
    gone_checks = [
        cases.quiet("MloopLoopAbsent", 5),  # not yet for its 10m
        cases.firing("MloopLoopAbsent", 15, model, 1.0),
    ]
    return {
        "rule_files": [RULES_FILE],
        "evaluation_interval": "1m",
        "tests": [
            {"name": "broken", "interval": "1m", "input_series": broken, "alert_rule_test": broken_checks},
            {"name": "healthy", "interval": "1m", "input_series": healthy, "alert_rule_test": healthy_checks},
            {"name": "loop gone", "interval": "1m", "input_series": gone, "alert_rule_test": gone_checks},
        ],
    }
