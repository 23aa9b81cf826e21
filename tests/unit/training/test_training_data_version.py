"""The data version's content hash and its tags (mloop.training.data_version)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mloop.training.data_version import DataVersion, frame_hash


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "amount": [1.5, 2.0, np.nan, 4.25],
            "count": [1, 2, 3, 4],
            "city": ["Oslo", None, "Lima", "Pune"],
            "kind": pd.Categorical(["a", "b", "a", "b"]),
            "at": pd.to_datetime(["2024-01-01", "2024-01-02", None, "2024-01-04"]),
            "flag": [True, False, True, True],
        }
    )


def test_same_data_same_hash_and_the_index_does_not_count() -> None:
    a, b = _frame(), _frame()
    assert frame_hash(a) == frame_hash(b)
    assert len(frame_hash(a)) == 64
    assert frame_hash(b.set_axis([10, 11, 12, 13])) == frame_hash(a)


@pytest.mark.parametrize(
    "change",
    [
        lambda f: f.assign(count=[1, 2, 3, 5]),  # one cell
        lambda f: f.assign(city=["Oslo", None, "Lima", "Pun"]),  # one character of one text cell
        lambda f: f.assign(city=["Oslo", "", "Lima", "Pune"]),  # a missing value is not an empty string
        lambda f: f.assign(amount=[1.5, 2.0, 0.0, 4.25]),  # a missing number is not zero
        lambda f: f.rename(columns={"count": "n"}),  # a column name
        lambda f: f.astype({"count": "float64"}),  # a type
        lambda f: f[list(reversed(f.columns))],  # column order (documented: it counts)
        lambda f: f.iloc[::-1],  # row order (the split and the estimator see it)
        lambda f: f.iloc[:3],  # a row fewer
    ],
)
def test_any_change_gives_another_hash(change: object) -> None:
    assert callable(change)
    assert frame_hash(change(_frame())) != frame_hash(_frame())


def test_text_hashes_alike_in_object_and_str_dtypes() -> None:
    text = pd.DataFrame({"city": pd.Series(["Oslo", None, "Lima"], dtype="str")})
    objects = pd.DataFrame({"city": pd.Series(["Oslo", None, "Lima"], dtype=object)})
    assert frame_hash(text) == frame_hash(objects)


def test_a_parquet_round_trip_keeps_the_hash(tmp_path: Path) -> None:
    frame = _frame().assign(raw=pd.Series(["x", np.nan, "z", "w"], dtype=object))
    frame.to_parquet(tmp_path / "f.parquet", index=False)
    assert frame_hash(pd.read_parquet(tmp_path / "f.parquet")) == frame_hash(frame)


def test_a_csv_read_twice_hashes_the_same(tmp_path: Path) -> None:
    _frame().to_csv(tmp_path / "f.csv", index=False)
    assert frame_hash(pd.read_csv(tmp_path / "f.csv")) == frame_hash(pd.read_csv(tmp_path / "f.csv"))


def test_timestamps_hash_alike_whatever_their_unit() -> None:
    at = pd.Series(pd.to_datetime(["2024-01-01 10:00", "2024-01-02 00:00"]))
    assert frame_hash(pd.DataFrame({"at": at.dt.as_unit("us")})) == frame_hash(
        pd.DataFrame({"at": at.dt.as_unit("ns")})
    )


def test_nested_cells_and_empty_frames_hash() -> None:
    nested = pd.DataFrame({"tags": [["a"], ["b", "c"]], "meta": [{"k": 1}, {"k": 2}]})
    assert frame_hash(nested) == frame_hash(nested.copy())
    assert frame_hash(pd.DataFrame()) != frame_hash(pd.DataFrame({"a": []}))


def test_the_tags_read_back_to_the_same_version() -> None:
    version = DataVersion(
        hash="ab" * 32,
        rows=4,
        source="csv:/p/data/train.csv",
        mtime="2024-01-01T00:00:00+00:00",
        snapshot="runs:/r1/data/x.parquet",
        dvc_path="data/train.csv",
        dvc_rev="c" * 40,
        dvc_md5="d" * 32,
        dvc_clean=True,
        reproduced_from="abab",
    )
    tags = {**version.tags(), "mloop.data_source": version.source}
    assert DataVersion.from_tags(tags) == version
    assert DataVersion.from_tags({"mloop.data_hash": "x"}) is None
    ways = version.get_back()
    assert ways[0].startswith("mloop train --data-version abababababab")
    assert any(w.startswith("dvc get . data/train.csv --rev cccccccccccc") for w in ways)


def test_without_snapshot_or_committed_dvc_there_is_no_way_back() -> None:
    version = DataVersion(
        hash="ab" * 32, rows=4, source="dataframe", snapshot_note="training.snapshot is never"
    )
    assert version.get_back() == []
    dirty = DataVersion(
        hash="ab" * 32, rows=4, source="x", dvc_path="d.csv", dvc_rev="c" * 40, dvc_clean=False
    )
    assert dirty.get_back() == []
