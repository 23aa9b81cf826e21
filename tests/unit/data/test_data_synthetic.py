"""The synthetic fraud generator: schema, determinism, chunking, label quality and each scenario."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from mloop.data.synthetic import (
    CATEGORIES,
    COLUMNS,
    MISSING_COLUMNS,
    NEW_CATEGORY,
    SCENARIOS,
    generate_fraud,
    iter_fraud,
)
from mloop.errors import DataError

FEATURES = [
    "amount",
    "merchant_category",
    "country",
    "hour",
    "device",
    "customer_age",
    "txn_count_24h",
    "avg_amount_30d",
    "account_age_days",
]
KNOWN = {"merchant_category": [*CATEGORIES, NEW_CATEGORY], "country": None, "device": None}


def _matrix(df: pd.DataFrame, levels: dict[str, list[str]]) -> pd.DataFrame:
    x = df[FEATURES].copy()
    for col, cats in levels.items():
        x[col] = pd.Categorical(x[col], categories=cats)
    return x


@pytest.fixture(scope="module")
def baseline_model() -> tuple[HistGradientBoostingClassifier, dict[str, list[str]]]:
    """One fixed model trained on the ``none`` scenario, reused by the drift tests."""
    train = generate_fraud(12_000, seed=11)
    levels = {c: sorted(set(train[c])) if cats is None else cats for c, cats in KNOWN.items()}
    model = HistGradientBoostingClassifier(
        max_iter=30,
        learning_rate=0.2,
        early_stopping=False,
        random_state=0,
        categorical_features="from_dtype",
    )
    model.fit(_matrix(train, levels), train["is_fraud"])
    return model, levels


def _auc(
    model_and_levels: tuple[HistGradientBoostingClassifier, dict[str, list[str]]], df: pd.DataFrame
) -> float:
    model, levels = model_and_levels
    return float(roc_auc_score(df["is_fraud"], model.predict_proba(_matrix(df, levels))[:, 1]))


def test_schema_types_and_ranges() -> None:
    df = generate_fraud(5_000, seed=1)
    assert list(df.columns) == list(COLUMNS)
    assert len(df) == 5_000
    assert df["transaction_id"].is_unique
    assert df["timestamp"].dtype.kind == "M" and df["timestamp"].is_monotonic_increasing
    assert (df["amount"] > 0).all()
    assert df["hour"].between(0, 23).all() and df["hour"].nunique() == 24
    assert (df["hour"] == df["timestamp"].dt.hour).all()
    assert df["customer_age"].between(18, 90).all()
    assert set(df["merchant_category"]) == set(CATEGORIES)
    assert set(df["device"]) <= {"mobile", "desktop", "tablet"}
    assert set(df["is_fraud"]) == {0, 1}
    for col in ("hour", "customer_age", "txn_count_24h", "account_age_days", "is_fraud"):
        assert df[col].dtype == np.int64, col
    assert df.notna().all().all()


def test_customers_number_in_thousands_and_fraud_rate_near_target() -> None:
    df = generate_fraud(20_000, seed=2)
    assert 1_000 < df["customer_id"].nunique() <= 4_000
    assert 0.02 < df["is_fraud"].mean() < 0.045
    assert 0.07 < generate_fraud(20_000, seed=2, fraud_rate=0.1)["is_fraud"].mean() < 0.13


def test_same_seed_same_data_other_seed_other_data() -> None:
    a, b = generate_fraud(2_000, seed=5), generate_fraud(2_000, seed=5)
    pd.testing.assert_frame_equal(a, b)
    c = generate_fraud(2_000, seed=6)
    assert not a["amount"].equals(c["amount"])
    assert set(a["transaction_id"]).isdisjoint(c["transaction_id"])


def test_chunks_concatenate_to_the_whole_dataset() -> None:
    whole = generate_fraud(40_000, seed=3, scenario="new_category")
    chunks = list(iter_fraud(40_000, 7_777, seed=3, scenario="new_category"))
    assert [len(c) for c in chunks] == [7_777] * 5 + [40_000 - 5 * 7_777]
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), whole)


def test_zero_rows_gives_empty_frame_with_columns() -> None:
    df = generate_fraud(0)
    assert df.empty and list(df.columns) == list(COLUMNS)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"rows": -1}, "rows"),
        ({"rows": 10, "fraud_rate": 1.5}, "fraud_rate"),
        ({"rows": 10, "start": "nope"}, "start"),
    ],
)
def test_bad_arguments_are_data_errors(kwargs: dict[str, object], needle: str) -> None:
    rows = kwargs.pop("rows")
    with pytest.raises(DataError, match=needle):
        generate_fraud(rows, **kwargs)


def test_bad_chunk_size() -> None:
    with pytest.raises(DataError, match="chunk_rows"):
        list(iter_fraud(10, 0))


def test_unknown_scenario_lists_known_ones_and_suggests() -> None:
    with pytest.raises(DataError) as info:
        generate_fraud(10, scenario="covariate-shift")
    assert "Did you mean 'covariate_shift'" in str(info.value)
    for name in SCENARIOS:
        assert name in str(info.value)


def test_start_sets_first_day() -> None:
    df = generate_fraud(100, start="2025-06-01")
    assert df["timestamp"].iloc[0].date().isoformat() == "2025-06-01"


def test_label_is_learnable_but_not_perfect(baseline_model) -> None:
    auc = _auc(baseline_model, generate_fraud(20_000, seed=12))
    assert 0.82 < auc < 0.97


def test_covariate_shift_moves_amounts_and_hours_not_the_rule(baseline_model) -> None:
    base = generate_fraud(10_000, seed=21)
    shifted = generate_fraud(10_000, seed=21, scenario="covariate_shift")
    assert shifted["amount"].mean() > 1.8 * base["amount"].mean()
    assert (shifted["hour"] < 6).mean() > 3 * (base["hour"] < 6).mean()
    assert set(shifted["merchant_category"]) == set(CATEGORIES)
    # Same rule: the baseline model still ranks fraud well on the shifted features.
    assert _auc(baseline_model, shifted) > 0.8


def test_new_category_appears_in_a_sizeable_share() -> None:
    base = generate_fraud(10_000, seed=22)
    new = generate_fraud(10_000, seed=22, scenario="new_category")
    assert NEW_CATEGORY not in set(base["merchant_category"])
    share = (new["merchant_category"] == NEW_CATEGORY).mean()
    assert 0.15 < share < 0.25


def test_concept_drift_keeps_features_but_breaks_the_old_model(baseline_model) -> None:
    base = generate_fraud(20_000, seed=23)
    drifted = generate_fraud(20_000, seed=23, scenario="concept_drift")
    # Feature distributions are those of ``none`` ...
    assert abs(np.log(drifted["amount"].mean() / base["amount"].mean())) < 0.1
    assert abs(drifted["hour"].mean() - base["hour"].mean()) < 0.5
    # ... but the label rule moved, so the fixed model's quality collapses.
    assert _auc(baseline_model, drifted) < _auc(baseline_model, base) - 0.25
    by_cat_base = base.groupby("merchant_category")["is_fraud"].mean()
    by_cat_drift = drifted.groupby("merchant_category")["is_fraud"].mean()
    assert by_cat_base["electronics"] > by_cat_base["grocery"]
    assert by_cat_drift["grocery"] > by_cat_drift["electronics"]


def test_missing_surge_blanks_several_columns() -> None:
    df = generate_fraud(10_000, seed=24, scenario="missing_surge")
    rates = df.isna().mean()
    assert len(MISSING_COLUMNS) >= 4
    for col in MISSING_COLUMNS:
        assert 0.17 < rates[col] < 0.43, (col, rates[col])
    assert rates.drop(list(MISSING_COLUMNS)).eq(0).all()
    assert str(df["customer_age"].dtype) == "Int64"
    assert generate_fraud(2_000, seed=24).isna().sum().sum() == 0
