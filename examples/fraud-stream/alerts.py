"""Turn high fraud scores into alerts: a sink stream for downstream systems, and the configured notifier.

    python alerts.py --url redis://127.0.0.1:6379/0 --scores scores --alerts fraud-alerts --threshold 0.5

Reads the scorer's result stream as its own consumer group (``alerts``), so it never competes with other
readers of the results. A result whose ``proba_1`` (the fraud probability) reaches ``--threshold`` is
written to the ``--alerts`` stream and sent to every notifier configured in ``mloop.yaml``
(``monitoring.alerts[*].notify``: Slack-compatible webhooks, email), or to ``--webhook URL``.
Entries are acknowledged after the alert is written, like the scorer's own events.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import redis

from mloop.config import load_settings
from mloop.monitoring.alerts import Alert, parse_rules
from mloop.monitoring.notifiers import EmailNotifier, Notifier, WebhookNotifier

log = logging.getLogger("fraud-alerts")


def notifiers(webhook: str | None) -> list[Notifier]:
    if webhook:
        return [WebhookNotifier(webhook)]
    found: list[Notifier] = []
    for rule in parse_rules(load_settings().monitoring.alerts):
        for t in rule.notify:
            if getattr(t, "type", "") == "webhook":
                found.append(WebhookNotifier(t.url))
            else:
                found.append(EmailNotifier(t.host, t.port, t.sender, t.recipients, starttls=t.starttls))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--scores", default="scores")
    parser.add_argument("--alerts", default="fraud-alerts")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--webhook", default=None)
    parser.add_argument("--idle-exit", type=float, default=None, help="stop after this many idle seconds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    client = redis.Redis.from_url(args.url, decode_responses=True)
    try:
        client.xgroup_create(args.scores, "alerts", id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    targets = notifiers(args.webhook)
    idle_since = time.monotonic()
    raised = 0
    while args.idle_exit is None or time.monotonic() - idle_since < args.idle_exit:
        got = client.xreadgroup("alerts", "alerts-1", {args.scores: ">"}, count=500, block=1000)
        entries = got[0][1] if got else []
        if entries:
            idle_since = time.monotonic()
        for entry_id, fields in entries:
            score = float(fields.get("proba_1", 0.0))
            if score >= args.threshold:
                event = json.loads(fields.get("event", "{}"))
                alert = Alert(
                    rule="high-fraud-score",
                    severity="critical",
                    subject=str(event.get("transaction_id", fields["key"])),
                    message=(
                        f"transaction {event.get('transaction_id')} of {event.get('amount')} "
                        f"scored {score:.2f} (model v{fields.get('version')})"
                    ),
                    fingerprint=fields["key"],
                    fired_at=time.time(),
                    data={"score": score, "event": event},
                )
                client.xadd(
                    args.alerts, {"key": fields["key"], "score": f"{score:.4f}", "alert": alert.message}
                )
                for target in targets:
                    try:
                        target.send(alert)
                    except Exception as exc:  # a failing notifier must not stop the alert stream
                        log.warning("notifier %r failed: %s", target, exc)
                raised += 1
                log.info("ALERT %s", alert.message)
            client.xack(args.scores, "alerts", entry_id)
    print(f"raised {raised} alerts")


if __name__ == "__main__":
    main()
