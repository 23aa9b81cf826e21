"""The platform store: runtime state shared by every capability.

MLflow keeps runs and model versions; this store keeps what mloop itself decides and observes at
runtime: the audit timeline of events (gates, alias moves, rollouts, failures), delayed ground-truth
labels sent as feedback, rollouts and loop cycles as persisted state machines, and leases that let one
process of several do a piece of work. It is SQLite by default (``settings.store_url``) and PostgreSQL
when several processes or machines share it; both sit behind :class:`Store` and pass the same
contract tests. Opening a store migrates it to the head of the Alembic chain shipped in
``mloop/store/migrations``.

The public API: ``store.read()`` / ``store.write()`` transactions, :meth:`Store.record_event` (and
:func:`append_event` inside a transaction) as the one validated event writer, ``store.leases``
(:class:`Leases`), the repositories :class:`~mloop.store.rollouts.RolloutStore` and
:class:`~mloop.store.loop.LoopRepository` (each moved only along the :class:`StateMachine` it is
given). Nothing outside this package touches its tables.

    >>> from mloop.store import open_store
    >>> with open_store("sqlite://") as store:
    ...     event = store.record_event("gate.passed", "model:fraud/v3", "auc 0.91 >= 0.85")
    ...     [e.kind for e in store.events(kind="gate")]
    ['gate.passed']
"""

from mloop.store.events import Event, EventSink, append_event
from mloop.store.factory import SUPPORTED_SCHEMES, open_store
from mloop.store.leases import Fence, Lease, Leases, owner_alive, pid_alive, process_token
from mloop.store.machine import StateMachine
from mloop.store.postgres import PostgresStore
from mloop.store.sqlite import SQLiteStore
from mloop.store.store import Store

__all__ = [
    "SUPPORTED_SCHEMES",
    "Event",
    "EventSink",
    "Fence",
    "Lease",
    "Leases",
    "PostgresStore",
    "SQLiteStore",
    "StateMachine",
    "Store",
    "append_event",
    "open_store",
    "owner_alive",
    "pid_alive",
    "process_token",
]
