"""Nothing a client sends may make the prediction log drop other rows.

Attack: a value a backend cannot store (``\\u0000`` for PostgreSQL, a lone surrogate for Parquet) in
one prediction of a flush. Before, the whole flush failed, was retried and then dropped (one such
request every 3 s lost 92 % of all predictions). Now every other row is stored, and the refused one
is quarantined — stored once with its text made safe and flagged, or logged and dropped — and counted,
never retried forever.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mloop.errors import StoreError
from mloop.predlog import MemoryPredictionLog, PredictionLogger, PredictionRecord
from mloop.predlog.base import PartialWrite, RecordsRefused
from mloop.predlog.parquet import ParquetPredictionLog
from mloop.predlog.postgres import PostgresPredictionLog

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _rec(i: int, **features: object) -> PredictionRecord:
    return PredictionRecord(
        f"p{i:05d}",
        "m",
        "1",
        {"x": i, "country": "DE", **features},
        i % 2,
        {"0": 0.5, "1": 0.5},
        latency_ms=1.0,
        ts=T0 + timedelta(milliseconds=i),
        arm="champion",
    )


def _stream(n: int, poison_every: int, **poison: object) -> list[PredictionRecord]:
    return [_rec(i, **poison) if i % poison_every == poison_every // 2 else _rec(i) for i in range(n)]


def test_postgres_stores_every_other_row_around_a_nul(postgres_schema_url: str) -> None:
    backend = PostgresPredictionLog(postgres_schema_url)
    logger = PredictionLogger(backend, flush_rows=500, flush_interval_s=0.05, max_retries=2)
    try:
        records = _stream(3000, poison_every=600, country="DE\u0000FR")  # 5 poisoned rows over 6 flushes
        poisoned = {r.prediction_id for r in records if "\x00" in str(r.features["country"])}
        assert len(poisoned) == 5
        for r in records:
            assert logger.log(r)
        logger.close()
        stored = backend.read(model_name="m")
        assert len(stored) == 3000 and stored["prediction_id"].is_unique
        assert set(stored["prediction_id"]) == {r.prediction_id for r in records}
        clean = stored[~stored["prediction_id"].isin(poisoned)]
        assert (clean["country"] == "DE").all() and clean["flag_quarantined"].isna().all()
        kept = stored[stored["prediction_id"].isin(poisoned)]
        assert (kept["country"] == "DE\ufffdFR").all()  # the text made safe, the prediction kept
        assert kept["flag_quarantined"].str.startswith("PostgreSQL refused 1 predictions").all()
        assert backend.quarantined == 5
        stats = logger.stats()
        assert stats["quarantined"] == 5 and stats["dropped"] == 0 and stats["write_errors"] == 0
        assert stats["written"] == 3000
    finally:
        logger.close()
        backend.close()


def test_postgres_refuses_in_every_text_column_without_losing_the_batch(postgres_schema_url: str) -> None:
    backend = PostgresPredictionLog(postgres_schema_url)
    try:
        bad = [
            _rec(1, note="\x00"),
            PredictionRecord("p\x00x", "m", "1", {"x": 1}, 0, ts=T0),  # NUL in a plain text column
            PredictionRecord("p00003", "m", "1", {"x": 3}, "label\x00", ts=T0),  # in the output
            PredictionRecord("p" * 300, "m", "1", {"x": 4}, 0, ts=T0),  # longer than the column
        ]
        batch = [_rec(i) for i in range(10, 60)]
        batch[5:5] = bad[:2]
        batch[30:30] = bad[2:]
        assert backend.write_batch(batch) == 54
        assert backend.count(model_name="m") == 54 and backend.quarantined == 4
    finally:
        backend.close()


def test_parquet_stores_every_other_row_around_a_lone_surrogate(tmp_path: Path) -> None:
    backend = ParquetPredictionLog(tmp_path / "log", fsync=False)
    logger = PredictionLogger(backend, flush_rows=400, flush_interval_s=0.05)
    records = _stream(2000, poison_every=500, country="\ud800")
    for r in records:
        logger.log(r)
    logger.close()
    stored = backend.read(model_name="m")
    assert len(stored) == 2000 and set(stored["prediction_id"]) == {r.prediction_id for r in records}
    assert backend.quarantined == 4 and logger.stats()["dropped"] == 0


class _Refusing(MemoryPredictionLog):
    """Refuses any batch holding a ``poison`` feature; optionally fails (the backend is down) once."""

    def __init__(self, *, down_on_call: int | None = None, safe_copy_ok: bool = True) -> None:
        super().__init__()
        self.calls = 0
        self.down_on_call = down_on_call
        self.safe_copy_ok = safe_copy_ok

    def _write_batch(self, records: list[PredictionRecord]) -> None:
        self.calls += 1
        if self.calls == self.down_on_call:
            raise StoreError("connection lost")
        for r in records:
            if "poison" in r.features and ("quarantined" not in (r.flags or {}) or not self.safe_copy_ok):
                raise RecordsRefused("refused: poison")
        super()._write_batch(records)


def test_a_record_that_cannot_be_stored_at_all_is_dropped_counted_and_not_retried() -> None:
    backend = _Refusing(safe_copy_ok=False)
    logger = PredictionLogger(backend, flush_rows=100, flush_interval_s=0.05, max_retries=5)
    for r in [_rec(i, poison=1) if i == 37 else _rec(i) for i in range(100)]:
        logger.log(r)
    logger.close()
    assert sorted(r.prediction_id for r in backend.records) == [f"p{i:05d}" for i in range(100) if i != 37]
    assert backend.quarantined == 1
    assert logger.stats()["dropped"] == 1 and logger.stats()["write_errors"] == 0
    calls = backend.calls
    assert calls < 30  # halving: about 2 log2(100) writes, not one retry loop per flush


def test_a_backend_failure_while_isolating_retries_only_what_is_left() -> None:
    batch = [_rec(i, poison=1) if i == 70 else _rec(i) for i in range(100)]
    backend = _Refusing(down_on_call=3)  # the whole batch, its first half, then the outage
    with pytest.raises(PartialWrite) as info:
        backend.write_batch(batch)
    assert info.value.written == 50 and len(info.value.remaining) == 50
    # Flushed by hand (the thread would wake only after a minute): the outage, then the retry.
    logger = PredictionLogger(_Refusing(down_on_call=3), flush_rows=1000, flush_interval_s=60)
    for r in batch:
        logger.log(r)
    assert logger.flush() is False and logger.pending == 50
    assert logger.flush() is True
    logger.close()
    stored = [r.prediction_id for r in logger.backend.records]
    assert sorted(stored) == [r.prediction_id for r in batch] and len(set(stored)) == 100
    assert logger.stats()["written"] == 100 and logger.stats()["quarantined"] == 1
