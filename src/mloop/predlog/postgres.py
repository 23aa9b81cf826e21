"""Prediction log in one PostgreSQL table, shared by every serving replica.

Features, output and flags are JSONB documents rather than one column per feature: each model and
each retrain may bring a different feature set, and wide columns would need ``ALTER TABLE`` from
several replicas at once whenever that happens. With JSONB the table never changes shape; reads
select a window by ``(model_name, ts)`` (indexed) and flatten the documents in Python, which is
cheap at monitoring window sizes (thousands of rows).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from mloop.errors import StoreError
from mloop.predlog.base import PredictionLogBackend, ReadQuery, RecordsRefused
from mloop.predlog.record import PredictionRecord, records_to_frame
from mloop.store.jsonutil import dumps
from mloop.store.schema import UTCDateTime

__all__ = ["DEFAULT_TABLE", "PostgresPredictionLog"]

DEFAULT_TABLE = "mloop_predictions"


def _table(name: str) -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("prediction_id", sa.String(128), nullable=False),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(100), nullable=False),
        sa.Column("arm", sa.String(100), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("features", JSONB(), nullable=False),
        sa.Column("output", JSONB(), nullable=False),
        sa.Column("flags", JSONB(), nullable=True),
        sa.Index(f"ix_{name}_model_ts", "model_name", "ts"),
        sa.Index(f"ix_{name}_ts", "ts"),
        sa.Index(f"ix_{name}_prediction_id", "prediction_id"),
    )


class PostgresPredictionLog(PredictionLogBackend):
    """The log in ``table`` of the database at ``url`` (``postgresql+psycopg://…``); created if missing."""

    def __init__(self, url: str, *, table: str = DEFAULT_TABLE) -> None:
        parsed = sa.engine.make_url(url)
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        self._safe_url = parsed.render_as_string(hide_password=True)
        # Model outputs carry numpy values and NaN; str() keeps odd objects instead of failing a batch.
        self._engine = sa.create_engine(parsed, pool_pre_ping=True, json_serializer=lambda v: dumps(v, str))
        self._table = _table(table)
        try:
            with self._engine.begin() as conn:
                # Replicas starting together must not race on CREATE TABLE.
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(hashtext(:k || current_schema()))"), {"k": table}
                )
                self._table.metadata.create_all(conn, checkfirst=True)
        except sa.exc.SQLAlchemyError as exc:
            self._engine.dispose()
            raise self._error("create its table", exc) from exc

    def __repr__(self) -> str:
        return f"PostgresPredictionLog({self._safe_url!r}, table={self._table.name!r})"

    def _error(self, action: str, exc: sa.exc.SQLAlchemyError) -> StoreError:
        cause = getattr(exc, "orig", None) or exc
        return StoreError(
            f"The prediction log at {self._safe_url} could not {action}: {cause}. "
            "Check that PostgreSQL is reachable and prediction_log.url in mloop.yaml is right."
        )

    def _write_batch(self, records: list[PredictionRecord]) -> None:
        try:
            rows = _rows(records)
        except (TypeError, ValueError, AttributeError) as exc:
            raise RecordsRefused(
                f"A prediction cannot be stored as a row: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            with self._engine.begin() as conn:
                conn.execute(sa.insert(self._table), rows)
        except sa.exc.SQLAlchemyError as exc:
            if _refused(exc):
                cause = getattr(exc, "orig", None) or exc.__cause__ or exc
                first = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
                raise RecordsRefused(f"PostgreSQL refused {len(rows)} predictions: {first}") from exc
            raise self._error(f"write {len(rows)} predictions", exc) from exc

    def _where(self, query: ReadQuery) -> list[sa.ColumnElement[bool]]:
        t = self._table.c
        clauses: list[sa.ColumnElement[bool]] = []
        if query.model_name is not None:
            clauses.append(t.model_name == query.model_name)
        if query.model_version is not None:
            clauses.append(t.model_version == query.model_version)
        if query.since is not None:
            clauses.append(t.ts >= query.since)
        if query.until is not None:
            clauses.append(t.ts < query.until)
        return clauses

    def _read(self, query: ReadQuery) -> pd.DataFrame:
        t = self._table.c
        stmt = sa.select(
            t.prediction_id,
            t.ts,
            t.model_name,
            t.model_version,
            t.arm,
            t.latency_ms,
            t.features,
            t.output,
            t.flags,
        ).where(*self._where(query))
        if query.last_n is not None:
            stmt = stmt.order_by(t.ts.desc(), t.id.desc()).limit(query.last_n)
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(stmt).all()
        except sa.exc.SQLAlchemyError as exc:
            raise self._error("read predictions", exc) from exc
        return records_to_frame(_record(row) for row in rows)

    def _versions(self, ids: set[str], model_name: str, since: datetime | None) -> dict[str, str]:
        t = self._table.c
        found: dict[str, str] = {}
        wanted = sorted(ids)
        try:
            with self._engine.connect() as conn:
                for start in range(0, len(wanted), 1000):  # the prediction_id index answers each chunk
                    stmt = sa.select(t.prediction_id, t.model_version, t.flags).where(
                        t.prediction_id.in_(wanted[start : start + 1000]), t.model_name == model_name
                    )
                    if since is not None:
                        stmt = stmt.where(t.ts >= since)
                    for pid, version, flags in conn.execute(stmt):
                        if not (flags or {}).get("shadow"):
                            found[pid] = str(version)
        except sa.exc.SQLAlchemyError as exc:
            raise self._error("look up prediction ids", exc) from exc
        return found

    def _count(self, model_name: str | None) -> int:
        stmt = sa.select(sa.func.count()).select_from(self._table)
        if model_name is not None:
            stmt = stmt.where(self._table.c.model_name == model_name)
        try:
            with self._engine.connect() as conn:
                return int(conn.execute(stmt).scalar_one())
        except sa.exc.SQLAlchemyError as exc:
            raise self._error("count predictions", exc) from exc

    def _delete_before(self, cutoff: datetime) -> int:
        try:
            with self._engine.begin() as conn:
                return int(conn.execute(sa.delete(self._table).where(self._table.c.ts < cutoff)).rowcount)
        except sa.exc.SQLAlchemyError as exc:
            raise self._error("delete old predictions", exc) from exc

    def close(self) -> None:
        self._engine.dispose()


def _rows(records: list[PredictionRecord]) -> list[dict[str, Any]]:
    return [
        {
            "prediction_id": r.prediction_id,
            "ts": r.ts,
            "model_name": r.model_name,
            "model_version": str(r.model_version),
            "arm": r.arm,
            "latency_ms": r.latency_ms,
            "features": dict(r.features),
            "output": {"prediction": r.prediction, "probabilities": r.probabilities},
            "flags": dict(r.flags) if r.flags else None,
        }
        for r in records
    ]


def _refused(exc: sa.exc.SQLAlchemyError) -> bool:
    """Whether PostgreSQL refused the data (NUL in text, bad JSON text, too long) rather than failed."""
    if isinstance(exc, sa.exc.DataError | sa.exc.IntegrityError):
        return True
    # Binding the parameters (e.g. JSON encoding) failed before anything reached the server.
    return isinstance(exc, sa.exc.StatementError) and not isinstance(exc, sa.exc.DBAPIError)


def _record(row: Any) -> PredictionRecord:
    output = row.output or {}
    ts: datetime = row.ts
    return PredictionRecord(
        prediction_id=row.prediction_id,
        model_name=row.model_name,
        model_version=row.model_version,
        features=row.features or {},
        prediction=output.get("prediction"),
        probabilities=output.get("probabilities"),
        latency_ms=row.latency_ms,
        ts=ts,
        arm=row.arm,
        flags=row.flags,
    )
