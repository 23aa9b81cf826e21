"""SQL source: run ``source.query`` on a SQLAlchemy URL (SQLite, PostgreSQL, any installed dialect).

``postgresql://`` and ``postgres://`` URLs use the psycopg (v3) driver. A relative SQLite path is
resolved against the project directory, and a SQLite file that does not exist is an error rather than
a new empty database.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from mloop.errors import SourceError, did_you_mean

__all__ = ["describe_sql", "is_sql_url", "read_sql", "sql_url"]

_PG_ALIASES = {"postgresql", "postgres"}


def is_sql_url(uri: str) -> bool:
    """True when ``uri``'s scheme names an installed SQLAlchemy dialect."""
    try:
        url = make_url(uri)
    except (sa.exc.ArgumentError, ValueError):
        return False
    if url.get_backend_name() in _PG_ALIASES:
        return True
    try:
        url.get_dialect()
    except (sa.exc.NoSuchModuleError, ImportError):
        return False
    return True


def sql_url(uri: str, root: Path) -> URL:
    """The URL to connect to: psycopg for Postgres, SQLite paths made absolute against ``root``."""
    try:
        url = make_url(uri)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise SourceError(f"source.uri {uri!r} is not a valid database URL: {exc}.") from exc
    if url.drivername in _PG_ALIASES:
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        path = Path(url.database)
        if not path.is_absolute():
            url = url.set(database=str(root / path))
    return url


def _safe(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def describe_sql(uri: str, query: str | None, root: Path) -> str:
    """``sql:<backend>://host/db (query sha256:…)`` without user, password or connection options."""
    url = sql_url(uri, root)
    plain = URL.create(url.get_backend_name(), host=url.host, port=url.port, database=url.database)
    digest = hashlib.sha256((query or "").strip().encode("utf-8")).hexdigest()[:12]
    return f"sql:{plain.render_as_string(hide_password=True)} (query sha256:{digest})"


def read_sql(
    uri: str, query: str | None, options: Mapping[str, Any], *, root: Path, timeout_s: float
) -> pd.DataFrame:
    """Run ``query`` and return its rows; every failure is a :class:`SourceError` naming the database."""
    url = sql_url(uri, root)
    where = _safe(url)
    if not query or not query.strip():
        raise SourceError(
            f"source.uri is a database URL ({where}) but source.query is empty; set it in mloop.yaml, "
            "e.g. query: SELECT * FROM transactions."
        )
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        path = Path(url.database)
        if not path.is_file():
            names = [p.name for p in path.parent.iterdir()] if path.parent.is_dir() else []
            raise SourceError(
                f"SQLite database file not found: {path}.{did_you_mean(path.name, names)} "
                "Check source.uri (relative paths are resolved against the project directory)."
            )
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = max(1, int(timeout_s))
    try:
        engine = sa.create_engine(url, connect_args=connect_args)
    except (sa.exc.NoSuchModuleError, ImportError) as exc:
        extra = " Install it with: pip install 'mloop[postgres]'." if "postgres" in url.drivername else ""
        raise SourceError(f"No database driver for {url.drivername!r} ({where}): {exc}.{extra}") from exc
    except sa.exc.ArgumentError as exc:
        raise SourceError(f"Invalid database URL {where}: {exc}.") from exc
    try:
        try:
            conn = engine.connect()
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(
                f"Could not connect to the database {where}: {_reason(exc)}. Check that the server is "
                "running and that host, port, database and credentials in source.uri are right."
            ) from exc
        with conn:
            try:
                return pd.read_sql_query(query, conn, **dict(options))
            except TypeError as exc:
                raise SourceError(
                    f"source.options {dict(options)} are not accepted by the SQL reader: {exc}."
                ) from exc
            except (sa.exc.SQLAlchemyError, pd.errors.DatabaseError) as exc:
                # pandas re-wraps SQLAlchemy's error; chain and report the original.
                cause = exc.__cause__ if isinstance(exc.__cause__, sa.exc.SQLAlchemyError) else exc
                short = " ".join(query.split())[:200]
                raise SourceError(
                    f"The query failed on {where}: {_reason(cause)}. Query: {short!r}. "
                    "Fix source.query in mloop.yaml."
                ) from cause
    finally:
        engine.dispose()


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
