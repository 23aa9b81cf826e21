"""What starts a retraining cycle: a cron schedule, a monitoring alert, quality estimated below a
threshold before labels arrive, or new data at the source.

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

__all__ = [
    "Trigger",
    "estimated_quality_trigger",
    "next_schedule_time",
    "schedule_trigger",
    "source_fingerprint",
]


@dataclass(frozen=True)
class Trigger:
    """One reason to retrain."""

    kind: str  # schedule | drift | quality | estimated_quality | new_data | manual
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


def estimated_quality_trigger(settings: Settings, result: Any) -> Trigger | None:
    """A trigger when a monitoring window's estimated gate metric is worse than
    ``control.retrain_on_estimated_quality`` with its whole interval (one noisy window does not
    retrain); its key is the model version, so one served version triggers at most one retrain."""
    from mloop.training.metrics import LOWER_IS_BETTER

    threshold = settings.control.retrain_on_estimated_quality
    est = getattr(result, "estimated", None)
    ref = getattr(result, "reference", None)
    if threshold is None or est is None or est.status != "ok":
        return None
    metric = getattr(ref, "metric", None) or settings.tuning.metric
    if metric not in est.metrics:
        return None  # e.g. pr_auc or log_loss, which are not estimated
    value, lower, upper = est.metrics[metric], est.lower.get(metric), est.upper.get(metric)
    if lower is None or upper is None:
        return None
    lower_is_better = metric in LOWER_IS_BETTER
    if (lower <= threshold) if lower_is_better else (upper >= threshold):
        return None
    side = "above" if lower_is_better else "below"
    return Trigger(
        "estimated_quality",
        f"estimated_quality:{result.model}/v{result.version}",
        f"estimated {metric} of v{result.version} is {value:.4g} (interval {lower:.4g} to {upper:.4g}, "
        f"{est.rows} predictions, no labels needed), {side} control.retrain_on_estimated_quality="
        f"{threshold:g}",
        {
            "metric": metric,
            "estimate": value,
            "lower": lower,
            "upper": upper,
            "threshold": threshold,
            "rows": est.rows,
        },
    )
