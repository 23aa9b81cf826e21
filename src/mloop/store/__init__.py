"""The platform store: runtime state shared by every capability.

MLflow keeps runs and model versions; this store keeps what mloop itself decides and observes at
runtime: the audit timeline of events (gates, alias moves, rollouts, failures), delayed ground-truth
labels sent as feedback, and leases that let one replica of several run a singleton job. It is SQLite
by default (``settings.store_url``) and PostgreSQL when several processes or machines share it; both
sit behind :class:`Store` and pass the same contract tests. Opening a store migrates it to the head
of the Alembic chain shipped in ``mloop/store/migrations``.

    >>> from mloop.store import open_store
    >>> with open_store("sqlite://") as store:
    ...     event = store.record_event("gate.passed", "model:fraud/v3", "auc 0.91 >= 0.85")
    ...     [e.kind for e in store.events(kind="gate")]
    ['gate.passed']
"""

from mloop.store.factory import SUPPORTED_SCHEMES, open_store
from mloop.store.postgres import PostgresStore
from mloop.store.sqlite import SQLiteStore
from mloop.store.store import Event, Store

__all__ = ["SUPPORTED_SCHEMES", "Event", "PostgresStore", "SQLiteStore", "Store", "open_store"]
