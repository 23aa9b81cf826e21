"""Prometheus alert rules for a served model: errors, latency SLO, drift, live quality, a stalled loop.

The rules query only the metric names fixed in the serving contract (``mloop_*``, see
``docs/deploy.md``), so they work for any mloop server. Thresholds come from ``mloop.yaml`` where it
has one (``monitoring.drift_share``, ``gates.thresholds``, ``rollout.max_quality_drop``,
``control.interval_s``) and from :class:`~mloop.deploy.options.DeployOptions` otherwise. The same
groups are written as a plain rules file (``mloop deploy prometheus``) and inside the
PrometheusRule of the Kubernetes manifests and the Helm chart.
"""

from __future__ import annotations

from typing import Any

import yaml

from mloop.config import Settings
from mloop.deploy.options import DeployOptions

__all__ = [
    "ERROR_METRICS",
    "RULES_FILE",
    "RULES_TEST_FILE",
    "SCRAPE_JOB",
    "alert_rule_groups",
    "render_rules",
]

RULES_FILE = "rules.yml"
RULES_TEST_FILE = "rules_test.yml"
"""``promtool test rules`` cases written beside the rules (see :mod:`mloop.deploy.rule_tests`)."""

ERROR_METRICS = frozenset({"rmse", "mse", "mae", "mape", "log_loss"})
"""Live-quality metrics where lower is better; every other metric is taken as higher is better."""
_HIGHER_IS_BETTER = (
    "accuracy|balanced_accuracy|roc_auc|average_precision|f1|f1_macro|f1_weighted|precision|recall|r2"
)


def _alert(name: str, expr: str, for_: str, severity: str, summary: str, description: str) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, "service": "mloop"},
        "annotations": {"summary": summary, "description": description},
    }


def _serving_rules(options: DeployOptions) -> list[dict[str, Any]]:
    q = options.latency_slo_quantile
    return [
        _alert(
            "MloopHighErrorRate",
            'sum by (model) (rate(mloop_requests_total{status=~"5.."}[5m]))\n'
            "  / sum by (model) (rate(mloop_requests_total[5m]))\n"
            f"  > {options.error_rate_threshold:g}",
            "5m",
            "critical",
            "Model {{ $labels.model }} answers too many server errors",
            f"More than {options.error_rate_threshold:.1%} of requests to {{{{ $labels.model }}}} "
            "failed with "
            "5xx over the last 5 minutes (now {{ $value | humanizePercentage }}).",
        ),
        _alert(
            "MloopLatencySLOBreach",
            f"histogram_quantile({q:g},\n"
            '  sum by (model, le) (rate(mloop_request_latency_seconds_bucket{status="2xx"}[5m])))\n'
            f"  > {options.latency_slo_seconds:g}",
            "10m",
            "warning",
            "Model {{ $labels.model }} is slower than its latency SLO",
            f"p{q * 100:g} request latency of {{{{ $labels.model }}}} is "
            "{{ $value | humanizeDuration }}, "
            f"above the {options.latency_slo_seconds:g}s objective.",
        ),
        _alert(
            "MloopPredictionLogDropping",
            "sum(increase(mloop_prediction_log_dropped_total[10m])) > 0",
            "5m",
            "warning",
            "Prediction log records are being dropped",
            "The prediction log buffer is full, so monitoring sees only part of the traffic. Check the "
            "prediction log backend or raise prediction_log.buffer_size.",
        ),
    ]


def _model_rules(settings: Settings, options: DeployOptions) -> list[dict[str, Any]]:
    drop = options.quality_drop if options.quality_drop is not None else settings.rollout.max_quality_drop
    rules = [
        _alert(
            "MloopDataDrift",
            f"max by (model) (mloop_drift_share) >= {settings.monitoring.drift_share:g}",
            "15m",
            "warning",
            "Input data of {{ $labels.model }} has drifted",
            "{{ $value | humanizePercentage }} of the features of {{ $labels.model }} drifted from the "
            "training reference. See `mloop monitor` for the per-feature report.",
        ),
        _alert(
            "MloopLiveQualityDrop",
            f'max_over_time(mloop_live_quality{{metric=~"{_HIGHER_IS_BETTER}"}}[1d])\n'
            f'  - mloop_live_quality{{metric=~"{_HIGHER_IS_BETTER}"}}\n'
            f"  > {drop:g}",
            "15m",
            "warning",
            "Live {{ $labels.metric }} of {{ $labels.model }} v{{ $labels.version }} dropped",
            "Live {{ $labels.metric }} fell {{ $value }} below its best of the last day "
            f"(allowed: {drop:g}).",
        ),
    ]
    for metric, threshold in sorted(settings.gates.thresholds.items()):
        worse = ">" if metric in ERROR_METRICS else "<"
        rules.append(
            _alert(
                f"MloopLiveQualityBelowGate_{metric}",
                f'mloop_live_quality{{metric="{metric}"}} {worse} {threshold:g}',
                "15m",
                "critical",
                f"Live {metric} of {{{{ $labels.model }}}} v{{{{ $labels.version }}}} fails its gate",
                f"Live {metric} is {{{{ $value }}}}, worse than the training gate {threshold:g}.",
            )
        )
    return rules


SCRAPE_JOB = "mloop"
"""The ``job`` label of mloop's targets: the ServiceMonitor takes it from the Services'
``app.kubernetes.io/name`` label; a hand-written scrape config should name its job ``mloop``."""


def _loop_rules(settings: Settings, options: DeployOptions) -> list[dict[str, Any]]:
    stalled = options.stalled_loop_seconds or max(300.0, 20 * settings.control.interval_s)
    model = settings.model.name.replace("\\", "\\\\").replace('"', '\\"')
    return [
        # A dead loop exports nothing, so the heartbeat series vanishes and MloopLoopStalled has
        # nothing to compare: absent() turns "no series at all" into an alert.
        _alert(
            "MloopLoopAbsent",
            f'absent(mloop_loop_heartbeat_timestamp_seconds{{model="{model}"}})',
            "10m",
            "critical",
            "No closed loop is running for {{ $labels.model }}",
            "No `mloop run` process has exported a heartbeat for 10 minutes: the loop pods are down, "
            "not scraped, or none of them is the leader. Check the loop Deployment and its logs.",
        ),
        _alert(
            "MloopTargetDown",
            f'up{{job="{SCRAPE_JOB}"}} == 0',
            "5m",
            "critical",
            "mloop target {{ $labels.instance }} is down",
            "Prometheus has failed to scrape {{ $labels.instance }} for 5 minutes: the pod is down or "
            "its /metrics does not answer.",
        ),
        _alert(
            "MloopLoopStalled",
            f"time() - max by (model) (mloop_loop_heartbeat_timestamp_seconds) > {stalled:g}",
            "2m",
            "critical",
            "The closed loop of {{ $labels.model }} has stopped",
            f"`mloop run` has not checked its triggers for more than {stalled:g}s "
            "(last heartbeat {{ $value | humanizeDuration }} ago). Check the loop pod's logs.",
        ),
    ]


def alert_rule_groups(settings: Settings, options: DeployOptions | None = None) -> list[dict[str, Any]]:
    """The rule groups, as the ``groups`` list of a Prometheus rules file."""
    options = options or DeployOptions()
    return [
        {"name": "mloop.serving", "rules": _serving_rules(options)},
        {"name": "mloop.model", "rules": _model_rules(settings, options)},
        {"name": "mloop.loop", "rules": _loop_rules(settings, options)},
    ]


def render_rules(settings: Settings, options: DeployOptions | None = None) -> str:
    """A Prometheus rules file (``promtool check rules`` accepts it)."""
    header = (
        f"# Alert rules for mloop project {settings.project!r}; generated by `mloop deploy prometheus`.\n"
    )
    return header + yaml.safe_dump(
        {"groups": alert_rule_groups(settings, options)}, sort_keys=False, width=120
    )
