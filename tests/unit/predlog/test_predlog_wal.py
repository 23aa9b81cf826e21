"""The sync-mode write-ahead logger: commit means on disk, shipping after, replay of what a dead
process left, torn lines skipped, a down backend retried instead of dropped."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from mloop.config import Settings
from mloop.predlog import (
    DurablePredictionLogger,
    MemoryPredictionLog,
    PredictionLogger,
    PredictionRecord,
    open_prediction_logger,
)
from mloop.predlog.wal import read_segment


def _record(i: int) -> PredictionRecord:
    return PredictionRecord(
        f"id-{i:06d}", "fraud", "3", {"amount": float(i), "country": "DE"}, i % 2, {0: 0.25, 1: 0.75}, 1.5
    )


def _ids(log: MemoryPredictionLog) -> list[str]:
    return sorted(log.read()["prediction_id"])


def test_commit_means_the_records_are_in_the_local_file_and_they_reach_the_backend(tmp_path: Path) -> None:
    backend = MemoryPredictionLog()
    wal = tmp_path / "wal"
    with DurablePredictionLogger(backend, wal, flush_interval_s=60, flush_rows=1000) as logger:
        for i in range(5):
            assert logger.log(_record(i))
        logger.commit().result(timeout=30)
        (segment,) = wal.glob("*.wal")
        records, bad = read_segment(segment)
        assert [r.prediction_id for r in records] == [f"id-{i:06d}" for i in range(5)] and bad == 0
        assert records[1].probabilities == {0: 0.25, 1: 0.75}, "class labels keep their type"
        assert records[0].features == {"amount": 0.0, "country": "DE"} and records[0].ts.tzinfo is not None
        assert backend.count() == 0, "shipping waits for the segment to close"
        assert logger.flush()
        assert backend.count() == 5 and not list(wal.glob("*.wal"))
    assert not list(wal.iterdir()), "a clean close leaves no segment and no lock"


def test_concurrent_requests_share_group_commits(tmp_path: Path) -> None:
    backend = MemoryPredictionLog()
    with DurablePredictionLogger(backend, tmp_path, flush_interval_s=0.05, flush_rows=100) as logger:

        def client(k: int) -> None:
            for i in range(50):
                logger.log(_record(k * 1000 + i))
                logger.commit().result(timeout=30)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert backend.count() == 400 and len(set(_ids(backend))) == 400


def _log_then_die(directory: str, n: int, torn: bytes) -> None:
    """Child: log and commit ``n`` records, append a torn line, then SIGKILL itself."""
    logger = DurablePredictionLogger(MemoryPredictionLog(), directory, flush_interval_s=60)
    for i in range(n):
        logger.log(_record(i))
    logger.commit().result(timeout=30)
    (segment,) = Path(directory).glob("*.wal")
    with open(segment, "ab") as fh:
        fh.write(torn)
    os.kill(os.getpid(), signal.SIGKILL)


def _crashed(directory: Path, n: int, torn: bytes = b"") -> None:
    child = mp.get_context("spawn").Process(target=_log_then_die, args=(str(directory), n, torn))
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL


def test_segments_of_a_dead_process_are_replayed_at_start_and_a_torn_line_is_skipped(tmp_path: Path) -> None:
    _crashed(tmp_path, 7, torn=b'1234abcd ["id-torn","fr')
    backend = MemoryPredictionLog()
    with DurablePredictionLogger(backend, tmp_path, flush_interval_s=0.05) as logger:
        assert logger.flush()
        assert logger.replayed == 7 and logger.unreadable == 1
    assert _ids(backend) == [f"id-{i:06d}" for i in range(7)]
    assert not list(tmp_path.glob("*.wal"))


def test_a_live_process_segments_are_not_taken_by_another(tmp_path: Path) -> None:
    first = DurablePredictionLogger(MemoryPredictionLog(), tmp_path, flush_interval_s=60)
    first.log(_record(1))
    first.commit().result(timeout=30)
    other_backend = MemoryPredictionLog()
    with DurablePredictionLogger(other_backend, tmp_path, flush_interval_s=0.05) as second:
        assert second.flush() and second.replayed == 0
    assert other_backend.count() == 0
    first.close()
    assert first.backend.count() == 1


class _DownThenUp(MemoryPredictionLog):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def _write_batch(self, records: list[PredictionRecord]) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("backend down")
        super()._write_batch(records)


def test_a_backend_that_is_down_is_retried_not_dropped(tmp_path: Path) -> None:
    backend = _DownThenUp(failures=3)
    with DurablePredictionLogger(backend, tmp_path, flush_interval_s=0.02, flush_rows=10) as logger:
        for i in range(25):
            logger.log(_record(i))
        logger.commit().result(timeout=30)
        assert logger.flush()
        assert logger.write_errors == 3 and logger.dropped == 0
    assert backend.count() == 25


def test_segments_the_backend_cannot_take_at_shutdown_stay_for_the_next_start(tmp_path: Path) -> None:
    with DurablePredictionLogger(_DownThenUp(failures=10**6), tmp_path, flush_interval_s=0.02) as logger:
        logger.log(_record(1))
        logger.commit().result(timeout=30)
    assert len(list(tmp_path.glob("*.wal"))) == 1
    backend = MemoryPredictionLog()
    with DurablePredictionLogger(backend, tmp_path, flush_interval_s=0.02) as logger:
        assert logger.flush()
    assert _ids(backend) == ["id-000001"]


@pytest.mark.parametrize(
    ("durability", "kind"), [("buffered", PredictionLogger), ("sync", DurablePredictionLogger)]
)
def test_the_setting_chooses_the_logger(tmp_path: Path, durability: str, kind: Any) -> None:
    settings = Settings(root=tmp_path, prediction_log={"durability": durability, "url": "memory://"})
    logger = open_prediction_logger(settings)
    try:
        assert type(logger) is kind and logger.durable is (durability == "sync")
        assert (logger.commit() is None) is (durability == "buffered")
    finally:
        logger.close()
    if durability == "sync":
        assert (tmp_path / ".mloop" / "predictions-wal").is_dir() or any(tmp_path.rglob("predictions-wal"))


def test_requests_of_one_group_share_one_wait_and_a_cancelled_one_leaves_the_others(tmp_path: Path) -> None:
    import asyncio

    backend = MemoryPredictionLog()
    logger = DurablePredictionLogger(backend, tmp_path, flush_interval_s=0.05)

    async def scenario() -> None:
        async def request(i: int) -> None:
            logger.log(_record(i))
            await logger.commit_async()

        tasks = [asyncio.create_task(request(i)) for i in range(20)]
        await asyncio.sleep(0)  # every request has logged and is waiting
        tasks[0].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError)
        assert results[1:] == [None] * 19

    asyncio.run(scenario())
    logger.close()
    assert backend.count() == 20, "a cancelled wait does not undo the record"
    assert logger.commits <= 20 and logger.commits >= 1
