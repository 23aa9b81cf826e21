"""Open the store for a URL: the one place that maps URL schemes to store classes."""

from __future__ import annotations

import sqlalchemy as sa

from mloop.errors import StoreError, did_you_mean
from mloop.store.postgres import PostgresStore
from mloop.store.sqlite import SQLiteStore
from mloop.store.store import Store

__all__ = ["SUPPORTED_SCHEMES", "open_store"]

SUPPORTED_SCHEMES: dict[str, type[Store]] = {
    "sqlite": SQLiteStore,
    "postgresql": PostgresStore,
    "postgresql+psycopg": PostgresStore,
}


def open_store(url: str) -> Store:
    """Open (and migrate to head) the store at ``url``.

    ``sqlite:////abs/path/mloop.db`` (the default, ``settings.store_url``), ``sqlite://`` in memory, or
    ``postgresql+psycopg://user:pass@host/db`` (``postgresql://`` uses psycopg too).
    """
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError, TypeError) as exc:
        raise StoreError(
            f"store.url {url!r} is not a database URL; expected e.g. 'sqlite:////abs/.mloop/mloop.db' or "
            "'postgresql+psycopg://user@host/db'."
        ) from exc
    cls = SUPPORTED_SCHEMES.get(parsed.drivername)
    if cls is None:
        hint = did_you_mean(parsed.drivername, SUPPORTED_SCHEMES)
        raise StoreError(
            f"store.url uses the scheme {parsed.drivername!r}, which the store does not support; "
            f"supported: {', '.join(sorted(SUPPORTED_SCHEMES))}.{hint}"
        )
    return cls(parsed)
