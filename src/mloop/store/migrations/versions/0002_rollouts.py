"""Rollouts: deployments (what serves per model), rollouts, their arms and per-process arm counters.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types at this revision: later edits to schema.py must not change history.
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("model_name", sa.String(200), primary_key=True),
        sa.Column("champion_version", sa.String(50), nullable=True),
        sa.Column("previous_version", sa.String(50), nullable=True),
        sa.Column("active_rollout_id", _BIGID, nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
    )
    op.create_table(
        "rollouts",
        sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("strategy", sa.String(20), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("baseline_version", sa.String(50), nullable=True),
        sa.Column("candidate_version", sa.String(50), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("step_started_at", _TS, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("ended_at", _TS, nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("config", _JSON, nullable=True),
        sa.Column("analysis", _JSON, nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
    )
    op.create_index("ix_rollouts_model_state", "rollouts", ["model_name", "state"])
    op.create_index("ix_rollouts_created_at", "rollouts", ["created_at"])
    op.create_table(
        "rollout_arms",
        sa.Column("rollout_id", _BIGID, sa.ForeignKey("rollouts.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("arm", sa.String(50), primary_key=True),
        sa.Column("version", sa.String(50), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("shadow", sa.Boolean(), nullable=False),
        sa.Column("share", sa.Float(), nullable=False),
    )
    op.create_table(
        "rollout_counters",
        sa.Column("rollout_id", _BIGID, sa.ForeignKey("rollouts.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("arm", sa.String(50), primary_key=True),
        sa.Column("process", sa.String(200), primary_key=True),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rollout_counters")
    op.drop_table("rollout_arms")
    op.drop_index("ix_rollouts_created_at", table_name="rollouts")
    op.drop_index("ix_rollouts_model_state", table_name="rollouts")
    op.drop_table("rollouts")
    op.drop_table("deployments")
