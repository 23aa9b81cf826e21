"""Initial store: events (audit timeline), feedback (delayed labels), leases (single-runner locks).

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types at this revision: later edits to schema.py must not change history.
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
        sa.Column("ts", _TS, nullable=False),
        sa.Column("kind", sa.String(100), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("data", _JSON, nullable=True),
    )
    op.create_index("ix_events_ts", "events", ["ts"])
    op.create_index("ix_events_kind_ts", "events", ["kind", "ts"])
    op.create_index("ix_events_subject_ts", "events", ["subject", "ts"])
    op.create_table(
        "feedback",
        sa.Column("prediction_id", sa.String(128), primary_key=True),
        sa.Column("label", _JSON, nullable=False),
        sa.Column("ts", _TS, nullable=False),
        sa.Column("model_name", sa.String(200), nullable=True),
    )
    op.create_index("ix_feedback_ts", "feedback", ["ts"])
    op.create_table(
        "leases",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_index("ix_feedback_ts", table_name="feedback")
    op.drop_table("feedback")
    op.drop_index("ix_events_subject_ts", table_name="events")
    op.drop_index("ix_events_kind_ts", table_name="events")
    op.drop_index("ix_events_ts", table_name="events")
    op.drop_table("events")
