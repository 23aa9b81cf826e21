"""Reading the files `mloop drift` compares: Parquet column by column, as pandas reads it whole."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mloop.errors import MonitoringError
from mloop.monitoring.io import load_reference, read_table


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "amount": [1.5, 2.0, None, 4.25],
            "country": ["fr", None, "de", "fr"],
            "tier": pd.Categorical(["a", "b", "a", "c"]),
            "seen": pd.to_datetime(["2024-01-01", "2024-01-02", None, "2024-01-04"]),
            "count": [1, 2, 3, 4],
        },
        index=pd.Index([10, 11, 12, 13], name="txn_id"),
    )


@pytest.mark.parametrize("stored_index", ["named", "range", "none"])
def test_parquet_reads_as_pandas_reads_it_without_the_stored_index(tmp_path: Path, stored_index: str) -> None:
    frame = _frame() if stored_index == "named" else _frame().reset_index(drop=True)
    path = tmp_path / "window.parquet"
    frame.to_parquet(path, index=None if stored_index != "none" else False)
    got = read_table(path)
    expected = pd.read_parquet(path).reset_index(drop=True)
    assert list(got.columns) == ["amount", "country", "tier", "seen", "count"]
    pd.testing.assert_frame_equal(got, expected)
    assert load_reference(path).equals(got)


def test_a_file_that_is_not_parquet_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(MonitoringError, match=r"Cannot read .*broken\.parquet.* as parquet"):
        read_table(path)
