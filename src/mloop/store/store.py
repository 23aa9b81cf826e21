"""The platform store: events, feedback and leases over SQLAlchemy, one class per dialect.

:class:`Store` holds every query; a dialect subclass supplies only the engine, the cross-process lock
taken around migrations and the dialect's ``INSERT`` (for upserts). SQLAlchemy failures leave this
module as :class:`~mloop.errors.StoreError` with the cause chained.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import pandas as pd
import sqlalchemy as sa

from mloop.errors import StoreError
from mloop.store import migrate
from mloop.store.events import Event, append_event, text_problem, unstorable
from mloop.store.jsonutil import to_jsonable
from mloop.store.leases import Leases
from mloop.store.schema import events as events_t
from mloop.store.schema import feedback as feedback_t

__all__ = ["PREDICTION_ID_MAX", "WRITE_OPTION", "Event", "Store", "feedback_problem"]

WRITE_OPTION = "mloop_write"
"""Execution option marking a connection whose transactions write (SQLite begins them IMMEDIATE)."""

_CHUNK = 500

PREDICTION_ID_MAX = 128
"""Longest prediction id the feedback table holds (characters)."""


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _label_problem(value: Any) -> str | None:
    if isinstance(value, str):
        return unstorable(value)
    if isinstance(value, dict):
        for k, v in value.items():
            problem = _label_problem(str(k)) or _label_problem(v)
            if problem is not None:
                return problem
    if isinstance(value, list):
        for v in value:
            problem = _label_problem(v)
            if problem is not None:
                return problem
    return None


def feedback_problem(prediction_id: object, label: Any) -> tuple[str, str] | None:
    """Why ``(prediction_id, label)`` cannot be stored as feedback, as ``(field, problem)``; None when
    it can. Every backend applies the same rules, so a label SQLite accepts is one PostgreSQL accepts:
    the id is a string of 1 to :data:`PREDICTION_ID_MAX` characters that is not only whitespace, and
    no string in either contains NUL or a lone surrogate. Valid ids are stored verbatim.
    """
    problem = text_problem(prediction_id, PREDICTION_ID_MAX)
    if problem is not None:
        return "prediction_id", problem
    if label is None:
        return "label", "has no label; send the observed value"
    try:
        problem = _label_problem(to_jsonable(label))
    except TypeError as exc:
        return "label", f"has a label that is not a number, string or list: {exc}"
    return None if problem is None else ("label", f"has a label that {problem}")


class Store(ABC):
    """Runtime state shared by every capability. Open it with :func:`mloop.store.open_store`.

    Opening migrates the schema to head. The store is thread-safe (one engine, a connection pool) and
    is a context manager that closes its connections on exit.
    """

    def __init__(self, url: str | sa.URL) -> None:
        parsed = sa.engine.make_url(url)
        self._safe_url = parsed.render_as_string(hide_password=True)
        self._engine = self._make_engine(parsed)
        self._leases = Leases(self)
        try:
            self._upgrade()
        except BaseException:
            self._engine.dispose()
            raise

    # -- backend hooks -------------------------------------------------------------------------
    @abstractmethod
    def _make_engine(self, url: sa.URL) -> sa.Engine:
        """The engine for ``url``, with the dialect's connection settings."""

    @abstractmethod
    def _migration_lock(self, conn: sa.Connection) -> AbstractContextManager[None]:
        """Hold a cross-process lock for the rest of ``conn``'s current transaction."""

    @abstractmethod
    def _insert(self, table: sa.Table) -> Any:
        """The dialect's ``INSERT`` construct (it has ``on_conflict_do_update``)."""

    # -- plumbing ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The store's URL with any password hidden."""
        return self._safe_url

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (for other capabilities' tables added by later migrations)."""
        return self._engine

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except sa.exc.OperationalError as exc:
            raise StoreError(
                f"The store at {self._safe_url} could not {action}: {exc.orig or exc}. Check that the "
                "database is reachable and writable, and that store.url in mloop.yaml is right."
            ) from exc
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"The store at {self._safe_url} could not {action}: {exc}") from exc

    @contextmanager
    def write(self, action: str = "write") -> Iterator[sa.Connection]:
        """A write transaction: commits when the block ends, rolls back if it raises.

        SQLite takes its write lock up front (``BEGIN IMMEDIATE``), so concurrent writers queue
        instead of failing half-way. ``action`` words the error if the database fails
        ("could not <action>")."""
        with self._errors(action), self._engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                yield conn

    @contextmanager
    def read(self, action: str = "read") -> Iterator[sa.Connection]:
        """A read transaction (a consistent snapshot on both backends)."""
        with self._errors(action), self._engine.connect() as conn, conn.begin():
            yield conn

    def insert(self, table: sa.Table) -> Any:
        """The dialect's ``INSERT`` for ``table``, with ``on_conflict_do_update``/``_do_nothing``."""
        return self._insert(table)

    @property
    def leases(self) -> Leases:
        """The store's leases (acquire, renew, release, holder, alive, hold)."""
        return self._leases

    def _upgrade(self) -> None:
        with self.write("migrate its schema to the current version") as conn, self._migration_lock(conn):
            if migrate.current_revision(conn) != migrate.head_revision():
                migrate.upgrade(conn)

    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at."""
        with self.read("read its schema revision") as conn:
            return migrate.current_revision(conn)

    def close(self) -> None:
        """Close every pooled connection; the store must not be used afterwards."""
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._safe_url!r})"

    # -- events --------------------------------------------------------------------------------
    def record_event(
        self,
        kind: str,
        subject: str,
        reason: str,
        *,
        actor: str = "mloop",
        data: Mapping[str, Any] | None = None,
    ) -> Event:
        """Append an event to the timeline and return it.

        E.g. ``record_event("gate.passed", "model:fraud/v3", "auc 0.91")``. ``kind`` is lowercase
        dotted words; ``data`` must be JSON-serializable (numpy values are fine).
        """
        with self.write(f"record event {kind!r}") as conn:
            return append_event(conn, kind, subject, reason, actor=actor, data=data)

    def events(
        self,
        *,
        kind: str | None = None,
        subject: str | None = None,
        since: datetime | None = None,
        limit: int | None = 100,
    ) -> list[Event]:
        """Events newest first. ``kind="gate"`` matches ``gate`` and every ``gate.*`` kind."""
        query = sa.select(events_t)
        if kind is not None:
            prefix = kind.rstrip(".")
            query = query.where(
                (events_t.c.kind == prefix) | events_t.c.kind.startswith(prefix + ".", autoescape=True)
            )
        if subject is not None:
            query = query.where(events_t.c.subject == subject)
        if since is not None:
            query = query.where(events_t.c.ts >= _utc(since))
        if limit is not None:
            if limit < 0:
                raise StoreError(f"limit must be a non-negative number of events or None; got {limit}.")
            query = query.limit(limit)
        query = query.order_by(events_t.c.ts.desc(), events_t.c.id.desc())
        with self.read("read events") as conn:
            rows = conn.execute(query).mappings().all()
        return [Event(**{**row, "data": row["data"] or {}}) for row in rows]

    # -- feedback ------------------------------------------------------------------------------
    def add_feedback(self, items: Iterable[tuple[str, Any]], model_name: str | None = None) -> int:
        """Store ground-truth labels by prediction id; a later label for the same id replaces it.

        Returns how many labels were written.
        """
        rows = self._feedback_rows(items, model_name, first=False)
        if not rows:
            return 0
        stmt = self._insert(feedback_t)
        stmt = stmt.on_conflict_do_update(
            index_elements=[feedback_t.c.prediction_id],
            set_={
                "label": stmt.excluded.label,
                "ts": stmt.excluded.ts,
                "model_name": stmt.excluded.model_name,
            },
        )
        with self.write(f"store {len(rows)} feedback labels") as conn:
            for start in range(0, len(rows), _CHUNK):
                conn.execute(stmt, rows[start : start + _CHUNK])
        return len(rows)

    def add_first_feedback(
        self, items: Iterable[tuple[str, Any]], model_name: str | None = None
    ) -> list[str]:
        """Store labels only for ids that have none yet: the first label of an id wins, atomically, also
        between processes (``INSERT ... ON CONFLICT DO NOTHING``). Returns the ids stored."""
        rows = self._feedback_rows(items, model_name, first=True)
        if not rows:
            return []
        stmt = (
            self._insert(feedback_t)
            .on_conflict_do_nothing(index_elements=[feedback_t.c.prediction_id])
            .returning(feedback_t.c.prediction_id)
        )
        stored: list[str] = []
        with self.write(f"store {len(rows)} first feedback labels") as conn:
            for start in range(0, len(rows), _CHUNK):
                stored.extend(conn.execute(stmt, rows[start : start + _CHUNK]).scalars())
        return stored

    @staticmethod
    def _feedback_rows(
        items: Iterable[tuple[str, Any]], model_name: str | None, *, first: bool
    ) -> list[dict[str, Any]]:
        """Checked rows, one per id (the first or the last label of an id in ``items``)."""
        now = datetime.now(UTC)
        chosen: dict[str, Any] = {}
        for n, item in enumerate(items):
            try:
                pid, label = item
            except (TypeError, ValueError) as exc:
                raise StoreError(
                    f"Feedback item #{n} must be a (prediction_id, label) pair; got {item!r}."
                ) from exc
            found = feedback_problem(pid, label)
            if found is not None:
                what, problem = found
                subject = "prediction_id" if what == "prediction_id" else f"for prediction {pid!r}"
                raise StoreError(f"Feedback item #{n} {subject} {problem}.")
            if not (first and pid in chosen):
                chosen[pid] = to_jsonable(label)
        return [
            {"prediction_id": k, "label": v, "ts": now, "model_name": model_name} for k, v in chosen.items()
        ]

    def feedback(
        self,
        ids: Iterable[str] | None = None,
        since: datetime | None = None,
        *,
        model_name: str | None = None,
    ) -> dict[str, Any]:
        """Labels by prediction id, for ``ids`` (all when None) received at or after ``since``."""
        base = sa.select(feedback_t.c.prediction_id, feedback_t.c.label)
        if since is not None:
            base = base.where(feedback_t.c.ts >= _utc(since))
        if model_name is not None:
            base = base.where(feedback_t.c.model_name == model_name)
        queries = [base]
        if ids is not None:
            wanted = list(dict.fromkeys(ids))
            queries = [
                base.where(feedback_t.c.prediction_id.in_(wanted[i : i + _CHUNK]))
                for i in range(0, len(wanted), _CHUNK)
            ]
        out: dict[str, Any] = {}
        with self.read("read feedback") as conn:
            for query in queries:
                out.update({row.prediction_id: row.label for row in conn.execute(query)})
        return out

    def feedback_frame(self, since: datetime | None = None, *, model_name: str | None = None) -> pd.DataFrame:
        """Labels as a DataFrame (prediction_id, label, ts, model_name), oldest first, to join with the
        prediction log on ``prediction_id``."""
        query = sa.select(feedback_t).order_by(feedback_t.c.ts, feedback_t.c.prediction_id)
        if since is not None:
            query = query.where(feedback_t.c.ts >= _utc(since))
        if model_name is not None:
            query = query.where(feedback_t.c.model_name == model_name)
        with self.read("read feedback") as conn:
            rows = conn.execute(query).all()
        frame = pd.DataFrame(rows, columns=["prediction_id", "label", "ts", "model_name"])
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
        return frame

    def delete_feedback_before(self, cutoff: datetime) -> int:
        """Delete labels received before ``cutoff`` (retention); returns how many were deleted."""
        with self.write("delete old feedback") as conn:
            return int(conn.execute(sa.delete(feedback_t).where(feedback_t.c.ts < _utc(cutoff))).rowcount)

    # -- leases (shorthands for ``store.leases``) -------------------------------------------------
    def acquire_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take or renew the lease ``name`` for ``owner`` for ``ttl_s`` seconds (:meth:`Leases.acquire`)."""
        return self._leases.acquire(name, owner, ttl_s)

    def release_lease(self, name: str, owner: str) -> bool:
        """Give the lease up if ``owner`` holds it (:meth:`Leases.release`)."""
        return self._leases.release(name, owner)
