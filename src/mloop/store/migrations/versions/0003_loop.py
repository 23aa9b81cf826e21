"""The closed loop: one row per retraining cycle (a persisted state machine) and a small key/value
table for the loop's own bookkeeping (last source fingerprint, last schedule check).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "loop_cycles",
        sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("trigger_kind", sa.String(40), nullable=False),
        sa.Column("trigger_key", sa.String(300), nullable=False),
        sa.Column("state", sa.String(30), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("version", sa.String(50), nullable=True),
        sa.Column("rollout_id", _BIGID, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("data", _JSON, nullable=True),
        sa.UniqueConstraint("model_name", "trigger_key", name="uq_loop_cycles_trigger"),
    )
    op.create_index("ix_loop_cycles_model_state", "loop_cycles", ["model_name", "state"])
    op.create_table(
        "loop_state",
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("value", _JSON, nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("loop_state")
    op.drop_index("ix_loop_cycles_model_state", table_name="loop_cycles")
    op.drop_table("loop_cycles")
