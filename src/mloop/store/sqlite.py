"""SQLite backend of the store: one file, WAL journal, busy timeout, serialized first migration.

pysqlite's own transaction handling neither wraps DDL nor lets us choose the lock mode, so the
engine turns it off and emits ``BEGIN`` itself: ``BEGIN IMMEDIATE`` for writes and migrations, which
takes the write lock up front and so waits (busy timeout) instead of failing half-way when another
process writes; plain ``BEGIN`` for reads, which WAL lets run beside a writer.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.pool import StaticPool

from mloop.store.jsonutil import dumps
from mloop.store.store import WRITE_OPTION, Store

__all__ = ["BUSY_TIMEOUT_S", "SQLiteStore"]

BUSY_TIMEOUT_S = 30.0
"""How long a writer waits for another process's write lock before giving up."""


def _enable_wal(cursor: Any) -> None:
    """Switch the file to WAL (persistent, so usually a no-op read). Two processes opening a fresh file
    at once race for the exclusive lock this needs, and SQLite answers the loser "database is locked"
    at once, without its busy handler: retry with backoff for up to ``BUSY_TIMEOUT_S``."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)


class SQLiteStore(Store):
    """The store in a SQLite file (``sqlite:////abs/path/mloop.db``) or in memory (``sqlite://``)."""

    def _make_engine(self, url: sa.URL) -> sa.Engine:
        memory = url.database in (None, "", ":memory:")
        kwargs: dict[str, Any] = {
            "connect_args": {"timeout": BUSY_TIMEOUT_S, "check_same_thread": False},
            "json_serializer": dumps,
        }
        if memory:
            # One shared connection, otherwise every pooled connection sees its own empty database.
            kwargs["poolclass"] = StaticPool
        else:
            Path(str(url.database)).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, **kwargs)

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            try:
                cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
                if not memory:
                    _enable_wal(cursor)
                    # WAL + NORMAL is durable against process crashes, which is what a store needs.
                    cursor.execute("PRAGMA synchronous=NORMAL")
            finally:
                cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            write = conn.get_execution_options().get(WRITE_OPTION, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine

    @contextmanager
    def _migration_lock(self, conn: sa.Connection) -> Iterator[None]:
        # The transaction was opened with BEGIN IMMEDIATE: it already holds the database write lock.
        yield

    def _insert(self, table: sa.Table) -> Any:
        return sqlite_insert(table)
