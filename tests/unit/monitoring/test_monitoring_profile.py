"""Reference profiles: what they keep, that they stay bounded, and that they survive JSON."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mloop.errors import MonitoringError
from mloop.monitoring.profile import QUANTILE_BINS, ReferenceProfile, build_profile


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 5000
    x = rng.normal(10, 2, n)
    x[:50] = np.nan
    return pd.DataFrame(
        {
            "x": x,
            "k": rng.integers(0, 4, n),
            "flag": rng.random(n) < 0.3,
            "city": rng.choice(["paris", "rome", "oslo"], n),
            "zip": rng.integers(100, 105, n),
            "const": np.ones(n),
        }
    )


def test_profile_records_kinds_counts_and_quantiles(frame: pd.DataFrame) -> None:
    prof = build_profile(frame, categorical=["zip"], sample_rows=1000)
    x = prof["x"]
    assert (x.kind, x.numeric, x.count, x.n_missing) == ("numeric", True, 5000, 50)
    assert x.missing_rate == pytest.approx(0.01)
    assert len(x.quantiles) == QUANTILE_BINS + 1
    assert x.quantiles[0] == pytest.approx(np.nanmin(frame.x)) and x.quantiles[-1] == pytest.approx(
        np.nanmax(frame.x)
    )
    assert x.quantiles[500] == pytest.approx(np.nanmedian(frame.x))
    assert sum(x.hist_counts) == x.n_valid
    assert len(x.sample) == 1000 and not x.complete_sample
    assert prof["k"].levels == [0.0, 1.0, 2.0, 3.0] and sum(prof["k"].level_counts) == 5000
    assert prof["flag"].kind == "binary" and prof["flag"].numeric
    assert prof["city"].kind == "categorical" and set(prof["city"].levels) == {"paris", "rome", "oslo"}
    assert prof["zip"].kind == "categorical" and prof["zip"].source_numeric and "100" in prof["zip"].levels
    assert prof["const"].n_unique == 1 and prof["const"].std == 0.0


def test_profile_json_round_trip_and_bounded_size(frame: pd.DataFrame, tmp_path) -> None:
    big = pd.concat([frame] * 40, ignore_index=True)  # 200k rows
    prof = build_profile(big, sample_rows=500, joint_rows=500)
    path = prof.save(tmp_path / "p" / "profile.json")
    again = ReferenceProfile.load(path)
    assert again.to_dict() == prof.to_dict()
    assert again.rows == 200_000
    # Bounded by sample_rows, quantile grid and levels: independent of the number of rows.
    assert len(path.read_bytes()) < 200_000
    assert json.loads(path.read_text())["version"] == 1


def test_categories_beyond_the_cap_are_counted_as_other() -> None:
    labels = [f"v{i}" for i in range(1500)]
    prof = build_profile(pd.DataFrame({"c": labels + ["v0"] * 10}))
    col = prof["c"]
    assert len(col.levels) == 1000 and col.levels[0] == "v0"
    assert col.other_count == 500 and sum(col.level_counts) + col.other_count == col.n_valid


def test_all_missing_and_empty_columns_have_defined_profiles() -> None:
    prof = build_profile(
        pd.DataFrame({"a": [np.nan] * 5, "b": [None] * 5}, dtype=object).astype({"a": float})
    )
    assert prof["a"].n_valid == 0 and prof["a"].quantiles == [] and prof["a"].missing_rate == 1.0
    assert prof["b"].n_valid == 0
    empty = build_profile(pd.DataFrame({"a": pd.Series([], dtype=float)}))
    assert empty["a"].count == 0 and empty["a"].missing_rate == 0.0


def test_profile_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(MonitoringError, match="categorical names columns"):
        build_profile(pd.DataFrame({"a": [1]}), categorical=["b"])
    with pytest.raises(MonitoringError, match="does not exist"):
        ReferenceProfile.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(MonitoringError, match="JSON object"):
        ReferenceProfile.load(bad)
