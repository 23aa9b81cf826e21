"""Property tests: any valid contract survives JSON and dict round trips with the same hash."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mloop.data import DTYPES, ColumnSpec, DataContract

_names = st.text(min_size=1, max_size=12).filter(str.isprintable)  # contracts refuse control characters
_bounds = st.floats(allow_nan=False, allow_infinity=False, width=64)


@st.composite
def column_specs(draw: st.DrawFn, name: str) -> ColumnSpec:
    dtype = draw(st.sampled_from(DTYPES))
    low = high = None
    if dtype in ("int", "float") and draw(st.booleans()):
        low, high = sorted((draw(_bounds), draw(_bounds)))
    categories = None
    if dtype == "category":
        categories = tuple(sorted(draw(st.sets(st.text(max_size=8), max_size=6))))
    return ColumnSpec(name, dtype, draw(st.booleans()), low, high, categories)


@st.composite
def contracts(draw: st.DrawFn) -> DataContract:
    names = draw(st.lists(_names, min_size=1, max_size=6, unique=True))
    columns = tuple(draw(column_specs(n)) for n in names)
    target = draw(st.one_of(st.none(), st.sampled_from(names)))
    task = draw(st.one_of(st.none(), st.sampled_from(["classification", "regression"])))
    return DataContract(columns, target=target, task=task)


@settings(max_examples=150, deadline=None)
@given(contracts())
def test_json_round_trip_keeps_content_and_hash(contract: DataContract) -> None:
    again = DataContract.from_json(contract.to_json())
    assert again == contract
    assert again.hash() == contract.hash()
    assert DataContract.from_dict(contract.to_dict()) == contract
    assert again.feature_columns == contract.feature_columns


@settings(max_examples=60, deadline=None)
@given(contracts(), st.integers(min_value=0, max_value=5))
def test_hash_changes_when_a_column_changes(contract: DataContract, i: int) -> None:
    spec = contract.columns[i % len(contract.columns)]
    flipped = ColumnSpec(spec.name, spec.dtype, not spec.nullable, spec.min, spec.max, spec.categories)
    columns = tuple(flipped if c.name == spec.name else c for c in contract.columns)
    other = DataContract(columns, target=contract.target, task=contract.task)
    assert other.hash() != contract.hash()
