"""Leases say since when their holder has held them, and carry a fencing token.

``acquired_at`` is when the current owner took the lease (a renewal keeps it); ``fence`` grows by one
each time the lease changes hands, so a leader elected through a lease can stamp its writes with the
token and a deposed one be told apart (cluster mode's single loop leader). Rows written before this
revision keep their owner: ``acquired_at`` stays unknown (NULL) and ``fence`` starts at 0.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("leases") as batch:
        batch.add_column(sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("fence", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("leases") as batch:
        batch.drop_column("fence")
        batch.drop_column("acquired_at")
