"""The prediction log's contract: the same tests on every backend (memory, Parquet on local disk and on
S3-compatible object storage, PostgreSQL)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mloop.errors import StoreError
from mloop.predlog import (
    BASE_COLUMNS,
    MemoryPredictionLog,
    PredictionLogBackend,
    PredictionLogger,
    PredictionRecord,
    open_prediction_log,
)

T0 = datetime(2024, 5, 1, 23, 59, 0, tzinfo=UTC)  # batches straddle midnight: two Parquet partitions


@pytest.fixture(params=["memory", "parquet", "s3", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PredictionLogBackend]:
    if request.param == "memory":
        log: PredictionLogBackend = MemoryPredictionLog()
    elif request.param == "parquet":
        log = open_prediction_log((tmp_path / "predictions").as_uri())
    elif request.param == "s3":
        log = open_prediction_log(str(request.getfixturevalue("s3_url")))
    else:
        log = open_prediction_log(str(request.getfixturevalue("postgres_schema_url")))
    with log:
        yield log


def _rec(i: int, *, model: str = "fraud", version: str = "1", **kw: object) -> PredictionRecord:
    fields: dict[str, object] = {
        "prediction_id": f"p{i:04d}",
        "model_name": model,
        "model_version": version,
        "features": {"amount": float(i), "country": "FR" if i % 2 else "DE"},
        "prediction": i % 2,
        "probabilities": {0: 0.25, 1: 0.75},
        "latency_ms": 1.5,
        "ts": T0 + timedelta(seconds=i),
    }
    fields.update(kw)
    return PredictionRecord(**fields)


def test_round_trip_flattens_features_and_probabilities(backend: PredictionLogBackend) -> None:
    assert backend.write_batch([_rec(i) for i in range(4)]) == 4
    frame = backend.read()
    assert list(frame.columns[: len(BASE_COLUMNS)]) == list(BASE_COLUMNS)
    assert {"proba_0", "proba_1", "amount", "country"} <= set(frame.columns)
    assert frame["prediction_id"].tolist() == ["p0000", "p0001", "p0002", "p0003"]
    assert frame["amount"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert frame["country"].tolist() == ["DE", "FR", "DE", "FR"]
    assert frame["prediction"].tolist() == [0, 1, 0, 1]
    assert frame["proba_1"].tolist() == [0.75] * 4
    assert frame["latency_ms"].tolist() == [1.5] * 4
    assert str(frame["ts"].dt.tz) == "UTC"
    assert frame["ts"].iloc[0] == pd.Timestamp(T0)
    assert backend.count() == 4


def test_read_filters_by_model_version_and_time(backend: PredictionLogBackend) -> None:
    backend.write_batch([_rec(i, version="1") for i in range(60)])
    backend.write_batch([_rec(i, version="2") for i in range(60, 100)])
    backend.write_batch([_rec(i, model="churn") for i in range(100, 110)])
    assert len(backend.read()) == 110
    assert len(backend.read(model_name="fraud")) == 100
    assert backend.read(model_name="fraud", model_version="2")["prediction_id"].iloc[0] == "p0060"
    window = backend.read(since=T0 + timedelta(seconds=10), until=T0 + timedelta(seconds=20))
    assert window["prediction_id"].tolist() == [f"p{i:04d}" for i in range(10, 20)]
    naive = backend.read(since=(T0 + timedelta(seconds=105)).replace(tzinfo=None))
    assert len(naive) == 5
    assert backend.count(model_name="churn") == 10
    assert backend.read(model_name="nobody").empty


def test_last_n_keeps_the_newest_rows_oldest_first(backend: PredictionLogBackend) -> None:
    # Written out of order and across midnight: last_n must follow ts, not write order.
    backend.write_batch([_rec(i) for i in range(100, 130)])
    backend.write_batch([_rec(i) for i in range(0, 30)])
    last = backend.read(last_n=5)
    assert last["prediction_id"].tolist() == [f"p{i:04d}" for i in range(125, 130)]
    assert backend.read(last_n=5, until=T0 + timedelta(seconds=30))["prediction_id"].iloc[-1] == "p0029"
    assert len(backend.read(last_n=1000)) == 60
    assert backend.read(last_n=0).empty


def test_empty_log_reads_a_frame_with_the_fixed_columns(backend: PredictionLogBackend) -> None:
    frame = backend.read()
    assert frame.empty and list(frame.columns) == list(BASE_COLUMNS)
    assert backend.count() == 0
    assert backend.write_batch([]) == 0


def test_numpy_nan_arms_flags_and_new_features(backend: PredictionLogBackend) -> None:
    backend.write_batch(
        [
            _rec(0, features={"amount": np.float64(3.5), "n": np.int64(2)}, prediction=np.int64(1)),
            _rec(1, features={"amount": math.nan, "extra": "x"}, arm="canary", flags={"shadow": True}),
        ]
    )
    frame = backend.read()
    assert frame["amount"].iloc[0] == 3.5
    assert pd.isna(frame["amount"].iloc[1])
    assert frame["extra"].iloc[1] == "x" and pd.isna(frame["extra"].iloc[0])
    assert frame["arm"].tolist()[1] == "canary"
    assert bool(frame["flag_shadow"].iloc[1]) is True


def test_a_feature_named_like_a_fixed_column_does_not_shadow_it(backend: PredictionLogBackend) -> None:
    backend.write_batch([_rec(0, features={"prediction": 42.0, "ts": "x"})])
    frame = backend.read()
    assert frame["prediction"].iloc[0] == 0
    assert frame["feature_prediction"].iloc[0] == 42.0
    assert frame["feature_ts"].iloc[0] == "x"


def test_a_feature_that_changes_type_between_batches_still_reads(backend: PredictionLogBackend) -> None:
    backend.write_batch([_rec(0, features={"code": 7})])
    backend.write_batch([_rec(1, features={"code": "A7"})])
    assert len(backend.read()) == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"last_n": -1}, "last_n"),
        ({"since": T0, "until": T0}, "earlier"),
        ({"since": "yesterday"}, "datetime"),
    ],
)
def test_bad_read_arguments(backend: PredictionLogBackend, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(StoreError, match=match):
        backend.read(**kwargs)


def test_logger_writes_everything_through_the_backend(backend: PredictionLogBackend) -> None:
    with PredictionLogger(backend, buffer_size=1000, flush_interval_s=0.05, flush_rows=64) as logger:
        for i in range(300):
            assert logger.log(_rec(i))
    assert logger.dropped == 0 and logger.written == 300
    assert backend.count() == 300
    assert backend.read()["prediction_id"].is_unique


def test_delete_before_forgets_old_predictions_only(backend: PredictionLogBackend) -> None:
    old = [_rec(i, ts=T0 - timedelta(days=2, seconds=i)) for i in range(5)]
    new = [_rec(i, ts=T0 + timedelta(hours=1, seconds=i)) for i in range(5, 12)]
    backend.write_batch(old + new)
    # Parquet backends delete whole days; the cutoff's own day (and every later one) is kept.
    assert backend.delete_before(T0 - timedelta(days=1)) == 5
    assert backend.count() == 7
    assert backend.read()["prediction_id"].tolist() == [f"p{i:04d}" for i in range(5, 12)]
    assert backend.delete_before(T0 - timedelta(days=1)) == 0
