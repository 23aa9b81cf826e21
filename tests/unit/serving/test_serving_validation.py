"""The contract validator: types, missing fields, ranges, categories, shapes, one entry per field."""

from __future__ import annotations

import pytest

from mloop.data import infer_contract
from mloop.errors import RequestValidationError
from mloop.serving import ContractValidator
from testkit.toy_model import RECORD, frame


def validator(**kw: str) -> ContractValidator:
    return ContractValidator(infer_contract(frame(), target="label"), **kw)


def errors_of(call) -> list[dict]:
    with pytest.raises(RequestValidationError) as info:
        call()
    return info.value.errors


def test_valid_record_is_coerced_in_contract_order() -> None:
    cols = validator().from_records([{"country": "FR", "hour": 4.0, "amount": 12}])
    assert list(cols.values) == ["amount", "hour", "country"]
    assert cols.values["amount"] == [12.0] and isinstance(cols.values["amount"][0], float)
    assert cols.values["hour"] == [4] and isinstance(cols.values["hour"][0], int)
    assert cols.flags == [None]


def test_each_offending_field_gets_one_entry_with_rule_value_and_allowed() -> None:
    errs = errors_of(lambda: validator().from_records([{"amount": "abc", "hour": None}]))
    by_field = {e["field"]: e for e in errs}
    assert set(by_field) == {"amount", "hour", "country"}
    assert by_field["amount"]["rule"] == "type" and by_field["amount"]["received"] == "abc"
    assert by_field["amount"]["allowed"] == "a number"
    assert by_field["hour"]["rule"] == "null"
    assert by_field["country"]["rule"] == "missing"


def test_rows_of_one_field_are_grouped_in_one_entry() -> None:
    rows = [{**RECORD, "hour": 1.5}, RECORD, {**RECORD, "hour": "x"}]
    (err,) = errors_of(lambda: validator().from_records(rows))
    assert err["field"] == "hour" and err["rows"] == [0, 2] and err["count"] == 2


def test_range_and_category_reject_or_flag_by_policy() -> None:
    bad = {**RECORD, "amount": 1e9, "country": "XX"}
    flagged = validator().from_records([bad])
    assert flagged.flags[0] == {"out_of_range": ["amount"], "unseen_category": ["country"]}
    errs = errors_of(lambda: validator(out_of_range="reject", unseen_category="reject").from_records([bad]))
    rules = {(e["field"], e["rule"]) for e in errs}
    assert rules == {("amount", "range"), ("country", "category")}
    assert "DE" in next(e["allowed"] for e in errs if e["rule"] == "category")


@pytest.mark.parametrize("value", [True, "1", [1], {"a": 1}])
def test_numbers_refuse_other_types(value: object) -> None:
    (err,) = errors_of(lambda: validator().from_records([{**RECORD, "amount": value}]))
    assert err["rule"] == "type"


def test_positional_rows_follow_contract_order_and_length() -> None:
    cols = validator().from_rows([[10.0, 5, "US"]])
    assert cols.record(0) == {"amount": 10.0, "hour": 5, "country": "US"}
    (err,) = errors_of(lambda: validator().from_rows([[10.0, 5]]))
    assert err["rule"] == "length" and "amount, hour, country" in err["allowed"]


def test_non_object_records_are_shape_errors() -> None:
    (err,) = errors_of(lambda: validator().from_records([1]))
    assert err["rule"] == "shape"
