"""Windows of the prediction log: --since parsing, window specs, label spelling, splitting a log frame."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from mloop.errors import MonitoringError
from mloop.monitoring.window import WindowSpec, label_key, parse_since, split_window
from mloop.predlog import PredictionRecord, records_to_frame

NOW = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "delta"),
    [("90s", timedelta(seconds=90)), ("30m", timedelta(minutes=30)), ("1h", timedelta(hours=1)),
     ("2d", timedelta(days=2)), ("1w", timedelta(weeks=1)), ("1.5h", timedelta(minutes=90)),
     (" 10 MIN ", timedelta(minutes=10))],
)  # fmt: skip
def test_durations_are_counted_back_from_now(text: str, delta: timedelta) -> None:
    assert parse_since(text, now=NOW) == NOW - delta


def test_iso_times_are_utc() -> None:
    assert parse_since("2025-05-01T10:00") == datetime(2025, 5, 1, 10, tzinfo=UTC)
    plus2 = timezone(timedelta(hours=2))
    assert parse_since("2025-05-01T12:00+02:00") == datetime(2025, 5, 1, 10, tzinfo=UTC)
    assert parse_since(datetime(2025, 5, 1, 12, tzinfo=plus2)) == datetime(2025, 5, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize("bad", ["yesterday", "1y", "-1h", "", "10"])
def test_bad_since_says_what_is_accepted(bad: str) -> None:
    with pytest.raises(MonitoringError, match=r"30m, 1h, 2d or 1w"):
        parse_since(bad)


def test_window_spec_needs_rows_or_a_start() -> None:
    with pytest.raises(MonitoringError, match="number of rows"):
        WindowSpec()
    with pytest.raises(MonitoringError, match="at least 1 row"):
        WindowSpec(rows=0)
    spec = WindowSpec(rows=500, since=NOW)
    assert spec.describe() == "last 500 rows, since 2025-05-01T12:00:00+00:00"
    assert spec.to_dict() == {"rows": 500, "since": NOW.isoformat(), "until": None}


@pytest.mark.parametrize(
    ("value", "key"),
    [(1, "1"), (1.0, "1"), ("1", "1"), (True, "1"), (False, "0"), (np.int64(3), "3"), (np.float64(2.0), "2"),
     ("fraud", "fraud"), (2.5, "2.5"), (None, None), (float("nan"), None)],
)  # fmt: skip
def test_labels_have_one_spelling(value: object, key: str | None) -> None:
    assert label_key(value) == key


def test_split_window_maps_features_and_outputs() -> None:
    recs = [
        PredictionRecord(
            "a", "m", "1", {"amount": 3.0, "country": "DE", "prediction": 7}, 1, {"0": 0.2, "1": 0.8}
        ),
        PredictionRecord(
            "b", "m", "1", {"amount": 1.0, "country": "FR", "prediction": 8}, 0, {"0": 0.9, "1": 0.1}
        ),
    ]
    frame = records_to_frame(recs)
    assert "feature_prediction" in frame.columns  # the log renames a feature that shadows a fixed column
    feats, outputs = split_window(
        frame, ["amount", "country", "prediction", "absent"], task="classification", classes=[0, 1]
    )
    assert list(feats.columns) == ["amount", "country", "prediction"]
    assert feats["prediction"].tolist() == [7, 8]
    assert outputs["prediction"].tolist() == ["1", "0"]
    assert outputs["score"].tolist() == [0.8, 0.1]


def test_split_window_for_regressors_and_multiclass() -> None:
    frame = records_to_frame([PredictionRecord("a", "m", "1", {"x": 1.0}, 2.5)])
    _, outputs = split_window(frame, ["x"], task="regression", classes=None)
    assert outputs["prediction"].tolist() == [2.5] and "score" not in outputs
    frame = records_to_frame(
        [PredictionRecord("a", "m", "1", {"x": 1.0}, "b", {"a": 0.1, "b": 0.7, "c": 0.2})]
    )
    _, outputs = split_window(frame, ["x"], task="classification", classes=["a", "b", "c"])
    assert outputs["prediction"].tolist() == ["b"] and "score" not in outputs
    assert isinstance(outputs, pd.DataFrame)
