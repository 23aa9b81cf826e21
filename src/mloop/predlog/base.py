"""The interface every prediction-log backend implements, and its shared argument checks.

A backend only writes batches and answers filtered reads; buffering and the background thread live
in :class:`~mloop.predlog.logger.PredictionLogger`, so every backend gets them for free.
Public methods validate and normalise; backends implement the protected hooks.

A batch that a backend refuses because of what some records hold (:class:`RecordsRefused`: text
with NUL for PostgreSQL, a lone surrogate for Parquet) never costs the other records: ``write_batch``
splits it in halves until each refused record stands alone, writes everything else, and quarantines
each refused record — stored once more with its text made safe and the flag ``quarantined`` naming
the reason, or, if even that fails, logged with its id and dropped; either way counted in
``quarantined``. Nothing a client sends is retried forever, and no other row is lost for it.

    class MyLog(PredictionLogBackend):
        def _write_batch(self, records): ...      # persist all or raise
        def _read(self, query): ...                # a frame in output shape, filters applied
        def _count(self, model_name): ...
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import pandas as pd

from mloop.errors import StoreError
from mloop.predlog.record import PredictionRecord, empty_frame

__all__ = ["PartialWrite", "PredictionLogBackend", "ReadQuery", "RecordsRefused", "safe_record"]

log = logging.getLogger(__name__)
_MAX_TEXT = 10_000


class RecordsRefused(StoreError):
    """The backend works but refused this batch for what some of its records hold (bad data).

    Raised by a backend's ``_write_batch`` so that :meth:`PredictionLogBackend.write_batch` isolates
    the culprits instead of failing (and retrying) the whole batch.
    """


class PartialWrite(StoreError):
    """The backend failed while a refused batch was being split: ``written`` records are stored,
    ``remaining`` (in order) are not and may be retried."""

    def __init__(self, message: str, *, written: int, remaining: list[PredictionRecord]) -> None:
        super().__init__(message)
        self.written = written
        self.remaining = remaining


@dataclass(frozen=True, slots=True)
class ReadQuery:
    """Filters of one read: ``since <= ts < until``, then the newest ``last_n`` rows."""

    model_name: str | None = None
    model_version: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    last_n: int | None = None


def _utc(name: str, value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise StoreError(f"{name} must be a datetime; got {type(value).__name__} {value!r}.")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class PredictionLogBackend(ABC):
    """Where logged predictions are kept: write batches, read windows back as a flat DataFrame."""

    quarantined: int = 0
    """Records refused by the backend for their content (see the module docstring)."""

    def write_batch(self, records: Iterable[PredictionRecord]) -> int:
        """Persist ``records`` or raise; returns how many were written.

        Records the backend refuses for their content are isolated and quarantined (see the module
        docstring), so the return value may be less than the number of records. If the backend
        itself fails while a refused batch is being split, :class:`PartialWrite` says what is left.
        """
        batch = list(records)
        if not batch:
            return 0
        try:
            self._write_batch(batch)
        except RecordsRefused as exc:
            return self._isolate(batch, exc)
        return len(batch)

    def _isolate(self, batch: list[PredictionRecord], first: RecordsRefused) -> int:
        """Write ``batch`` in halves until each refused record stands alone; quarantine those."""
        log.warning(
            "%r refused a batch of %d predictions (%s); isolating the culprits", self, len(batch), first
        )
        written = 0
        mid = len(batch) // 2
        parts: deque[list[PredictionRecord]] = deque([batch[:mid], batch[mid:]])
        while parts:
            part = parts.popleft()
            try:
                self._write_batch(part)
            except RecordsRefused as exc:
                if len(part) == 1:
                    written += self._quarantine(part[0], exc)
                else:
                    half = len(part) // 2
                    parts.extendleft([part[half:], part[:half]])
                continue
            except StoreError as exc:
                remaining = [r for p in (part, *parts) for r in p]
                raise PartialWrite(
                    f"{exc} ({written} predictions of a split batch were written; {len(remaining)} remain)",
                    written=written,
                    remaining=remaining,
                ) from exc
            written += len(part)
        return written

    def _quarantine(self, record: PredictionRecord, exc: RecordsRefused) -> int:
        """Store a safe copy of a refused record flagged ``quarantined``; 1 if stored, 0 if dropped."""
        self.quarantined += 1
        reason = str(exc)[:300]
        try:
            self._write_batch([safe_record(record, reason)])
        except StoreError as again:
            log.error(
                "Dropped prediction %r: %r refused it (%s), and its made-safe copy too (%s)",
                safe_text(str(record.prediction_id))[:64],
                self,
                reason,
                again,
            )
            return 0
        log.warning(
            "Quarantined prediction %r: %r refused it (%s); stored with its text made safe, flag quarantined",
            safe_text(str(record.prediction_id))[:64],
            self,
            reason,
        )
        return 1

    def read(
        self,
        *,
        model_name: str | None = None,
        model_version: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        last_n: int | None = None,
    ) -> pd.DataFrame:
        """Logged predictions, oldest first, with features flattened into columns.

        ``since`` is inclusive, ``until`` exclusive (naive datetimes are UTC); ``last_n`` keeps the
        newest n rows after the other filters. Columns: see :mod:`mloop.predlog.record`.
        """
        if last_n is not None and (isinstance(last_n, bool) or not isinstance(last_n, int) or last_n < 0):
            raise StoreError(f"last_n must be a non-negative integer or None; got {last_n!r}.")
        query = ReadQuery(
            model_name=model_name,
            model_version=None if model_version is None else str(model_version),
            since=_utc("since", since),
            until=_utc("until", until),
            last_n=last_n,
        )
        if query.since and query.until and query.since >= query.until:
            raise StoreError(f"since ({query.since}) must be earlier than until ({query.until}).")
        if last_n == 0:
            return empty_frame()
        frame = self._read(query)
        if frame.empty:
            return empty_frame()
        frame = frame.sort_values(["ts", "prediction_id"], kind="stable")
        if last_n is not None:
            frame = frame.tail(last_n)
        return frame.reset_index(drop=True)

    def versions(
        self, ids: Iterable[str], *, model_name: str, since: datetime | None = None
    ) -> dict[str, str]:
        """The model version that answered each of ``ids`` among ``model_name``'s predictions logged at
        or after ``since``; ids not found are left out, and so are shadow rows (a shadow arm logs
        the champion's ids but never answers). ``/feedback`` checks labels against this."""
        wanted = {i for i in ids if isinstance(i, str)}
        if not wanted:
            return {}
        return self._versions(wanted, model_name, _utc("since", since))

    def _versions(self, ids: set[str], model_name: str, since: datetime | None) -> dict[str, str]:
        """Default: filter a read; backends with an index on ``prediction_id`` override this."""
        frame = self._read(ReadQuery(model_name=model_name, since=since))
        if frame.empty:
            return {}
        rows = frame[frame["prediction_id"].isin(ids)]
        if "flag_shadow" in rows.columns:
            rows = rows[rows["flag_shadow"].isna() | ~rows["flag_shadow"].astype("boolean").fillna(False)]
        return dict(zip(rows["prediction_id"], rows["model_version"].astype(str), strict=True))

    def delete_before(self, cutoff: datetime) -> int:
        """Delete predictions logged before ``cutoff`` (retention); returns how many were deleted.

        Backends that store days as a unit (Parquet segments) delete whole days older than
        ``cutoff``'s day, so up to a day more than asked for is kept."""
        when = _utc("cutoff", cutoff)
        assert when is not None
        return self._delete_before(when)

    def _delete_before(self, cutoff: datetime) -> int:
        """Backends that can forget implement this; the default refuses."""
        raise StoreError(f"{self!r} cannot delete old predictions (prediction_log.retention_days).")

    def count(self, *, model_name: str | None = None) -> int:
        """How many predictions are stored (for ``model_name`` only when given)."""
        return self._count(model_name)

    def close(self) -> None:  # noqa: B027 - optional hook: most backends hold nothing to release
        """Release connections or handles; the default has none."""

    def __enter__(self) -> PredictionLogBackend:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @abstractmethod
    def _write_batch(self, records: list[PredictionRecord]) -> None:
        """Persist a non-empty batch atomically (all or nothing) or raise."""

    @abstractmethod
    def _read(self, query: ReadQuery) -> pd.DataFrame:
        """Rows matching ``query`` (at least the newest ``last_n``) in output shape, any order."""

    @abstractmethod
    def _count(self, model_name: str | None) -> int:
        """Stored rows, optionally for one model."""


def safe_text(text: str) -> str:
    """``text`` that every backend stores: NUL and lone surrogates replaced, at most 10,000 characters."""
    if len(text) > _MAX_TEXT:
        text = text[:_MAX_TEXT] + "…"
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def _safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else str(value)
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {safe_text(str(k)): _safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value]
    return safe_text(str(value))


def safe_record(record: PredictionRecord, reason: str) -> PredictionRecord:
    """A copy of ``record`` with every text made safe to store and the flag ``quarantined: reason``."""
    return replace(
        record,
        prediction_id=safe_text(str(record.prediction_id))[:128],
        model_name=safe_text(str(record.model_name))[:200],
        model_version=safe_text(str(record.model_version))[:100],
        arm=None if record.arm is None else safe_text(str(record.arm))[:100],
        features=_safe(dict(record.features)) if record.features else {},
        prediction=_safe(record.prediction),
        probabilities=_safe(dict(record.probabilities)) if record.probabilities else None,
        flags={**(_safe(dict(record.flags)) if record.flags else {}), "quarantined": safe_text(reason)},
    )
