"""Serving and batch enforce the contract through one function and refuse exactly the same rows.

A hostile sample — NUL in text, integers beyond 64 bits, NaN and infinities, wrong types, unknown
categories, missing columns, oversized text — is sent once as prediction requests (one per row) and
once as a batch frame (the stream scorer reads the same frame). The rows refused must be the same
set, under both the ``flag`` and the ``reject`` policies, and every valid row must pass both.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mloop.batch import ROW, Scorer
from mloop.data import ColumnSpec, DataContract, infer_contract
from mloop.data.enforce import MAX_TEXT_CHARS
from mloop.errors import RequestValidationError
from mloop.serving import ContractValidator

TRAIN = pd.DataFrame(
    {
        "amount": [1.0, 120.5, 260.0, 500.0],
        "hour": [0, 5, 12, 23],
        "country": ["DE", "FR", "US", "DE"],
        "note": ["a", None, "b", "c"],  # free text (nullable): many distinct values
        "card_present": [True, False, True, False],
        "when": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]),
        "label": [0, 0, 1, 1],
    }
)


def _contract(task: str | None = None) -> DataContract:
    """The training frame's contract, with ``note`` as free text (too few rows to infer it)."""
    inferred = infer_contract(TRAIN, target="label", task=task)
    columns = tuple(
        ColumnSpec("note", "string", nullable=True) if c.name == "note" else c for c in inferred.columns
    )
    return replace(inferred, columns=columns)


GOOD: dict[str, Any] = {
    "amount": 42.0,
    "hour": 7,
    "country": "FR",
    "note": "regular customer",
    "card_present": True,
    "when": "2024-01-02T10:00:00",
}
HOSTILE: list[tuple[str, Any]] = [
    ("hour", 2**64 - 1),
    ("hour", 2**63),
    ("hour", -(2**63) - 1),
    ("hour", 3.5),
    ("hour", "3"),
    ("hour", None),
    ("hour", float("nan")),
    ("amount", float("nan")),
    ("amount", float("inf")),
    ("amount", float("-inf")),
    ("amount", "12.5"),
    ("amount", True),
    ("amount", [1.0]),
    ("amount", {"v": 1}),
    ("amount", 10**400),
    ("amount", 1e9),  # outside the training range
    ("country", "DE\u0000"),
    ("country", "XX"),  # unknown category
    ("country", 7),
    ("country", "x" * (MAX_TEXT_CHARS + 1)),
    ("note", "ok\u0000ok"),
    ("note", "n" * (MAX_TEXT_CHARS + 1)),
    ("note", None),  # allowed: the column is nullable
    ("note", 12),
    ("card_present", "yes"),
    ("card_present", 2),
    ("card_present", None),
    ("when", "not a date"),
    ("when", "2024-02-30T00:00:00"),
    ("when", 1704067200),
]


class _Constant:
    """A model that answers 0 for every row (the test is about which rows reach it)."""

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.zeros(len(frame), dtype="int64")


def _sample() -> tuple[list[dict[str, Any]], list[tuple[str, str, Any]]]:
    """Shuffled records, and what each is: ("valid" | "hostile" | "missing", field, value)."""
    rows: list[tuple[dict[str, Any], tuple[str, str, Any]]] = []
    for i in range(40):  # valid rows between the hostile ones
        rows.append(({**GOOD, "amount": float(10 + i), "hour": i % 24}, ("valid", "", None)))
    for field, value in HOSTILE:
        rows.append(({**GOOD, field: value}, ("hostile", field, value)))
    for field in GOOD:  # a missing column in one row each
        rows.append(({k: v for k, v in GOOD.items() if k != field}, ("missing", field, None)))
    order = np.random.default_rng(0).permutation(len(rows))
    return [rows[i][0] for i in order], [rows[i][1] for i in order]


def _serving_refused(records: list[dict[str, Any]], **policy: Any) -> set[int]:
    validator = ContractValidator(_contract(), **policy)
    refused = set()
    for i, record in enumerate(records):
        try:
            validator.from_records([record])
        except RequestValidationError:
            refused.add(i)
    return refused


def _batch_refused(records: list[dict[str, Any]], **policy: Any) -> set[int]:
    scorer = Scorer(_Constant(), _contract("regression"), name="m", version="1", **policy)
    out = scorer.score(pd.DataFrame.from_records(records))
    assert len(out.scored) + len(out.rejected) == len(records)
    return set(out.rejected[ROW].tolist())


@pytest.mark.parametrize(
    "policy",
    [{}, {"unseen_category": "reject", "out_of_range": "reject"}],
    ids=["flag", "reject"],
)
def test_serving_and_batch_refuse_exactly_the_same_rows_of_a_hostile_sample(policy: dict[str, Any]) -> None:
    records, what = _sample()
    serving = _serving_refused(records, **policy)
    batch = _batch_refused(records, **policy)
    assert serving == batch, {
        "only serving": [what[i] for i in sorted(serving - batch)],
        "only batch": [what[i] for i in sorted(batch - serving)],
    }
    # Which rows: every valid one passes; every hostile one is refused, except what the contract allows
    # (a missing note: nullable) and what the policy only flags (range, unseen category).
    allowed = {("note", "None"), ("note", "missing")}
    if not policy:
        allowed |= {("amount", "1000000000.0"), ("country", "'XX'"), ("country", "7")}
    expected = {
        i
        for i, (kind, field, value) in enumerate(what)
        if kind != "valid" and (field, "missing" if kind == "missing" else repr(value)) not in allowed
    }
    assert serving == expected, {
        "refused but allowed": [what[i] for i in sorted(serving - expected)],
        "passed but hostile": [what[i] for i in sorted(expected - serving)],
    }


def test_a_csv_text_column_is_parsed_in_batch_as_training_did() -> None:
    """The one documented difference in reading (not in rules): text columns of a file are parsed."""
    scorer = Scorer(_Constant(), _contract("regression"), name="m", version="1")
    frame = pd.DataFrame([GOOD] * 3).astype({"amount": "str", "hour": "str"})
    frame.loc[1, "amount"] = "abc"
    frame.loc[2, "hour"] = "18446744073709551615"
    out = scorer.score(frame)
    assert set(out.rejected[ROW]) == {1, 2}
