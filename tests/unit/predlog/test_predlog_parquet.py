"""Parquet segments: atomic writes, partition layout, temp and broken files never reach readers."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mloop.errors import ConfigError, StoreError
from mloop.predlog import (
    MemoryPredictionLog,
    ParquetPredictionLog,
    PostgresPredictionLog,
    PredictionRecord,
    open_prediction_log,
)

DAY = datetime(2024, 3, 9, 12, tzinfo=UTC)


def _rec(i: int, model: str = "fraud", ts: datetime = DAY) -> PredictionRecord:
    return PredictionRecord(f"p{i}", model, "1", {"x": i}, 0, ts=ts + timedelta(seconds=i))


def test_segments_are_partitioned_by_model_and_day(tmp_path: Path) -> None:
    log = ParquetPredictionLog(tmp_path)
    log.write_batch([_rec(0, "fraud/eu"), _rec(1, "churn"), _rec(2, "churn", DAY + timedelta(days=1))])
    rel = sorted(str(p.relative_to(tmp_path).parent) for p in log.segments())
    assert rel == [
        "model=churn/date=2024-03-09",
        "model=churn/date=2024-03-10",
        "model=fraud%2Feu/date=2024-03-09",
    ]
    assert sorted(log.model_names()) == ["churn", "fraud/eu"]
    assert not list(tmp_path.rglob("*.tmp")), "a finished write leaves no temporary file"
    for path in log.segments():
        assert pq.read_table(path).num_rows == 1


def test_temporary_files_are_invisible_to_readers(tmp_path: Path) -> None:
    log = ParquetPredictionLog(tmp_path)
    log.write_batch([_rec(0)])
    [segment] = log.segments()
    # What a crash mid-write leaves behind: a hidden, truncated temporary file.
    (segment.parent / f".{segment.name}.tmp").write_bytes(segment.read_bytes()[:50])
    assert log.count() == 1 and len(log.read()) == 1
    assert log.segments() == [segment]


def test_a_corrupt_segment_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = ParquetPredictionLog(tmp_path)
    log.write_batch([_rec(0)])
    [segment] = log.segments()
    (segment.parent / "00000000000000000-1-deadbeef.parquet").write_bytes(b"not parquet")
    with caplog.at_level(logging.WARNING):
        assert len(log.read()) == 1
        assert log.count() == 1
    assert "unreadable prediction log segment" in caplog.text


def test_last_n_opens_only_the_newest_days(tmp_path: Path) -> None:
    log = ParquetPredictionLog(tmp_path)
    for day in range(5):
        log.write_batch([_rec(i, ts=DAY + timedelta(days=day)) for i in range(10)])
    oldest = next(p for p in log.segments() if "2024-03-09" in str(p))
    oldest.write_bytes(b"broken on purpose: must not be opened for a recent window")
    assert len(log.read(last_n=15)) == 15
    assert log.read(last_n=15)["ts"].min() >= DAY + timedelta(days=3)


def test_unwritable_directory_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match=r"prediction_log\.url"):
        ParquetPredictionLog(blocker / "sub")


@pytest.mark.parametrize("form", ["uri", "path"])
def test_factory_opens_parquet_for_file_urls_and_paths(tmp_path: Path, form: str) -> None:
    target = tmp_path / "preds dir"
    log = open_prediction_log(target.as_uri() if form == "uri" else str(target))
    assert isinstance(log, ParquetPredictionLog) and log.directory == target.resolve()


def test_factory_other_schemes() -> None:
    assert isinstance(open_prediction_log("memory://"), MemoryPredictionLog)
    with pytest.raises(ConfigError) as info:
        open_prediction_log("kafka://broker:9092/preds")
    assert "file" in str(info.value) and "postgresql" in str(info.value)
    with pytest.raises(ConfigError, match="Did you mean 'file'"):
        open_prediction_log("fille:///tmp/x")
    with pytest.raises(ConfigError, match="must be local"):
        open_prediction_log("file://otherhost/x")
    with pytest.raises(ConfigError, match="directory or a URL"):
        open_prediction_log("")


def test_unreachable_postgres_is_a_store_error_without_password() -> None:
    with pytest.raises(StoreError, match=r"prediction_log\.url") as info:
        PostgresPredictionLog("postgresql://u:secret@127.0.0.1:1/db?connect_timeout=2")
    assert "secret" not in str(info.value)
