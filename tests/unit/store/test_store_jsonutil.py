"""JSON encoding of model outputs and data values for the store and the prediction log."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mloop.store.jsonutil import dumps, to_jsonable


def test_numpy_and_datetimes_become_plain_values() -> None:
    value = {"a": np.int64(3), "b": np.array([1.5, 2.0]), "c": datetime(2024, 1, 2, tzinfo=UTC), 4: (1, 2)}
    assert to_jsonable(value) == {"a": 3, "b": [1.5, 2.0], "c": "2024-01-02T00:00:00+00:00", "4": [1, 2]}


def test_non_finite_floats_become_null_so_postgres_accepts_them() -> None:
    assert json.loads(dumps([math.nan, math.inf, np.float32("nan"), 1.0])) == [None, None, None, 1.0]


def test_unknown_types_raise_type_error() -> None:
    with pytest.raises(TypeError, match="object"):
        dumps({"x": object()})


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        max_leaves=20,
    )
)
def test_dumps_always_produces_valid_json(value: object) -> None:
    json.loads(dumps(value))
