"""The Scorer: contract rules per row, reasons, flags, and the same predictions as the online runtime."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mloop.batch import REASON, ROW, Scorer, parse_model_ref
from mloop.data import generate_fraud
from mloop.errors import ConfigError, DataError


@pytest.fixture
def rows() -> pd.DataFrame:
    return generate_fraud(200, seed=9).drop(columns=["is_fraud"])


def test_every_row_is_scored_or_rejected_once_with_a_reason(fraud_scorer: Scorer, rows: pd.DataFrame) -> None:
    rows = rows.astype({"amount": object, "hour": object})
    rows.loc[3, "amount"] = "abc"
    rows.loc[4, "amount"] = float("inf")
    rows.loc[5, "hour"] = None
    rows.loc[6, "country"] = "XX"
    rows.loc[7, "amount"] = 1e9
    out = fraud_scorer.score(rows, row_offset=1000)
    assert sorted(out.scored[ROW].tolist() + out.rejected[ROW].tolist()) == list(range(1000, 1200))
    reasons = dict(zip(out.rejected[ROW], out.rejected[REASON], strict=True))
    assert set(reasons) == {1003, 1004, 1005}
    assert reasons[1003].startswith("amount: type (got 'abc'")
    assert "amount: type" in reasons[1004]
    assert reasons[1005].startswith("hour: missing")
    # The rejected side keeps the input values (as text) so the row can be fixed and replayed.
    assert out.rejected.set_index(ROW).loc[1003, "amount"] == "abc"
    flags = out.scored.set_index(ROW)["flags"]
    assert json.loads(flags[1006]) == {"unseen_category": ["country"]}
    assert json.loads(flags[1007]) == {"out_of_range": ["amount"]}
    assert flags.drop([1006, 1007]).isna().all()


def test_reject_policies_turn_flags_into_rejections(fraud_scorer: Scorer, rows: pd.DataFrame) -> None:
    strict = Scorer(
        fraud_scorer.model,
        fraud_scorer.contract,
        name="m",
        version="1",
        unseen_category="reject",
        out_of_range="reject",
    )
    rows.loc[0, "country"] = "XX"
    rows.loc[1, "amount"] = 1e9
    out = strict.score(rows)
    reasons = dict(zip(out.rejected[ROW], out.rejected[REASON], strict=True))
    assert reasons[0].startswith("country: category (got 'XX', expected one of:")
    assert reasons[1].startswith("amount: range (got 1000000000.0, expected between")
    assert len(out.scored) == 198


def test_predictions_match_the_serving_runtime(
    fraud_settings, fraud_scorer: Scorer, rows: pd.DataFrame
) -> None:
    from mloop.serving.runtime import ModelRuntime
    from mloop.tracking import Registry

    runtime = ModelRuntime(Registry(fraud_settings).load("@champion"))
    columns = runtime.validator.from_records(json.loads(rows.to_json(orient="records", date_format="iso")))
    expected, proba = runtime.predict_frame(runtime_frame := _frame(runtime, columns))
    assert len(runtime_frame) == len(rows)
    out = fraud_scorer.score(rows)
    assert out.scored["prediction"].tolist() == list(expected)
    np.testing.assert_allclose(
        out.scored[fraud_scorer.proba_columns].to_numpy(), np.asarray(proba), rtol=1e-12
    )


def _frame(runtime, columns):
    from mloop.serving.runtime import build_frame

    return build_frame(runtime.specs, [columns])


def test_a_missing_required_column_is_named_with_a_suggestion(
    fraud_scorer: Scorer, rows: pd.DataFrame
) -> None:
    with pytest.raises(DataError, match=r"lacks column\(s\) 'amount'.*Did you mean 'amnt'"):
        fraud_scorer.check_columns([c if c != "amount" else "amnt" for c in rows.columns])


def test_keep_selects_the_pass_through_columns(fraud_scorer: Scorer, rows: pd.DataFrame) -> None:
    out = fraud_scorer.score(rows, keep=["transaction_id"])
    assert list(out.scored.columns) == [ROW, "transaction_id", "prediction", "proba_0", "proba_1", "flags"]
    assert out.scored["transaction_id"].tolist() == rows["transaction_id"].tolist()


def test_an_empty_frame_gives_empty_outputs(fraud_scorer: Scorer, rows: pd.DataFrame) -> None:
    out = fraud_scorer.score(rows.iloc[:0])
    assert out.rows == 0 and len(out.scored.columns) > 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@champion", ("default", "@champion")),
        ("3", ("default", "3")),
        ("v4", ("default", "v4")),
        ("fraud@challenger", ("fraud", "@challenger")),
        ("fraud/7", ("fraud", "7")),
        ("challenger", ("default", "@challenger")),
    ],
)
def test_model_references(text: str, expected: tuple[str, str]) -> None:
    assert parse_model_ref(text, "default") == expected


@pytest.mark.parametrize("text", ["", "fraud/latest"])
def test_bad_model_references(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_model_ref(text, "default")
