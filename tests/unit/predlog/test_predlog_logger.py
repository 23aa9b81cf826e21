"""PredictionLogger: never blocks or raises on log(), drops and counts when full, survives failures."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from mloop.errors import ConfigError, StoreError
from mloop.predlog import MemoryPredictionLog, PredictionLogger, PredictionRecord
from mloop.predlog.base import PredictionLogBackend, ReadQuery


def _rec(i: int) -> PredictionRecord:
    return PredictionRecord(f"p{i}", "m", "1", {"x": i}, 0, ts=datetime(2024, 1, 1, tzinfo=UTC))


class BlockedLog(MemoryPredictionLog):
    """A backend whose writes wait until released, so the buffer cannot drain."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def _write_batch(self, records: list[PredictionRecord]) -> None:
        self.entered.set()
        assert self.release.wait(30), "test never released the backend"
        super()._write_batch(records)


def test_full_buffer_drops_and_counts_instead_of_blocking() -> None:
    backend = BlockedLog()
    drops: list[int] = []
    logger = PredictionLogger(
        backend, buffer_size=10, flush_rows=1, flush_interval_s=0.01, on_drop=drops.append
    )
    try:
        logger.log(_rec(-1))
        assert backend.entered.wait(10), "the flusher never started writing"
        # The flusher is stuck in a write: the buffer takes exactly buffer_size more records.
        results = [logger.log(_rec(i)) for i in range(25)]
        assert results == [True] * 10 + [False] * 15
        assert logger.dropped == 15 and sum(drops) == 15
        assert logger.pending == 10
    finally:
        backend.release.set()
        logger.close()
    assert backend.count() == 11
    assert logger.written == 11 and logger.dropped == 15


def test_close_writes_everything_and_later_logs_are_dropped() -> None:
    backend = MemoryPredictionLog()
    logger = PredictionLogger(backend, buffer_size=10_000, flush_rows=5000, flush_interval_s=60)
    for i in range(1234):
        logger.log(_rec(i))
    logger.close()
    assert backend.count() == 1234
    assert not logger.log(_rec(0))
    assert logger.dropped == 1
    logger.close()  # idempotent


def test_flush_rows_triggers_a_write_before_the_interval() -> None:
    backend = MemoryPredictionLog()
    with PredictionLogger(backend, flush_rows=10, flush_interval_s=3600) as logger:
        for i in range(10):
            logger.log(_rec(i))
        deadline = threading.Event()
        for _ in range(500):  # polls up to ~5 s; returns as soon as the size trigger wrote
            if backend.count() == 10:
                break
            deadline.wait(0.01)
        assert backend.count() == 10


def test_backend_errors_are_retried_and_the_thread_survives() -> None:
    backend = MemoryPredictionLog()
    with PredictionLogger(backend, flush_rows=100, flush_interval_s=3600, max_retries=5) as logger:
        backend.fail_next(2)
        for i in range(50):
            logger.log(_rec(i))
        assert not logger.flush()  # first failure: kept for retry
        assert logger.pending == 50 and logger.write_errors == 1
        assert not logger.flush()  # second failure
        assert logger.flush()  # third attempt succeeds
        assert backend.count() == 50 and logger.dropped == 0
        assert logger._thread.is_alive()


def test_a_batch_that_keeps_failing_is_dropped_after_max_retries() -> None:
    backend = MemoryPredictionLog()
    drops: list[int] = []
    with PredictionLogger(
        backend, flush_rows=100, flush_interval_s=3600, max_retries=2, on_drop=drops.append
    ) as lg:
        backend.fail_next(10)
        for i in range(20):
            lg.log(_rec(i))
        for _ in range(3):
            assert not lg.flush()
        assert lg.dropped == 20 and drops == [20] and lg.pending == 0
        backend.fail_next(0)
        lg.log(_rec(99))
        assert lg.flush()
    assert backend.count() == 1


class ExplodingLog(PredictionLogBackend):
    def _write_batch(self, records: list[PredictionRecord]) -> None:
        raise RuntimeError("disk on fire")

    def _read(self, query: ReadQuery):
        raise NotImplementedError

    def _count(self, model_name: str | None) -> int:
        return 0


def test_unexpected_exceptions_and_close_with_a_dead_backend() -> None:
    logger = PredictionLogger(ExplodingLog(), flush_rows=5, flush_interval_s=0.01, max_retries=1)
    for i in range(12):
        logger.log(_rec(i))
    logger.close(timeout=10)
    assert not logger._thread.is_alive()
    assert logger.written == 0 and logger.dropped == 12 and logger.write_errors >= 1


def test_log_never_raises_even_on_garbage_or_a_broken_callback() -> None:
    def broken(n: int) -> None:
        raise ValueError("metrics are down")

    with PredictionLogger(MemoryPredictionLog(), buffer_size=1, on_drop=broken) as logger:
        assert not logger.log("not a record")
        assert logger.log(_rec(1))
        assert logger.dropped == 1


@pytest.mark.parametrize(
    "kwargs", [{"buffer_size": 0}, {"flush_rows": -1}, {"flush_interval_s": 0}, {"buffer_size": True}]
)
def test_bad_settings_are_config_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="prediction_log"):
        PredictionLogger(MemoryPredictionLog(), **kwargs)


def test_memory_backend_failure_is_a_store_error() -> None:
    backend = MemoryPredictionLog()
    backend.fail_next()
    with pytest.raises(StoreError, match="fail_next"):
        backend.write_batch([_rec(0)])
