"""Pages of the audit timeline, filtered and paginated in SQL (the console's timeline).

A page is the newest events older than a cursor (keyset pagination on the primary key, which grows
with every insert): the database walks an index and stops after ``limit`` rows, so the 500th page of
a 100k-event timeline costs what the first does. ``OFFSET`` would read every skipped row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from mloop.errors import StoreError
from mloop.store.events import Event
from mloop.store.schema import events as events_t
from mloop.store.schema import rollouts as rollouts_t
from mloop.store.store import Store

__all__ = ["MAX_PAGE", "EventPage", "event_kinds", "event_page"]

MAX_PAGE = 500
"""Most events one page holds."""


@dataclass(frozen=True)
class EventPage:
    """Events newest first, and the cursor of the next (older) page, None on the last page."""

    events: list[Event]
    next_before: int | None


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _model_filter(model: str) -> sa.ColumnElement[bool]:
    """Events about ``model``: subjects ``model:<name>`` and ``model:<name>/...``, and the events of
    its rollouts (subject ``rollout:<id>``)."""
    rollout_subjects = sa.select(sa.literal("rollout:") + sa.cast(rollouts_t.c.id, sa.String)).where(
        rollouts_t.c.model_name == model
    )
    return (
        (events_t.c.subject == f"model:{model}")
        | events_t.c.subject.startswith(f"model:{model}/", autoescape=True)
        | events_t.c.subject.in_(rollout_subjects.scalar_subquery())
    )


def event_page(
    store: Store,
    *,
    kind: str | None = None,
    model: str | None = None,
    subject: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before: int | None = None,
    limit: int = 50,
    exclude_kinds: tuple[str, ...] = (),
) -> EventPage:
    """One page of events, newest first. ``kind="rollout"`` matches ``rollout`` and ``rollout.*``;
    ``subject`` is exact; ``before`` is the cursor a previous page returned; ``exclude_kinds`` drops
    exact kinds."""
    if not 1 <= limit <= MAX_PAGE:
        raise StoreError(f"A page holds 1 to {MAX_PAGE} events; got limit={limit}.")
    query = sa.select(events_t)
    if kind:
        prefix = kind.rstrip(".")
        query = query.where(
            (events_t.c.kind == prefix) | events_t.c.kind.startswith(prefix + ".", autoescape=True)
        )
    if exclude_kinds:
        query = query.where(events_t.c.kind.not_in(exclude_kinds))
    if model:
        query = query.where(_model_filter(model))
    if subject:
        query = query.where(events_t.c.subject == subject)
    if since is not None:
        query = query.where(events_t.c.ts >= _utc(since))
    if until is not None:
        query = query.where(events_t.c.ts < _utc(until))
    if before is not None:
        query = query.where(events_t.c.id < int(before))
    query = query.order_by(events_t.c.id.desc()).limit(limit + 1)
    with store.read("read a page of events") as conn:
        rows = conn.execute(query).mappings().all()
    events = [Event(**{**row, "data": row["data"] or {}}) for row in rows[:limit]]
    more = len(rows) > limit
    return EventPage(events, events[-1].id if more and events else None)


def event_kinds(store: Store) -> list[str]:
    """Every distinct event kind on the timeline (the console's kind filter), sorted."""
    with store.read("read event kinds") as conn:
        return sorted(conn.execute(sa.select(events_t.c.kind).distinct()).scalars())
