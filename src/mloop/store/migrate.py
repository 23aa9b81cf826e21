"""Programmatic Alembic: upgrade the store to head, read its revision, write new revisions.

The migrations ship inside the package (``mloop/store/migrations``), so an installed mloop can
migrate any store without an ``alembic.ini``. Callers pass an open connection inside the transaction
that holds the cross-process lock; ``env.py`` runs the migrations on that same connection.
"""

from __future__ import annotations

from importlib import resources

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

__all__ = ["alembic_config", "current_revision", "head_revision", "revision", "upgrade"]


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at the migrations shipped with mloop."""
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("mloop.store") / "migrations"))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The revision the code expects (the single head of the chain)."""
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"mloop's store migrations must have one head; found {sorted(heads)}.")
    return heads[0]


def current_revision(connection: sa.Connection) -> str | None:
    """The revision the database is at (None for an empty database)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: sa.Connection, target: str = "head") -> None:
    """Run every pending migration on ``connection`` (inside the caller's transaction)."""
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, target)


def revision(message: str, *, url: str, autogenerate: bool = True) -> None:
    """Write a new revision file comparing ``schema.py`` with a scratch store at head (developers)."""
    from mloop.store.factory import open_store

    with open_store(url) as store, store.engine.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.revision(cfg, message=message, autogenerate=autogenerate)
