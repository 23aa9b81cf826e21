"""Tables of the platform store, as SQLAlchemy Core metadata.

This metadata describes the *current head* of the migration chain in ``migrations/versions``; the
migrations, not ``create_all``, create and change the tables. A change here needs a new revision there
(the store's contract tests compare the two).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

__all__ = [
    "JSONType",
    "UTCDateTime",
    "deployments",
    "events",
    "feedback",
    "leases",
    "loop_cycles",
    "loop_state",
    "metadata",
    "rollout_arms",
    "rollout_counters",
    "rollouts",
]


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every dialect.

    SQLite has no timezone type, so values are stored as naive UTC and made aware again on load;
    naive values passed in are taken to be UTC already.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if not isinstance(value, datetime):
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
# SQLite only autoincrements INTEGER PRIMARY KEY, not BIGINT.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData()

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("ts", UTCDateTime(), nullable=False),
    sa.Column("kind", sa.String(100), nullable=False),
    sa.Column("subject", sa.String(300), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("data", JSONType, nullable=True),
    sa.Index("ix_events_ts", "ts"),
    sa.Index("ix_events_kind_ts", "kind", "ts"),
    sa.Index("ix_events_subject_ts", "subject", "ts"),
)

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("prediction_id", sa.String(128), primary_key=True),
    sa.Column("label", JSONType, nullable=False),
    sa.Column("ts", UTCDateTime(), nullable=False),
    sa.Column("model_name", sa.String(200), nullable=True),
    sa.Index("ix_feedback_ts", "ts"),
)

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    # revision 0004: since when the owner holds it, and a fencing token that grows on every handover
    sa.Column("acquired_at", UTCDateTime(), nullable=True),
    sa.Column("fence", sa.BigInteger(), nullable=False, server_default="0"),
)

# -- rollouts (revision 0002) -------------------------------------------------------------------
deployments = sa.Table(
    "deployments",
    metadata,
    sa.Column("model_name", sa.String(200), primary_key=True),
    sa.Column("champion_version", sa.String(50), nullable=True),
    sa.Column("previous_version", sa.String(50), nullable=True),
    sa.Column("active_rollout_id", BigId, nullable=True),
    sa.Column("revision", sa.Integer(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

rollouts = sa.Table(
    "rollouts",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("strategy", sa.String(20), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("baseline_version", sa.String(50), nullable=True),
    sa.Column("candidate_version", sa.String(50), nullable=False),
    sa.Column("step", sa.Integer(), nullable=False),
    sa.Column("step_started_at", UTCDateTime(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("ended_at", UTCDateTime(), nullable=True),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("config", JSONType, nullable=True),
    sa.Column("analysis", JSONType, nullable=True),
    sa.Column("revision", sa.Integer(), nullable=False),
    sa.Index("ix_rollouts_model_state", "model_name", "state"),
    sa.Index("ix_rollouts_created_at", "created_at"),
)

rollout_arms = sa.Table(
    "rollout_arms",
    metadata,
    sa.Column("rollout_id", BigId, sa.ForeignKey("rollouts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("arm", sa.String(50), primary_key=True),
    sa.Column("version", sa.String(50), nullable=False),
    sa.Column("weight", sa.Float(), nullable=False),
    sa.Column("shadow", sa.Boolean(), nullable=False),
    sa.Column("share", sa.Float(), nullable=False),
)

rollout_counters = sa.Table(
    "rollout_counters",
    metadata,
    sa.Column("rollout_id", BigId, sa.ForeignKey("rollouts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("arm", sa.String(50), primary_key=True),
    sa.Column("process", sa.String(200), primary_key=True),
    sa.Column("requests", sa.BigInteger(), nullable=False),
    sa.Column("errors", sa.BigInteger(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# -- the closed loop (revision 0003) ------------------------------------------------------------
loop_cycles = sa.Table(
    "loop_cycles",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("trigger_kind", sa.String(40), nullable=False),
    sa.Column("trigger_key", sa.String(300), nullable=False),
    sa.Column("state", sa.String(30), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("version", sa.String(50), nullable=True),
    sa.Column("rollout_id", BigId, nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("pid", sa.Integer(), nullable=True),
    sa.Column("revision", sa.Integer(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("data", JSONType, nullable=True),
    sa.UniqueConstraint("model_name", "trigger_key", name="uq_loop_cycles_trigger"),
    sa.Index("ix_loop_cycles_model_state", "model_name", "state"),
)

loop_state = sa.Table(
    "loop_state",
    metadata,
    sa.Column("key", sa.String(300), primary_key=True),
    sa.Column("value", JSONType, nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)
