"""What starts a retraining cycle, and what holds one back.

:class:`TriggerWatch` checks the triggers the loop is configured for (schedule, new data at the
source, drift or quality alerts from monitoring, quality estimated before labels arrive) and the
guardrails that keep it from retraining too often (the retrain budget per period, exponential
backoff after failed trainings).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from mloop.config import Settings
from mloop.control.states import CycleState
from mloop.control.triggers import (
    Trigger,
    estimated_quality_trigger,
    schedule_trigger,
    source_fingerprint,
)
from mloop.store.loop import LoopRepository

__all__ = ["TriggerWatch"]


class TriggerWatch:
    """Triggers and guardrails of one model's loop (state in ``repo``'s key/value store)."""

    def __init__(
        self,
        settings: Settings,
        repo: LoopRepository,
        *,
        clock: Callable[[], datetime],
        monitor: Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.model.name
        self.repo = repo
        self.clock = clock
        self.monitor = monitor
        self._last_monitor = 0.0

    def blocked(self) -> str | None:
        """Why no cycle may start now (retrain budget spent, backing off after failures), or None."""
        now = self.clock()
        c = self.settings.control
        recent = self.repo.cycles(self.name, since=now - timedelta(seconds=c.retrain_period_s), limit=1000)
        started = [x for x in recent if x.state != CycleState.DRY_RUN]
        if len(started) >= c.max_retrains:
            return (
                f"{len(started)} retrains in the last {c.retrain_period_s:.0f} s "
                f"(control.max_retrains={c.max_retrains})"
            )
        failures = 0
        for x in self.repo.cycles(self.name, limit=20):
            if x.state != CycleState.FAILED:
                break
            failures += 1
        if failures:
            last = self.repo.cycles(self.name, limit=1)[0]
            wait = c.backoff_s * 2 ** (failures - 1)
            ready = last.updated_at + timedelta(seconds=wait)
            if now < ready:
                return (
                    f"{failures} failed training(s) in a row; backing off until "
                    f"{ready:%H:%M:%S} UTC ({wait:.0f} s)"
                )
        return None

    def check(self) -> Trigger | None:
        """The first trigger that fired: the schedule, new data at the source, then monitoring."""
        now = self.clock()
        c = self.settings.control
        if c.schedule:
            since = self.repo.get_state("schedule:last_check")
            since_dt = datetime.fromisoformat(since) if since else now
            trig = schedule_trigger(c.schedule, since=since_dt, now=now)
            if trig is not None:
                return replace(trig, state={"schedule:last_check": now.isoformat()})
            self.repo.set_state("schedule:last_check", now.isoformat())
        if c.watch_source:
            fingerprint = source_fingerprint(self.settings)
            seen = self.repo.get_state("source:fingerprint")
            if fingerprint is not None and fingerprint != seen:
                if seen is None:  # the first observation is the baseline, not news
                    self.repo.set_state("source:fingerprint", fingerprint)
                else:
                    return Trigger(
                        "new_data",
                        f"new_data:{fingerprint}",
                        f"new data at the source ({fingerprint})",
                        state={"source:fingerprint": fingerprint},
                    )
        wanted = c.retrain_on_drift or c.retrain_on_quality or c.retrain_on_estimated_quality is not None
        monitoring = wanted and self.monitor is not None
        if monitoring and time.monotonic() - self._last_monitor >= c.monitor_interval_s:
            assert self.monitor is not None
            self._last_monitor = time.monotonic()
            return self.monitor_trigger(self.monitor())
        return None

    def monitor_trigger(self, result: Any) -> Trigger | None:
        """A drift or quality alert fired by this monitoring cycle becomes a trigger (one per alert);
        else the window's estimated quality, if ``control.retrain_on_estimated_quality`` is set."""
        c = self.settings.control
        when = {
            str(r.get("name")): str(r.get("when"))
            for r in self.settings.monitoring.alerts
            if isinstance(r, dict)
        }
        for alert in getattr(result, "alerts", None) or []:
            kind = "quality" if when.get(alert.rule) == "quality" else "drift"
            if (kind == "drift" and c.retrain_on_drift) or (kind == "quality" and c.retrain_on_quality):
                return Trigger(
                    kind,
                    f"alert:{alert.rule}:{alert.fired_at_iso}",
                    f"{kind} alert {alert.rule!r}: {alert.message}",
                    {"alert": alert.to_dict()},
                )
        return estimated_quality_trigger(self.settings, result)
