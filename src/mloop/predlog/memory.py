"""An in-memory prediction log: a test double for servers and monitors that need a backend.

It passes the same contract tests as the real backends, so code tested against it behaves the same
on Parquet or PostgreSQL. ``fail_next(n)`` makes the next ``n`` writes raise, to test error paths.
"""

from __future__ import annotations

import threading
from datetime import datetime

import pandas as pd

from mloop.errors import StoreError
from mloop.predlog.base import PredictionLogBackend, ReadQuery
from mloop.predlog.record import PredictionRecord, records_to_frame

__all__ = ["MemoryPredictionLog"]


class MemoryPredictionLog(PredictionLogBackend):
    """Keeps records in a list (for tests); ``url`` ``memory://`` in :func:`open_prediction_log`."""

    def __init__(self) -> None:
        self.records: list[PredictionRecord] = []
        self.batches = 0
        self._failures = 0
        self._lock = threading.Lock()

    def fail_next(self, n: int = 1) -> None:
        """Make the next ``n`` ``write_batch`` calls raise StoreError."""
        with self._lock:
            self._failures = n

    def _write_batch(self, records: list[PredictionRecord]) -> None:
        with self._lock:
            if self._failures > 0:
                self._failures -= 1
                raise StoreError("MemoryPredictionLog was told to fail this write (fail_next).")
            self.records.extend(records)
            self.batches += 1

    def _read(self, query: ReadQuery) -> pd.DataFrame:
        with self._lock:
            rows = [
                r
                for r in self.records
                if (query.model_name is None or r.model_name == query.model_name)
                and (query.model_version is None or str(r.model_version) == query.model_version)
                and (query.since is None or r.ts >= query.since)
                and (query.until is None or r.ts < query.until)
            ]
        return records_to_frame(rows)

    def _delete_before(self, cutoff: datetime) -> int:
        with self._lock:
            kept = [r for r in self.records if r.ts >= cutoff]
            deleted, self.records = len(self.records) - len(kept), kept
        return deleted

    def _count(self, model_name: str | None) -> int:
        with self._lock:
            return sum(1 for r in self.records if model_name is None or r.model_name == model_name)
