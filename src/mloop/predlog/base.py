"""The interface every prediction-log backend implements, and its shared argument checks.

A backend only writes batches and answers filtered reads; buffering and the background thread live
in :class:`~mloop.predlog.logger.PredictionLogger`, so every backend gets them for free.
Public methods validate and normalise; backends implement the protected hooks.

    class MyLog(PredictionLogBackend):
        def _write_batch(self, records): ...      # persist all or raise
        def _read(self, query): ...                # a frame in output shape, filters applied
        def _count(self, model_name): ...
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType

import pandas as pd

from mloop.errors import StoreError
from mloop.predlog.record import PredictionRecord, empty_frame

__all__ = ["PredictionLogBackend", "ReadQuery"]


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

    def write_batch(self, records: Iterable[PredictionRecord]) -> int:
        """Persist ``records`` all together or raise; returns how many were written."""
        batch = list(records)
        if batch:
            self._write_batch(batch)
        return len(batch)

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
