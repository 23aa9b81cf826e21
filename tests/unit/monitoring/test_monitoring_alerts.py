"""Alert rules: schema, N-of-M windows, cooldown, de-duplication, event recording, real receivers."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from mloop.errors import ConfigError, MonitoringError
from mloop.monitoring.alerts import Alert, AlertEngine, AlertState, parse_rules
from mloop.monitoring.notifiers import EmailNotifier, WebhookNotifier
from mloop.monitoring.results import ColumnDrift, DriftReport


def _report(drifted: list[str], columns: tuple[str, ...] = ("a", "b", "c", "d")) -> DriftReport:
    cols = [
        ColumnDrift(
            column=c,
            test="wasserstein",
            statistic=0.3 if c in drifted else 0.01,
            threshold=0.1,
            drifted=c in drifted,
            fdr_rejected=c in drifted,
        )
        for c in columns
    ]
    share = len(drifted) / len(columns)
    return DriftReport(
        columns=cols,
        rows_reference=100,
        rows_current=50,
        dataset_drifted=bool(drifted),
        share_drifted=share,
        share_rule_drifted=share >= 0.5,
        n_tested=len(columns),
        n_drifted=len(drifted),
        fdr=0.05,
        drift_share=0.5,
        calibrated=True,
    )


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, dict[str, Any] | None]] = []

    def record_event(
        self,
        kind: str,
        subject: str,
        reason: str,
        *,
        actor: str = "mloop",
        data: dict[str, Any] | None = None,
    ) -> None:
        self.events.append((kind, subject, reason, data))


class Collect:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def send(self, alert: Alert) -> None:
        self.alerts.append(alert)


def test_rules_are_validated_into_typed_rules() -> None:
    rules = parse_rules(
        [
            {"name": "s", "when": "drift_share", "threshold": 0.3, "windows": 2, "of_last": 3},
            {"name": "f", "when": "feature_drift", "feature": "a"},
            {"name": "q", "when": "quality", "metric": "auc", "below": 0.7},
            {
                "name": "d",
                "when": "dataset_drift",
                "rule": "share",
                "notify": [{"type": "webhook", "url": "http://127.0.0.1:1/x"}],
            },
        ]
    )
    assert [type(r).__name__ for r in rules] == [
        "DriftShareRule",
        "FeatureDriftRule",
        "QualityRule",
        "DatasetDriftRule",
    ]
    with pytest.raises(ConfigError, match="threshhold"):
        parse_rules([{"name": "s", "when": "drift_share", "threshold": 0.3, "threshhold": 1}])
    with pytest.raises(ConfigError, match="when"):
        parse_rules([{"name": "s", "when": "weather"}])
    with pytest.raises(ConfigError, match="of_last"):
        parse_rules([{"name": "s", "when": "drift_share", "threshold": 0.3, "windows": 3, "of_last": 2}])
    with pytest.raises(ConfigError, match="unique"):
        parse_rules([{"name": "s", "when": "quality", "metric": "m", "below": 1}] * 2)


def test_n_of_m_windows_cooldown_and_dedup() -> None:
    sink, recorder = Collect(), Recorder()
    engine = AlertEngine(
        [
            {
                "name": "share",
                "when": "drift_share",
                "threshold": 0.5,
                "windows": 2,
                "of_last": 3,
                "cooldown_s": 100,
            }
        ],
        notifiers={"share": [sink]},
        recorder=recorder,
    )
    assert engine.observe(_report(["a", "b"]), now=0) == []  # 1 of last 1
    assert engine.observe(_report([]), now=10) == []  # 1 of last 2
    fired = engine.observe(_report(["a", "b"]), now=20)  # 2 of last 3 -> fires
    assert len(fired) == 1 and "2 of the last 3 windows" in fired[0].message
    assert engine.observe(_report(["a", "c"]), now=30) == []  # cooling down
    assert engine.observe(_report(["a", "c"]), now=130) != []  # cooldown over, new facts
    assert engine.observe(_report(["a", "c"]), now=300) == []  # same incident: de-duplicated
    engine.observe(_report([]), now=400)
    engine.observe(_report([]), now=410)  # resolved
    engine.observe(_report(["a", "c"]), now=500)
    assert engine.observe(_report(["a", "c"]), now=510) != []  # a new incident fires again
    assert len(sink.alerts) == 3
    assert [e[0] for e in recorder.events] == ["alert"] * 3 and recorder.events[0][1] == "share"
    assert recorder.events[0][3]["data"]["drifted_columns"] == ["a", "b"]


def test_feature_quality_and_dataset_rules_and_state_round_trip() -> None:
    engine = AlertEngine(
        [
            {"name": "fa", "when": "feature_drift", "feature": "a"},
            {"name": "auc", "when": "quality", "metric": "auc", "below": 0.7, "repeat_s": 50},
            {"name": "ds", "when": "dataset_drift"},
        ]
    )
    fired = engine.observe(_report(["a"]), quality={"auc": 0.6}, now=0)
    assert sorted(a.rule for a in fired) == ["auc", "ds", "fa"]
    assert next(a for a in fired if a.rule == "fa").subject == "a"
    assert [a.rule for a in engine.observe(quality={"auc": 0.65}, now=60)] == ["auc"]  # repeat_s elapsed
    state = AlertState.from_dict(json.loads(json.dumps(engine.state.to_dict())))
    again = AlertEngine(engine.rules, state=state)
    assert again.observe(_report(["a"]), now=70) == []  # still the same incidents
    with pytest.raises(MonitoringError, match="unknown alert rules"):
        AlertEngine([], notifiers={"nope": [Collect()]})


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(type(self).status)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, type[_Hook]]]:
    handler = type("Hook", (_Hook,), {"received": [], "status": 200})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", handler
    server.shutdown()
    server.server_close()


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp() -> Iterator[tuple[int, _Inbox]]:
    inbox = _Inbox()
    with socket.socket() as probe:  # aiosmtpd's start() connects to its port, so it needs a real one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield port, inbox
    controller.stop()


def test_webhook_and_email_reach_real_local_receivers(webhook, smtp) -> None:
    url, hook = webhook
    port, inbox = smtp
    recorder = Recorder()
    engine = AlertEngine(
        [
            {
                "name": "drift",
                "when": "drift_share",
                "threshold": 0.25,
                "severity": "critical",
                "notify": [
                    {"type": "webhook", "url": url},
                    {
                        "type": "email",
                        "host": "127.0.0.1",
                        "port": port,
                        "sender": "mloop@example.com",
                        "recipients": ["oncall@example.com"],
                    },
                ],
            }
        ],
        recorder=recorder,
    )
    [alert] = engine.observe(_report(["a", "b"]), now=0)
    assert alert.delivered == ["WebhookNotifier", "EmailNotifier"] and alert.errors == []
    [payload] = hook.received
    assert payload["text"].startswith("[CRITICAL] drift:") and payload["blocks"][0]["type"] == "section"
    assert payload["mloop"]["data"]["drifted_columns"] == ["a", "b"]
    [mail] = inbox.messages
    assert mail.rcpt_tos == ["oncall@example.com"]
    body = mail.content.decode()
    assert "Subject: [mloop] critical: drift" in body and "drifted_columns" in body
    assert recorder.events[0][3]["delivered"] == ["WebhookNotifier", "EmailNotifier"]


def test_delivery_failures_are_reported_not_raised(webhook) -> None:
    url, hook = webhook
    hook.status = 500
    with pytest.raises(MonitoringError, match="HTTP 500"):
        WebhookNotifier(url).send(Alert("r", "info", "r", "m", "f", 0.0))
    with pytest.raises(MonitoringError, match="failed"):
        EmailNotifier("127.0.0.1", 1, "a@b.c", ["d@e.f"], timeout_s=1).send(
            Alert("r", "info", "r", "m", "f", 0.0)
        )
    engine = AlertEngine(
        [{"name": "r", "when": "dataset_drift", "notify": [{"type": "webhook", "url": url}]}]
    )
    [alert] = engine.observe(_report(["a"]), now=0)
    assert alert.delivered == [] and "HTTP 500" in alert.errors[0]
