"""PostgreSQL backend of the store, for state shared by several processes or machines.

``postgresql://`` URLs are mapped to the psycopg 3 driver. The first open of a fresh database takes a
transaction-level advisory lock keyed on the current schema, so concurrent openers queue and the
later ones find the schema already at head.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from mloop.store.jsonutil import dumps
from mloop.store.store import Store

__all__ = ["PostgresStore"]


class PostgresStore(Store):
    """The store in PostgreSQL (``postgresql+psycopg://user@host/db``)."""

    def _make_engine(self, url: sa.URL) -> sa.Engine:
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        return sa.create_engine(url, pool_pre_ping=True, json_serializer=dumps)

    @contextmanager
    def _migration_lock(self, conn: sa.Connection) -> Iterator[None]:
        # Released by the commit or rollback of the migration transaction, even if this process dies.
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtext('mloop.store.migrate:' || current_schema()))")
        )
        yield

    def _insert(self, table: sa.Table) -> Any:
        return pg_insert(table)
