"""The data contract: inference, serialisation, hashing, validation rules and policies, coercion."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mloop.config import ContractSettings
from mloop.data import ColumnSpec, DataContract, coerce_frame, infer_contract, validate
from mloop.errors import ContractViolation, DataError


@pytest.fixture
def train() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": [20, 30, 40, 50],
            "amount": [1.5, 2.5, np.nan, 10.0],
            "member": [True, False, True, True],
            "city": ["paris", "rome", "paris", "oslo"],
            "note": ["a", "b", "c", "d"],
            "when": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]),
            "label": [0, 1, 0, 1],
        }
    )


@pytest.fixture
def contract(train: pd.DataFrame) -> DataContract:
    return infer_contract(train, target="label", task="classification", max_categories=3)


def _policy(**kwargs: object) -> ContractSettings:
    return ContractSettings(**kwargs)


# ---- inference -----------------------------------------------------------------------------------
def test_infer_types_nullability_ranges_categories(contract: DataContract) -> None:
    kinds = {c.name: c.dtype for c in contract.columns}
    assert kinds == {
        "age": "int",
        "amount": "float",
        "member": "bool",
        "city": "category",
        "note": "string",
        "when": "datetime",
        "label": "int",
    }
    assert contract.column("city").categories == ("oslo", "paris", "rome")
    assert contract.column("age").min == 20 and contract.column("age").max == 50
    assert contract.column("amount").nullable and not contract.column("age").nullable
    assert contract.column("amount").max == 10.0
    assert contract.feature_columns == ["age", "amount", "member", "city", "note", "when"]
    assert contract.target == "label" and contract.task == "classification"


def test_infer_reads_objects_from_json_like_records() -> None:
    df = pd.DataFrame({"n": pd.Series([1, 2], dtype=object), "f": pd.Series([True, None], dtype=object)})
    contract = infer_contract(df, target=None)
    assert contract.column("n").dtype == "int"
    assert contract.column("f").dtype == "bool" and contract.column("f").nullable


def test_infer_drop_columns_and_errors(train: pd.DataFrame) -> None:
    contract = infer_contract(train, target="label", drop_columns=["note"])
    assert "note" not in contract
    with pytest.raises(DataError, match="Did you mean 'label'"):
        infer_contract(train, target="lable")
    with pytest.raises(DataError, match="Did you mean 'note'"):
        infer_contract(train, target="label", drop_columns=["nots"])
    with pytest.raises(DataError, match="also listed in drop_columns"):
        infer_contract(train, target="label", drop_columns=["label"])
    with pytest.raises(DataError, match="empty data"):
        infer_contract(train.iloc[:0], target="label")
    with pytest.raises(DataError, match="strings"):
        infer_contract(pd.DataFrame({0: [1]}), target=None)


# ---- serialisation -------------------------------------------------------------------------------
def test_round_trips_and_hash(contract: DataContract, tmp_path: Path) -> None:
    assert DataContract.from_dict(contract.to_dict()) == contract
    assert DataContract.from_json(contract.to_json()) == contract
    path = contract.save(tmp_path / "sub" / "contract.json")
    loaded = DataContract.load(path)
    assert loaded == contract and loaded.hash() == contract.hash()
    assert len(contract.hash()) == 64
    assert json.loads(contract.to_json())["columns"][0]["name"] == "age"
    narrower = DataContract(
        tuple(
            ColumnSpec(c.name, c.dtype, c.nullable, c.min, 45.0 if c.name == "age" else c.max, c.categories)
            for c in contract.columns
        ),
        target="label",
        task="classification",
    )
    assert narrower.hash() != contract.hash()


def test_without_target_and_column_lookup(contract: DataContract) -> None:
    features = contract.without_target()
    assert features.target is None and "label" not in features
    assert features.feature_columns == contract.feature_columns
    with pytest.raises(DataError, match="Did you mean 'amount'"):
        contract.column("amout")


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"columns": [{"name": "x", "dtype": "integer", "nullable": False}]}, "Did you mean 'int'"),
        ({"columns": [{"name": "x", "dtype": "int"}]}, "nullable"),
        ({"columns": [{"name": "x", "dtype": "int", "nullable": False, "mn": 1}]}, "Did you mean 'min'"),
        (
            {"columns": [{"name": "x", "dtype": "int", "nullable": False, "min": 3, "max": 1}]},
            "greater than max",
        ),
        ({"columns": [{"name": "x", "dtype": "int", "nullable": False}], "target": "y"}, "target 'y'"),
        ({"columns": [{"name": "x", "dtype": "int", "nullable": False}] * 2}, "twice"),
        ({"columns": [], "version": 99}, "upgrade mloop"),
        ({"cols": []}, "'columns' list"),
        ({"columns": [{"name": "a\nb", "dtype": "int", "nullable": False}]}, "printable"),
        ({"columns": [{"name": "a\x00", "dtype": "int", "nullable": False}]}, "printable"),
        ({"columns": [{"name": "a\u200b", "dtype": "int", "nullable": False}]}, "printable"),
        ({"columns": [{"name": "a" * 257, "dtype": "int", "nullable": False}]}, "at most 256"),
        ({"columns": [{"name": 3, "dtype": "int", "nullable": False}]}, "non-empty string"),
        ({"columns": [{"name": "x", "dtype": "object", "nullable": False}]}, "expected one of"),
    ],
)
def test_from_dict_rejects_bad_contracts(payload: dict[str, object], needle: str) -> None:
    with pytest.raises(DataError, match=re.escape(needle)):
        DataContract.from_dict(payload)


def test_column_names_may_be_any_printable_text_up_to_the_limit() -> None:
    names = ["amount (EUR)", "größe", "日付", "a b", "x" * 256]
    contract = DataContract(tuple(ColumnSpec(n, "float", False) for n in names), target=None)
    assert DataContract.from_json(contract.to_json()).names == names


def test_load_errors(tmp_path: Path) -> None:
    (tmp_path / "contract.json").write_text("{}")
    with pytest.raises(DataError, match=re.escape("Did you mean 'contract.json'")):
        DataContract.load(tmp_path / "contrakt.json")
    with pytest.raises(DataError, match="not a valid data contract"):
        DataContract.load(tmp_path / "contract.json")
    (tmp_path / "broken.json").write_text("{nope")
    with pytest.raises(DataError, match="must be JSON"):
        DataContract.load(tmp_path / "broken.json")


# ---- validation ----------------------------------------------------------------------------------
def test_clean_data_passes_coerced_ordered_and_extra_dropped(
    contract: DataContract, train: pd.DataFrame
) -> None:
    raw = train.astype({"age": str}).assign(extra=1)[[*reversed(train.columns), "extra"]]
    result = validate(raw, contract, _policy())
    assert list(result.data.columns) == contract.names
    assert result.data["age"].dtype == np.int64
    assert str(result.data["city"].dtype) == "str"
    assert result.report.ok and result.report.dropped_rows == 0
    [extra] = result.report.violations
    assert (extra.column, extra.rule, extra.action) == ("extra", "extra_column", "warn")


def test_dtype_rule_fail_drop_warn(contract: DataContract, train: pd.DataFrame) -> None:
    bad = train.astype({"age": object})
    bad.loc[1, "age"] = "thirty"
    with pytest.raises(ContractViolation) as info:
        validate(bad, contract, _policy())
    report = info.value.report
    assert not report.ok
    [v] = report.failures
    assert (v.column, v.rule, v.count, v.examples) == ("age", "dtype", 1, ("thirty",))
    assert "'age'" in str(info.value) and "contract.on_dtype" in str(info.value)
    dropped = validate(bad, contract, _policy(on_dtype="drop"))
    assert len(dropped.data) == 3 and dropped.report.dropped_rows == 1
    assert list(dropped.data.index) == [0, 2, 3]
    warned = validate(bad, contract, _policy(on_dtype="warn"))
    assert len(warned.data) == 4 and pd.isna(warned.data.loc[1, "age"])


def test_null_rule(contract: DataContract, train: pd.DataFrame) -> None:
    holes = train.copy()
    holes.loc[0, "city"] = None
    holes["age"] = holes["age"].astype("float64")
    holes.loc[2, "age"] = np.nan
    dropped = validate(holes, contract, _policy())  # default: drop
    assert list(dropped.data.index) == [1, 3]
    assert dropped.data["age"].dtype == np.int64
    assert {(v.column, v.rule) for v in dropped.report.violations} == {("city", "null"), ("age", "null")}
    with pytest.raises(ContractViolation, match=re.escape("contract.on_null")):
        validate(holes, contract, _policy(on_null="fail"))
    kept = validate(holes, contract, _policy(on_null="warn"))
    assert len(kept.data) == 4 and str(kept.data["age"].dtype) == "Int64"


def test_range_rule_and_tolerance(contract: DataContract, train: pd.DataFrame) -> None:
    wide = train.assign(age=[20, 30, 55, 90])
    warned = validate(wide, contract, _policy())  # default: warn
    [v] = warned.report.by_rule("range")
    assert (v.column, v.count, v.examples, v.action) == ("age", 2, (55, 90), "warn")
    assert len(warned.data) == 4
    assert len(validate(wide, contract, _policy(on_range="drop")).data) == 2
    with pytest.raises(ContractViolation) as info:
        validate(wide, contract, _policy(on_range="fail"))
    assert "contract.on_range" in str(info.value) and "'age'" in str(info.value) and "90" in str(info.value)
    # 30% of the 30-year span widens the range to [11, 59]: only 90 stays outside.
    tolerant = validate(wide, contract, _policy(range_tolerance=0.3))
    assert tolerant.report.by_rule("range")[0].count == 1


def test_category_rule(contract: DataContract, train: pd.DataFrame) -> None:
    new = train.assign(city=["paris", "lima", "lima", "oslo"])
    warned = validate(new, contract, _policy())
    [v] = warned.report.by_rule("category")
    assert (v.count, v.examples) == (2, ("lima",))
    assert list(validate(new, contract, _policy(on_category="drop")).data.index) == [0, 3]
    with pytest.raises(ContractViolation, match="lima"):
        validate(new, contract, _policy(on_category="fail"))


def test_missing_column_rule(contract: DataContract, train: pd.DataFrame) -> None:
    with pytest.raises(ContractViolation, match="missing"):
        validate(train.drop(columns=["city"]), contract, _policy())
    filled = validate(train.drop(columns=["city"]), contract, _policy(on_missing_column="warn"))
    assert filled.data["city"].isna().all() and len(filled.data) == 4
    renamed = train.rename(columns={"amount": "amout"})
    with pytest.raises(ContractViolation, match=re.escape("Did you mean 'amout'")):
        validate(renamed, contract, _policy())


def test_target_rules(contract: DataContract, train: pd.DataFrame) -> None:
    features = train.drop(columns=["label"])
    with pytest.raises(ContractViolation, match="'label'"):
        validate(features, contract, _policy(on_missing_column="warn"))
    scored = validate(features, contract, _policy(), require_target=False)
    assert list(scored.data.columns) == contract.feature_columns
    assert "label" in validate(train, contract, _policy(), require_target=False).data.columns


def test_empty_data_and_everything_dropped_fail(contract: DataContract, train: pd.DataFrame) -> None:
    with pytest.raises(ContractViolation, match="no rows") as info:
        validate(train.iloc[:0], contract, _policy(on_empty="warn"))
    assert info.value.report.by_rule("empty")
    all_bad = train.assign(city=None)
    with pytest.raises(ContractViolation, match="all 4 rows were dropped"):
        validate(all_bad, contract, _policy())


def test_report_is_json_and_summary_is_for_people(contract: DataContract, train: pd.DataFrame) -> None:
    messy = train.assign(city=["paris", "lima", "rome", "oslo"], age=[20, 30, 40, 999], extra="x")
    report = validate(messy, contract, _policy()).report
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is True and data["rows_in"] == 4 and len(data["violations"]) == 3
    summary = report.summary()
    assert summary.count("\n") == 3
    for needle in ("'city'", "'lima'", "'age'", "999", "contract.on_range", "mloop.yaml"):
        assert needle in summary


def test_bool_and_datetime_values_are_read(contract: DataContract, train: pd.DataFrame) -> None:
    raw = train.astype({"member": str, "when": str})
    raw["member"] = ["yes", "no", "TRUE", "0"]
    result = validate(raw, contract, _policy())
    assert result.data["member"].tolist() == [True, False, True, False]
    assert result.data["when"].dtype.kind == "M"
    mixed = train.assign(
        when=["2024-01-01T00:00:00+01:00", "2024-01-02T00:00:00Z", "2024-01-03", "2024-01-04"]
    )
    assert validate(mixed, contract, _policy()).data["when"].dt.tz is not None
    nonsense = train.assign(member=["maybe", "no", "yes", "yes"])
    with pytest.raises(ContractViolation, match="maybe"):
        validate(nonsense, contract, _policy())


# ---- coerce_frame --------------------------------------------------------------------------------
def test_coerce_frame_fast_path_and_casting(contract: DataContract, train: pd.DataFrame) -> None:
    clean = validate(train, contract, _policy()).data
    assert coerce_frame(clean, contract) is clean
    records = pd.DataFrame(
        [{"city": "rome", "age": "41", "amount": "2", "member": 1, "note": 5, "when": "2024-02-01", "zzz": 0}]
    )
    out = coerce_frame(records, contract.without_target())
    assert list(out.columns) == contract.feature_columns
    assert out["age"].dtype == np.int64 and out["amount"].dtype == np.float64
    assert out.loc[0, "note"] == "5" and bool(out.loc[0, "member"]) is True


def test_coerce_frame_errors(contract: DataContract) -> None:
    features = contract.without_target()
    row = {"age": 1, "amount": 1.0, "member": True, "city": "rome", "note": "n", "when": "2024-01-01"}
    with pytest.raises(
        DataError, match=re.escape("'amount' required by the data contract. Did you mean 'amont'")
    ):
        coerce_frame(
            pd.DataFrame([{**{k: v for k, v in row.items() if k != "amount"}, "amont": 1.0}]), features
        )
    with pytest.raises(DataError, match="expects int values; 1 could not be read"):
        coerce_frame(pd.DataFrame([{**row, "age": 1.5}]), features)
