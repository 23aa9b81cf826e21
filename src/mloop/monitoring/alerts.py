"""Alert rules over a history of monitoring windows, with cooldown and de-duplication.

Rules come from ``settings.monitoring.alerts``, a list of mappings validated into typed rules
(unknown keys or kinds raise :class:`~mloop.errors.ConfigError`)::

    monitoring:
      alerts:
        - name: many-columns-drifted   # unique; identifies the rule in events and state
          when: drift_share            # drift_share | dataset_drift | feature_drift | quality |
                                       # multivariate_drift
          threshold: 0.3               # drift_share: share of drifted columns >= threshold
          windows: 3                   # fire when the condition held in >= 3 ...
          of_last: 5                   # ... of the last 5 windows (default 1 of 1)
          cooldown_s: 3600             # at most one notification of this rule per hour
          repeat_s: null               # re-send an ongoing, identical alert after this long (never)
          severity: warning            # info | warning | critical
          notify:
            - {type: webhook, url: "https://hooks.slack.com/services/..."}
            - {type: email, host: smtp.example.com, port: 587, starttls: true,
               sender: mloop@example.com, recipients: [oncall@example.com]}
        - {name: amount-drift, when: feature_drift, feature: amount}
        - {name: dataset, when: dataset_drift, rule: fdr}          # fdr (Benjamini-Hochberg) | share
        - {name: joint, when: multivariate_drift}   # the domain classifier (monitoring.multivariate_alpha)
        - {name: accuracy-low, when: quality, metric: accuracy, below: 0.8}

Each :meth:`AlertEngine.observe` call is one window (a drift report and/or live quality metrics).
A rule fires on a window where its condition holds and held in at least ``windows`` of the last
``of_last`` windows in which it could be evaluated, unless it is cooling down (``cooldown_s`` since its last
notification) or the alert is a duplicate (same rule and same facts as the last notification while
the condition has kept holding, and ``repeat_s`` has not elapsed). A fired alert is sent to every
notifier of its rule and recorded through ``record_event(kind, subject, reason, *, data=...)`` of
any recorder (the platform store has that method).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from mloop.errors import ConfigError, MonitoringError
from mloop.monitoring.notifiers import EmailNotifier, Notifier, WebhookNotifier
from mloop.monitoring.results import DriftReport
from mloop.store.events import EventSink

__all__ = ["Alert", "AlertEngine", "AlertRule", "AlertState", "EventRecorder", "parse_rules"]

log = logging.getLogger(__name__)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebhookTarget(_Strict):
    type: Literal["webhook"]
    url: str
    timeout_s: float = 5.0


class EmailTarget(_Strict):
    type: Literal["email"]
    host: str
    port: int = 25
    sender: str
    recipients: list[str] = Field(min_length=1)
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    use_ssl: bool = False
    timeout_s: float = 10.0


Target = Annotated[WebhookTarget | EmailTarget, Field(discriminator="type")]


class _Rule(_Strict):
    name: str = Field(min_length=1)
    windows: int = Field(1, ge=1)
    of_last: int | None = Field(None, ge=1)
    cooldown_s: float = Field(0.0, ge=0)
    repeat_s: float | None = Field(None, gt=0)
    severity: Literal["info", "warning", "critical"] = "warning"
    notify: list[Target] = Field(default_factory=list)

    @model_validator(mode="after")
    def _window_counts(self) -> _Rule:
        if self.of_last is not None and self.of_last < self.windows:
            raise ValueError(f"of_last ({self.of_last}) must be at least windows ({self.windows})")
        return self

    @property
    def last(self) -> int:
        return self.of_last or self.windows


class DriftShareRule(_Rule):
    when: Literal["drift_share"]
    threshold: float = Field(gt=0, le=1)


class DatasetDriftRule(_Rule):
    when: Literal["dataset_drift"]
    rule: Literal["fdr", "share"] = "fdr"


class FeatureDriftRule(_Rule):
    when: Literal["feature_drift"]
    feature: str


class MultivariateDriftRule(_Rule):
    when: Literal["multivariate_drift"]


class QualityRule(_Rule):
    when: Literal["quality"]
    metric: str
    below: float


AlertRule = Annotated[
    DriftShareRule | DatasetDriftRule | FeatureDriftRule | MultivariateDriftRule | QualityRule,
    Field(discriminator="when"),
]
_RULES = TypeAdapter(list[AlertRule])


def parse_rules(raw: Sequence[Mapping[str, Any]]) -> list[AlertRule]:
    """Validate ``settings.monitoring.alerts`` into typed rules (ConfigError names the bad key)."""
    try:
        rules = _RULES.validate_python(list(raw))
    except ValidationError as exc:
        problems = "; ".join(f"alerts[{'.'.join(map(str, e['loc']))}]: {e['msg']}" for e in exc.errors())
        raise ConfigError(
            f"Invalid monitoring.alerts: {problems}. See mloop.monitoring.alerts for the schema."
        ) from None
    names = [r.name for r in rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"monitoring.alerts: rule names must be unique; repeated: {duplicates}.")
    return rules


EventRecorder = EventSink
"""Anything that records platform events: the store's one event protocol, :class:`mloop.store.EventSink`."""


@dataclass
class Alert:
    """One fired alert, as sent and recorded."""

    rule: str
    severity: str
    subject: str
    message: str
    fingerprint: str
    fired_at: float
    data: dict[str, Any] = field(default_factory=dict)
    delivered: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def fired_at_iso(self) -> str:
        return datetime.fromtimestamp(self.fired_at, UTC).isoformat(timespec="seconds")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fired_at_iso": self.fired_at_iso}


@dataclass
class _RuleState:
    history: list[bool] = field(default_factory=list)
    last_sent: float | None = None
    last_fingerprint: str | None = None
    active: bool = False


@dataclass
class AlertState:
    """What the engine remembers between windows; JSON-able so a cron-driven monitor can keep it."""

    rules: dict[str, _RuleState] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {name: asdict(s) for name, s in self.rules.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlertState:
        return cls(rules={name: _RuleState(**s) for name, s in data.items()})


def _condition(
    rule: AlertRule, report: DriftReport | None, quality: Mapping[str, float] | None
) -> tuple[bool, str, dict[str, Any]] | None:
    """(holds, message, facts) for one window, or None when the rule cannot be evaluated on it."""
    if isinstance(rule, QualityRule):
        if quality is None or rule.metric not in quality:
            return None
        value = float(quality[rule.metric])
        return (
            value < rule.below,
            f"{rule.metric} is {value:.4g}, below {rule.below:g}",
            {"metric": rule.metric, "value": value, "below": rule.below},
        )
    if report is None or report.n_tested == 0:
        return None
    facts: dict[str, Any] = {"drifted_columns": report.drifted_columns, "share_drifted": report.share_drifted}
    if isinstance(rule, DriftShareRule):
        return (
            report.share_drifted >= rule.threshold,
            f"{report.n_drifted} of {report.n_tested} columns drifted ({report.share_drifted:.0%}, "
            f"threshold {rule.threshold:.0%})",
            facts,
        )
    multi = report.multivariate
    if isinstance(rule, MultivariateDriftRule):
        if multi is None or multi.status != "ok" or multi.auc is None:
            return None
        facts = {"auc": multi.auc, "p_value": multi.p_value, "top_columns": multi.top_columns}
        return multi.drifted, f"multivariate drift: {multi.describe()}", facts
    if isinstance(rule, DatasetDriftRule):
        holds = report.dataset_drifted if rule.rule == "fdr" else report.share_rule_drifted
        message = f"dataset drift ({rule.rule}): columns {', '.join(report.drifted_columns) or '-'}"
        if rule.rule == "fdr" and multi is not None and multi.drifted:
            message += f"; multivariate {multi.describe()}"
        return holds, message, facts
    try:
        col = report.column(rule.feature)
    except KeyError:
        return None
    facts = {"feature": col.column, "test": col.test, "statistic": col.statistic, "threshold": col.threshold}
    stat = "-" if col.statistic is None else f"{col.statistic:.4g}"
    return col.drifted, f"feature {col.column!r} drifted ({col.test} {stat} vs {col.threshold})", facts


def _notifier(target: WebhookTarget | EmailTarget) -> Notifier:
    if isinstance(target, WebhookTarget):
        return WebhookNotifier(target.url, timeout_s=target.timeout_s)
    return EmailNotifier(
        target.host,
        target.port,
        target.sender,
        target.recipients,
        username=target.username,
        password=target.password,
        starttls=target.starttls,
        use_ssl=target.use_ssl,
        timeout_s=target.timeout_s,
    )


class AlertEngine:
    """Evaluates rules window by window; sends and records what fires (see the module docstring).

    ``notifiers`` maps rule names to extra notifiers (tests, custom channels) on top of each rule's
    ``notify`` targets.
    """

    def __init__(
        self,
        rules: Sequence[AlertRule | Mapping[str, Any]],
        *,
        recorder: EventRecorder | None = None,
        notifiers: Mapping[str, Sequence[Notifier]] | None = None,
        state: AlertState | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        typed = [r for r in rules if not isinstance(r, Mapping)]
        raw = [r for r in rules if isinstance(r, Mapping)]
        self.rules: list[AlertRule] = parse_rules([*(r.model_dump() for r in typed), *raw])
        self.recorder = recorder
        self.state = state or AlertState()
        self.clock = clock
        extra = notifiers or {}
        unknown = set(extra) - {r.name for r in self.rules}
        if unknown:
            raise MonitoringError(f"Notifiers given for unknown alert rules {sorted(unknown)}.")
        self._notifiers = {
            r.name: [*(_notifier(t) for t in r.notify), *extra.get(r.name, [])] for r in self.rules
        }

    def observe(
        self,
        report: DriftReport | None = None,
        *,
        quality: Mapping[str, float] | None = None,
        now: float | None = None,
    ) -> list[Alert]:
        """Feed one window; return the alerts that fired (already sent and recorded)."""
        now = self.clock() if now is None else now
        fired = []
        for rule in self.rules:
            outcome = _condition(rule, report, quality)
            if outcome is None:
                continue
            holds, message, facts = outcome
            st = self.state.rules.setdefault(rule.name, _RuleState())
            st.history = [*st.history, holds][-rule.last :]
            if sum(st.history) < rule.windows:
                st.active = False
                continue
            if not holds:
                continue  # the incident is still open (N of M), but this window adds nothing new
            alert = self._maybe_fire(rule, st, message, facts, now)
            if alert is not None:
                fired.append(alert)
        return fired

    def _maybe_fire(
        self, rule: AlertRule, st: _RuleState, message: str, facts: dict[str, Any], now: float
    ) -> Alert | None:
        fingerprint = hashlib.sha1(
            json.dumps(
                [rule.name, facts.get("drifted_columns"), facts.get("feature"), facts.get("metric")],
                default=str,
            ).encode()
        ).hexdigest()[:16]
        cooling = st.last_sent is not None and now - st.last_sent < rule.cooldown_s
        duplicate = (
            st.active
            and fingerprint == st.last_fingerprint
            and (rule.repeat_s is None or (st.last_sent is not None and now - st.last_sent < rule.repeat_s))
        )
        st.active = True
        if cooling or duplicate:
            return None
        if rule.windows > 1 or rule.last > 1:
            message = f"{message} [{sum(st.history)} of the last {len(st.history)} windows]"
        alert = Alert(
            rule=rule.name,
            severity=rule.severity,
            subject=getattr(rule, "feature", rule.name),
            message=message,
            fingerprint=fingerprint,
            fired_at=now,
            data=facts,
        )
        for notifier in self._notifiers[rule.name]:
            try:
                notifier.send(alert)
                alert.delivered.append(type(notifier).__name__)
            except MonitoringError as exc:
                log.warning("alert %s: %s", rule.name, exc)
                alert.errors.append(str(exc))
        st.last_sent, st.last_fingerprint = now, fingerprint
        if self.recorder is not None:
            self.recorder.record_event("alert", rule.name, message, data=alert.to_dict())
        return alert
