"""The audit timeline's one writer: every event, whoever records it, is checked here and then stored.

:func:`append_event` validates an event and inserts it on a connection the caller holds, so a state
change and its event commit in one transaction (the rollout and loop repositories); the store's
:meth:`~mloop.store.Store.record_event` wraps it in a transaction of its own. Nothing is shortened to
fit: a kind, subject or actor too long for its column is refused with a :class:`~mloop.errors.StoreError`
that says so. Capabilities that only record events depend on the :class:`EventSink` protocol.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import sqlalchemy as sa

from mloop.errors import StoreError
from mloop.store.jsonutil import to_jsonable
from mloop.store.schema import events as events_t

__all__ = ["ACTOR_MAX", "KIND_MAX", "SUBJECT_MAX", "Event", "EventSink", "append_event", "text_problem"]

KIND_MAX, SUBJECT_MAX, ACTOR_MAX = 100, 300, 200
"""Longest kind, subject and actor the events table holds (characters)."""
_KIND = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")


class EventSink(Protocol):
    """Anything that records events on the timeline (:class:`~mloop.store.Store` does).

    The registry records alias moves through it and monitoring its alerts, without importing the
    store's implementation; tests pass a list-backed double.
    """

    def record_event(
        self,
        kind: str,
        subject: str,
        reason: str,
        *,
        actor: str = "mloop",
        data: Mapping[str, Any] | None = None,
    ) -> Any: ...


@dataclass(frozen=True)
class Event:
    """One entry of the audit timeline: what happened (``kind``) to what (``subject``), by whom, why."""

    id: int
    ts: datetime
    kind: str
    subject: str
    actor: str
    reason: str
    data: dict[str, Any] = field(default_factory=dict, hash=False)


def unstorable(value: str) -> str | None:
    """Why no backend can store the string ``value`` (PostgreSQL refuses NUL in text and JSONB)."""
    if "\x00" in value:
        return "contains a NUL character (\\u0000), which the store cannot hold"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (it contains a lone surrogate)"
    return None


def text_problem(value: object, max_len: int) -> str | None:
    """Why ``value`` is not a storable non-empty string of at most ``max_len`` characters (None if it is)."""
    if not isinstance(value, str) or not value.strip():
        return f"must be a non-empty string, not only whitespace; got {value!r}"
    if len(value) > max_len:
        return f"must be at most {max_len} characters; got {len(value)}: {value[:40]!r}..."
    return unstorable(value)


def check_text(name: str, value: object, max_len: int) -> str:
    """``value`` if :func:`text_problem` finds nothing, else StoreError naming ``name``."""
    problem = text_problem(value, max_len)
    if problem is not None:
        raise StoreError(f"{name} {problem}.")
    assert isinstance(value, str)
    return value


def _row(kind: str, subject: str, reason: str, actor: str, data: Mapping[str, Any] | None) -> dict[str, Any]:
    check_text("Event kind", kind, KIND_MAX)
    if not _KIND.match(kind):
        raise StoreError(
            f"Event kind must be lowercase dotted words like 'gate.passed' or 'alias.moved'; got {kind!r}."
        )
    check_text("Event subject", subject, SUBJECT_MAX)
    check_text("Event actor", actor, ACTOR_MAX)
    if not isinstance(reason, str):
        raise StoreError(f"Event reason must be a string; got {type(reason).__name__}.")
    problem = unstorable(reason)
    if problem is not None:
        raise StoreError(f"Event reason {problem}.")
    try:
        payload = to_jsonable(dict(data or {}))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"Event data for {kind!r} must be JSON-serializable: {exc}.") from exc
    ts = datetime.now(UTC)
    return {"ts": ts, "kind": kind, "subject": subject, "actor": actor, "reason": reason, "data": payload}


def append_event(
    conn: sa.Connection,
    kind: str,
    subject: str,
    reason: str,
    *,
    actor: str = "mloop",
    data: Mapping[str, Any] | None = None,
) -> Event:
    """Validate an event and insert it on ``conn`` (inside the caller's write transaction)."""
    row = _row(kind, subject, reason, actor, data)
    new_id = conn.execute(sa.insert(events_t).values(**row).returning(events_t.c.id)).scalar_one()
    return Event(id=int(new_id), **row)
