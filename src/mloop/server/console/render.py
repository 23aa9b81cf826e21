"""Jinja filters of the console's pages: times, numbers, durations, and links to an event's subject."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

__all__ = ["fmt_duration", "fmt_num", "fmt_time", "subject_link"]


def fmt_time(value: Any) -> str:
    if not value:
        return "—"
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    return str(value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))


def fmt_num(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        return f"{value:.4g}"
    return str(value)


def fmt_duration(seconds: Any) -> str:
    s = int(seconds or 0)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    parts = [f"{days}d"] * bool(days) + [f"{hours}h"] * bool(hours) + [f"{minutes}m"] * bool(minutes)
    return " ".join([*parts, f"{s}s"]) if not days else " ".join(parts)


def subject_link(subject: str, model: str) -> str | None:
    """The console page of an event's subject (a model version, a rollout, a cycle)."""
    prefix = f"model:{model}/v"
    if subject.startswith(prefix) and subject[len(prefix) :].isdigit():
        return f"models/{subject[len(prefix) :]}"
    if subject.startswith(("rollout:", f"model:{model}/cycle-")):
        return "timeline?" + urlencode({"subject": subject})
    return None
