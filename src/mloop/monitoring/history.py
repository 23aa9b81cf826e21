"""Monitoring windows over time, kept in the platform store's event log (no table of their own).

Each cycle records one ``monitor.window`` event whose subject is ``model:<name>/v<version>`` and whose
data is the window's summary: when, how many rows, drift share, per-feature scores and verdicts,
prediction drift, the predictions' distribution (class shares or quantiles), live quality with the
number of labelled rows, the alerts that fired, and the alert engine's state after the window.
Reports plot "drift over time" and "quality over time" from these events, server gauges are refreshed
from the newest one, and the next cycle — in the server, in a cron-driven ``mloop monitor`` or in the
controller — resumes the alert state from it, so cooldowns and N-of-M rules hold across processes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

__all__ = [
    "WINDOW_EVENT",
    "WindowStore",
    "latest_window",
    "record_window",
    "subject_for",
    "window_history",
]

WINDOW_EVENT = "monitor.window"


class WindowStore(Protocol):
    """The two store calls the history needs (``mloop.store.Store`` has them)."""

    def record_event(
        self,
        kind: str,
        subject: str,
        reason: str,
        *,
        actor: str = "mloop",
        data: Mapping[str, Any] | None = None,
    ) -> Any: ...

    def events(
        self,
        *,
        kind: str | None = None,
        subject: str | None = None,
        since: datetime | None = None,
        limit: int | None = 100,
    ) -> list[Any]: ...


def subject_for(model: str, version: str | int) -> str:
    return f"model:{model}/v{version}"


def record_window(store: WindowStore, summary: Mapping[str, Any], *, actor: str = "mloop") -> Any:
    """Append one window's summary; the reason is a one-line digest for the timeline."""
    drift = summary.get("drift") or {}
    quality = summary.get("quality") or {}
    reason = (
        f"{summary.get('rows', 0)} rows; {drift.get('n_drifted', 0)}/{drift.get('n_tested', 0)} features "
        f"drifted; {quality.get('labelled_rows', 0)} labelled"
    )
    fired = summary.get("alerts") or []
    if fired:
        reason += f"; alerts: {', '.join(a['rule'] for a in fired)}"
    return store.record_event(
        WINDOW_EVENT,
        subject_for(summary["model"], summary["version"]),
        reason,
        actor=actor,
        data=dict(summary),
    )


def window_history(
    store: WindowStore, model: str, version: str | int, *, limit: int = 200
) -> list[dict[str, Any]]:
    """Summaries of the version's past windows, oldest first (at most ``limit``)."""
    events = store.events(kind=WINDOW_EVENT, subject=subject_for(model, version), limit=limit)
    out = []
    for event in reversed(events):
        data = dict(event.data or {})
        data.setdefault("ts", _iso(event.ts))
        out.append(data)
    return out


def latest_window(store: WindowStore, model: str, version: str | int) -> dict[str, Any] | None:
    """The newest window summary of a version, or None."""
    found = window_history(store, model, version, limit=1)
    return found[-1] if found else None


def _iso(ts: datetime) -> str:
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts
    return ts.isoformat(timespec="seconds")
