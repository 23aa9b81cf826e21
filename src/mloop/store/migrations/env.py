"""Alembic environment of the platform store.

mloop runs migrations programmatically (:func:`mloop.store.migrate.upgrade`): the caller opens the
connection, takes the cross-process lock and passes the connection in ``config.attributes``, so this
file never creates an engine of its own in online mode. Offline mode (``--sql``) renders SQL for the
URL in the config, for DBAs who apply migrations by hand.
"""

from __future__ import annotations

from alembic import context

from mloop.store.schema import metadata

config = context.config
target_metadata = metadata


def run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "mloop's store migrations run through mloop.store.migrate.upgrade(), which passes the "
            "connection; use `mloop.store.open_store(url)` instead of the alembic command."
        )
    # SQLite cannot ALTER most things in place; batch mode copies the table for it.
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
