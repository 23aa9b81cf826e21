"""What starts a retraining cycle: a cron schedule, a monitoring alert, or new data at the source.

Each trigger has a **key** that is unique for the occurrence that caused it (the scheduled instant,
the alert's event id, the source's fingerprint). The controller creates at most one cycle per key, in
one transaction, which is how a restarted loop never trains twice for the same trigger.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mloop.config import Settings
from mloop.errors import ConfigError

__all__ = ["Trigger", "next_schedule_time", "schedule_trigger", "source_fingerprint"]


@dataclass(frozen=True)
class Trigger:
    """One reason to retrain."""

    kind: str  # schedule | drift | quality | new_data | manual
    key: str
    reason: str
    data: dict[str, Any] = field(default_factory=dict)
    state: dict[str, str] = field(default_factory=dict)
    """Loop state to save once the cycle exists (the schedule's last check, the source fingerprint):
    saved any earlier, a crash in between would lose the trigger; saved after, a restart sees the
    same trigger again and its key finds the cycle already made."""


def next_schedule_time(cron: str, after: datetime) -> datetime:
    """The first instant of ``cron`` strictly after ``after`` (UTC)."""
    from croniter import croniter

    try:
        it = croniter(cron, after.astimezone(UTC))
    except (ValueError, KeyError) as exc:
        raise ConfigError(
            f"control.schedule {cron!r} is not a valid cron expression ({exc}); "
            "e.g. '0 3 * * *' for 03:00 daily."
        ) from exc
    nxt: datetime = it.get_next(datetime)
    return nxt if nxt.tzinfo else nxt.replace(tzinfo=UTC)


def schedule_trigger(cron: str, *, since: datetime, now: datetime) -> Trigger | None:
    """A trigger if a scheduled instant fell in ``(since, now]``; its key is that instant."""
    due = next_schedule_time(cron, since)
    if due > now:
        return None
    # Catch up to the latest due instant only: a loop down for a week retrains once, not seven times.
    while True:
        following = next_schedule_time(cron, due)
        if following > now:
            break
        due = following
    return Trigger(
        "schedule",
        f"schedule:{due.isoformat()}",
        f"scheduled retraining ({cron}) due at {due:%Y-%m-%d %H:%M} UTC",
    )


def source_fingerprint(settings: Settings) -> str | None:
    """A fingerprint that changes when the source has new data; None if it cannot be taken.

    Files: size and modification time. SQL: row count and the newest value of ``split.time_column``
    if set. HTTP and synthetic sources are not watched (a fetch per check is not cheap or not meaningful).
    """
    uri = settings.source.uri
    if "://" not in uri or uri.startswith("file://"):
        path = settings.resolve_path(uri.removeprefix("file://"))
        try:
            st = os.stat(path)
        except OSError:
            return None
        return f"file:{Path(path).name}:{st.st_size}:{st.st_mtime_ns}"
    if settings.source.query and not uri.startswith(("http://", "https://", "synthetic://")):
        import sqlalchemy as sa

        url = (
            uri.replace("postgresql://", "postgresql+psycopg://", 1)
            if uri.startswith("postgresql://")
            else uri
        )
        newest = f", max({settings.split.time_column})" if settings.split.time_column else ""
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                row = conn.execute(
                    sa.text(f"select count(*){newest} from ({settings.source.query}) as q")
                ).one()
        except sa.exc.SQLAlchemyError:
            return None
        finally:
            engine.dispose()
        digest = hashlib.sha256(settings.source.query.encode()).hexdigest()[:8]
        return f"sql:{digest}:" + ":".join(str(v) for v in row)
    return None
