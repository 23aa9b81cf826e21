"""Where alerts go: a Slack-compatible webhook and email over SMTP.

A notifier is anything with ``send(alert) -> None`` that raises
:class:`~mloop.errors.MonitoringError` when delivery fails (the cause chained).

* :class:`WebhookNotifier` POSTs JSON ``{"text": ..., "blocks": [...], "mloop": {...}}``: Slack (and
  Mattermost, Teams' Slack-compatible endpoints) show ``text``/``blocks``; other receivers can read
  the structured ``mloop`` object.
* :class:`EmailNotifier` sends a plain-text message through an SMTP server (optional STARTTLS/SSL
  and login).
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from mloop.errors import MonitoringError

if TYPE_CHECKING:
    from mloop.monitoring.alerts import Alert

__all__ = ["EmailNotifier", "Notifier", "WebhookNotifier"]


class Notifier(Protocol):
    """Sends one alert somewhere; raises MonitoringError when it cannot."""

    def send(self, alert: Alert) -> None: ...


def _text(alert: Alert) -> str:
    return f"[{alert.severity.upper()}] {alert.rule}: {alert.message}"


class WebhookNotifier:
    """POST each alert as Slack-compatible JSON to ``url``."""

    def __init__(self, url: str, *, timeout_s: float = 5.0, headers: Mapping[str, str] | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise MonitoringError(f"Webhook URL must start with http:// or https://; got {url!r}.")
        self.url = url
        self.timeout_s = timeout_s
        self.headers = dict(headers or {})

    def payload(self, alert: Alert) -> dict[str, Any]:
        return {
            "text": _text(alert),
            "blocks": [
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": f"*{alert.rule}* ({alert.severity}): {alert.message}"},
                }
            ],
            "mloop": alert.to_dict(),
        }

    def send(self, alert: Alert) -> None:
        try:
            response = httpx.post(
                self.url, json=self.payload(alert), headers=self.headers, timeout=self.timeout_s
            )
        except httpx.HTTPError as exc:
            raise MonitoringError(f"Webhook {self.url} could not be reached: {exc}.") from exc
        if response.status_code >= 400:
            raise MonitoringError(
                f"Webhook {self.url} refused the alert with HTTP {response.status_code}: "
                f"{response.text[:200]!r}."
            )


class EmailNotifier:
    """Send each alert as a plain-text email through the SMTP server at ``host:port``."""

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        recipients: Sequence[str],
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        use_ssl: bool = False,
        timeout_s: float = 10.0,
    ) -> None:
        if not recipients:
            raise MonitoringError("EmailNotifier needs at least one recipient address.")
        self.host, self.port, self.sender = host, port, sender
        self.recipients = list(recipients)
        self.username, self.password = username, password
        self.starttls, self.use_ssl, self.timeout_s = starttls, use_ssl, timeout_s

    def message(self, alert: Alert) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = f"[mloop] {alert.severity}: {alert.rule}"
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        lines = [_text(alert), "", f"Fired at: {alert.fired_at_iso}", f"Subject: {alert.subject}"]
        lines += [f"{k}: {v}" for k, v in alert.data.items()]
        msg.set_content("\n".join(lines))
        return msg

    def send(self, alert: Alert) -> None:
        try:
            smtp: smtplib.SMTP
            if self.use_ssl:
                smtp = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout_s, context=ssl.create_default_context()
                )
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
            with smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(self.message(alert))
        except (smtplib.SMTPException, OSError) as exc:
            raise MonitoringError(
                f"Email to {self.recipients} via {self.host}:{self.port} failed: {exc}."
            ) from exc
