"""The contract's value rules, enforced by one function for serving, batch and stream scoring.

:meth:`ContractRules.enforce` takes the raw columns of some rows and returns, per contract column,
the values read as the column's type and the rows each rule refuses or flags. The serving validator
(:mod:`mloop.serving.validation`) and the batch/stream :class:`~mloop.batch.Scorer` both call it, so
a row refused online is refused in batch and the other way round.

How values are read depends on what holds them, never on who asks:

* **JSON-like values** — Python lists (a request), ``object`` columns (records from a stream or a
  JSON file) — are read strictly, one value at a time: a number column takes numbers (not ``"12.5"``,
  not ``true``), an integer column integers that fit in 64 bits, a text column strings. A request
  carries a few rows, where this plain loop costs less than building arrays.
* **Typed columns** (``int64``, ``float64``, ``bool``, ``datetime64``) are checked vectorised.
* **Text columns** of a file (pandas' string dtype, e.g. a CSV column) are parsed as the contract's
  type (``"12.5"`` is a number there), vectorised, with the training coercion
  (:func:`mloop.data.coerce.coerce_column`).

Then the same rules apply everywhere: ``type`` (not readable as the type; infinite numbers; integers
beyond 64 bits), ``text`` (text with a NUL character or longer than ``max_text_chars``), ``null`` /
``missing`` (no value in a column the model needs and the contract does not allow missing values; a
NaN counts as no value), ``range`` and ``category`` (outside the training range, unseen category:
refused or flagged following the ``out_of_range`` / ``unseen_category`` policy).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from mloop.data.coerce import STR_DTYPE, coerce_column
from mloop.data.schema import ColumnSpec, DataContract
from mloop.errors import DataError

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_TEXT_CHARS",
    "MISSING",
    "ColumnOutcome",
    "ColumnRules",
    "ContractRules",
    "Policy",
]

Policy = Literal["reject", "flag"]
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_TEXT_CHARS = 10_000
"""Longest text value accepted in a ``category`` or ``string`` column (characters)."""
MISSING: Any = object()
"""Marks a field absent from a record (distinct from an explicit null)."""
_NA_SCALARS = (pd.NA, pd.NaT)


class _Unreadable(Exception):
    """A value the column cannot take; ``rule`` names why."""

    rule = "type"


class _Bad(_Unreadable):
    """A value that cannot be read as the column's type."""


class _BadText(_Unreadable):
    """Text with a NUL character or longer than the cap."""

    rule = "text"


class _Null(_Unreadable):
    """A value that stands for "no value" (NaN)."""

    rule = "null"


def _read_float(v: Any) -> float:
    if type(v) is float:
        if v - v == 0.0:  # finite (inf - inf and nan - nan are nan)
            return v
        raise _Null if v != v else _Bad
    if type(v) is int:
        try:
            return float(v)
        except OverflowError:  # beyond float's range
            raise _Bad from None
    if isinstance(v, np.floating | np.integer) and not isinstance(v, bool):
        return _read_float(v.item())
    raise _Bad


def _read_int(v: Any) -> int:
    if type(v) is int:
        if INT64_MIN <= v <= INT64_MAX:
            return v
        raise _Bad
    if type(v) is float:
        if v.is_integer() and abs(v) < 2**63:
            return int(v)
        raise _Null if v != v else _Bad
    if isinstance(v, np.integer | np.floating):
        return _read_int(v.item())
    raise _Bad


def _read_bool(v: Any) -> bool:
    if type(v) is bool:
        return v
    if type(v) is int and v in (0, 1):
        return bool(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if type(v) is float and v != v:
        raise _Null
    raise _Bad


def _read_datetime(v: Any) -> datetime:
    if type(v) is str:
        try:
            return datetime.fromisoformat(v)
        except ValueError:
            raise _Bad from None
    if isinstance(v, datetime) and v is not pd.NaT:
        return v
    if type(v) is float and v != v:
        raise _Null
    raise _Bad


def _text_reader(cap: int, codes: bool) -> Callable[[Any], str]:
    """A reader of text values; ``codes``: integers are read as their text (zip codes, ids)."""

    def read(v: Any) -> str:
        if type(v) is str:
            if len(v) > cap or "\x00" in v:
                raise _BadText
            return v
        if codes and type(v) is int:
            return str(v)
        if codes and type(v) is float and v.is_integer() and abs(v) < 2**63:  # JSON's 525.0 is 525
            return str(int(v))
        if type(v) is float and v != v:
            raise _Null
        raise _Bad

    return read


_ALLOWED = {
    "float": "a number",
    "int": "an integer between -2^63 and 2^63-1",
    "bool": "true or false",
    "category": "a string",
    "string": "a string",
    "datetime": "an ISO 8601 date-time string",
}


@dataclass(slots=True)
class ColumnOutcome:
    """One column after :meth:`ContractRules.enforce`.

    ``values`` holds the values read as the contract type (a list for JSON-like input, a Series
    otherwise; refused and missing values are None/NA); ``refused`` and ``flagged`` map a rule or
    flag kind to the rows (positions) it concerns, in order; ``raw`` is the input column as given.
    """

    rules: ColumnRules
    raw: Any
    values: Any
    refused: dict[str, list[int]] | None = None
    flagged: dict[str, list[int]] | None = None

    @property
    def name(self) -> str:
        return self.rules.name

    def received(self, row: int) -> Any:
        """The raw value of ``row`` (MISSING when the field was absent)."""
        raw = self.raw
        if raw is None:
            return MISSING
        return raw.iat[row] if isinstance(raw, pd.Series) else raw[row]


class ColumnRules:
    """The compiled rules of one contract column (see the module docstring)."""

    __slots__ = (
        "cap",
        "categories",
        "has_range",
        "high",
        "low",
        "name",
        "nullable",
        "out_of_range",
        "read",
        "required",
        "spec",
        "unseen_category",
    )

    def __init__(
        self,
        spec: ColumnSpec,
        *,
        required: bool,
        unseen_category: Policy = "flag",
        out_of_range: Policy = "flag",
        max_text_chars: int = MAX_TEXT_CHARS,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.nullable = spec.nullable
        self.required = required and not spec.nullable
        self.unseen_category = unseen_category
        self.out_of_range = out_of_range
        self.cap = max_text_chars
        readers: dict[str, Callable[[Any], Any]] = {
            "float": _read_float,
            "int": _read_int,
            "bool": _read_bool,
            "datetime": _read_datetime,
            "category": _text_reader(max_text_chars, codes=True),
            "string": _text_reader(max_text_chars, codes=False),
        }
        self.read = readers[spec.dtype]
        numeric = spec.dtype in ("int", "float")
        self.low = spec.min if numeric and spec.min is not None else -math.inf
        self.high = spec.max if numeric and spec.max is not None else math.inf
        self.has_range = numeric and (spec.min is not None or spec.max is not None)
        cats = spec.categories if spec.dtype == "category" else None
        self.categories = frozenset(cats) if cats is not None else None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # The readers are closures: rebuild from the settings (batch ships scorers to worker processes).
        args = (self.spec, self.required, self.unseen_category, self.out_of_range, self.cap)
        return (_column_rules, args)

    def allowed(self, rule: str) -> str:
        """What ``rule`` expects, for messages."""
        if rule == "range":
            return f"between {self.low:g} and {self.high:g} (the range seen at training)"
        if rule == "category":
            cats = sorted(self.categories or ())
            return "one of: " + ", ".join(cats[:20]) + (", …" if len(cats) > 20 else "")
        if rule == "text":
            return f"a string of at most {self.cap} characters without NUL (\\u0000)"
        if rule in ("null", "missing"):
            return f"{_ALLOWED[self.spec.dtype]}; this field is required"
        return _ALLOWED[self.spec.dtype]

    # -- JSON-like values, one by one ------------------------------------------------------------
    def check_values(self, raw: Sequence[Any]) -> ColumnOutcome:
        """Read and check a list of JSON-like values (the serving hot path: a few rows)."""
        out: list[Any] = [None] * len(raw)
        refused: dict[str, list[int]] | None = None
        flagged: dict[str, list[int]] | None = None
        read, low, high, cats = self.read, self.low, self.high, self.categories
        has_range, required = self.has_range, self.required
        reject_category, reject_range = self.unseen_category == "reject", self.out_of_range == "reject"
        for i, value in enumerate(raw):
            if value is None or value is MISSING:
                if required:
                    refused = _add(refused, "null" if value is None else "missing", i)
                continue
            try:
                v = read(value)
            except _Unreadable as exc:
                rule = exc.rule
                if rule == "type" and (value is _NA_SCALARS[0] or value is _NA_SCALARS[1]):
                    rule = "null"
                if rule != "null" or required:
                    refused = _add(refused, rule, i)
                continue
            if cats is not None:
                if v not in cats:
                    if reject_category:
                        refused = _add(refused, "category", i)
                        continue
                    flagged = _add(flagged, "unseen_category", i)
            elif has_range and (low > v or v > high):
                if reject_range:
                    refused = _add(refused, "range", i)
                    continue
                flagged = _add(flagged, "out_of_range", i)
            out[i] = v
        return ColumnOutcome(self, raw, out, refused, flagged)

    # -- typed and text columns, vectorised ------------------------------------------------------
    def check_series(self, raw: pd.Series) -> ColumnOutcome:
        """Read and check a typed or text column (batch): vectorised, same rules as :meth:`check_values`."""
        spec = self.spec
        values, bad_s = coerce_column(raw, spec)
        bad = bad_s.to_numpy(dtype=bool, copy=True)
        refused: dict[str, list[int]] | None = None
        flagged: dict[str, list[int]] | None = None
        if spec.dtype == "float":
            with np.errstate(invalid="ignore"):
                bad |= np.isinf(values.to_numpy(dtype="float64", na_value=np.nan))
        text_bad = np.zeros(len(raw), dtype=bool)
        if spec.dtype in ("category", "string") and len(values):
            text = values.astype(STR_DTYPE)
            too_long = text.str.len().gt(self.cap).to_numpy(dtype=bool, na_value=False)
            nul = text.str.contains("\x00", regex=False).to_numpy(dtype=bool, na_value=False)
            text_bad = (too_long | nul) & ~bad
        if bad.any():
            refused = _add_rows(refused, "type", bad)
        if text_bad.any():
            refused = _add_rows(refused, "text", text_bad)
        checked = ~(bad | text_bad)
        if self.required:
            missing = values.isna().to_numpy(dtype=bool) & checked
            if missing.any():
                refused = _add_rows(refused, "null", missing)
        if self.has_range:
            numbers = values.to_numpy(dtype="float64", na_value=np.nan)
            with np.errstate(invalid="ignore"):
                outside = ((numbers < self.low) | (numbers > self.high)) & checked
            if outside.any():
                if self.out_of_range == "reject":
                    refused = _add_rows(refused, "range", outside)
                else:
                    flagged = _add_rows(flagged, "out_of_range", outside)
        if self.categories is not None:
            cats = list(self.spec.categories or ())
            unseen = (values.notna() & ~values.isin(cats)).to_numpy(dtype=bool) & checked
            if unseen.any():
                if self.unseen_category == "reject":
                    refused = _add_rows(refused, "category", unseen)
                else:
                    flagged = _add_rows(flagged, "unseen_category", unseen)
        return ColumnOutcome(self, raw, values, refused, flagged)

    def check(self, raw: Sequence[Any] | pd.Series | None, n: int) -> ColumnOutcome:
        """Dispatch on what holds the values (see the module docstring); None: the column is absent."""
        if type(raw) is list:  # the serving hot path
            return self.check_values(raw)
        if raw is None:
            outcome = self.check_values([MISSING] * n)
            outcome.raw = None
            return outcome
        if isinstance(raw, pd.Series):
            if _vectorised(raw.dtype):
                return self.check_series(raw)
            outcome = self.check_values(raw.tolist())
            outcome.raw = raw
            outcome.values = self.series(outcome.values, raw.index)
            return outcome
        return self.check_values(raw)

    def series(self, values: list[Any], index: pd.Index) -> pd.Series:
        """Values read by :meth:`check_values` as a Series of the contract's dtype (None: missing)."""
        dtype = self.spec.dtype
        has_none = None in values
        data: Any
        if dtype == "float":
            data = np.array([np.nan if v is None else v for v in values], dtype="float64")
        elif dtype == "int":
            data = pd.array(values, dtype="Int64")
            if not has_none and not self.nullable:
                data = np.asarray(data, dtype="int64")
        elif dtype == "bool":
            data = pd.array(values, dtype="boolean")
            if not has_none and not self.nullable:
                data = np.asarray(data, dtype="bool")
        elif dtype == "datetime":
            try:
                return pd.Series(pd.to_datetime(pd.Series(values, index=index, dtype=object)), name=self.name)
            except (ValueError, TypeError):  # mixed UTC offsets or naive and aware together
                return pd.Series(
                    pd.to_datetime(pd.Series(values, index=index, dtype=object), utc=True), name=self.name
                )
        else:
            data = pd.array(values, dtype=STR_DTYPE)
        return pd.Series(data, index=index, name=self.name)


class ContractRules:
    """The rules of every feature column of ``contract`` (the target is never expected).

    ``required`` names the columns the model needs (by default every column); of those, the ones the
    contract does not allow missing values in must have a value.
    """

    def __init__(
        self,
        contract: DataContract | Mapping[str, Any],
        *,
        required: Sequence[str] | None = None,
        unseen_category: Policy = "flag",
        out_of_range: Policy = "flag",
        max_text_chars: int = MAX_TEXT_CHARS,
    ) -> None:
        if not isinstance(contract, DataContract):
            contract = DataContract.from_dict(contract)
        for label, policy in (("unseen_category", unseen_category), ("out_of_range", out_of_range)):
            if policy not in ("reject", "flag"):
                raise DataError(f"{label} must be 'reject' or 'flag'; got {policy!r}.")
        if isinstance(max_text_chars, bool) or not isinstance(max_text_chars, int) or max_text_chars < 1:
            raise DataError(f"max_text_chars must be a positive integer; got {max_text_chars!r}.")
        self.contract = contract.without_target()
        needed = set(c.name for c in self.contract.columns) if required is None else set(required)
        self.columns = [
            ColumnRules(
                c,
                required=c.name in needed,
                unseen_category=unseen_category,
                out_of_range=out_of_range,
                max_text_chars=max_text_chars,
            )
            for c in self.contract.columns
        ]
        self.unseen_category = unseen_category
        self.out_of_range = out_of_range

    def enforce(self, columns: Mapping[str, Sequence[Any] | pd.Series | None], n: int) -> list[ColumnOutcome]:
        """Every contract column of ``n`` rows read and checked, in contract order.

        ``columns`` maps a column name to its ``n`` raw values (a list, a tuple or a Series); an
        absent name means the field is absent from every row.
        """
        outcomes = []
        for rules in self.columns:
            raw = columns.get(rules.name)
            # Lists (the serving hot path) go straight to the per-value check, as check() sends them.
            outcomes.append(rules.check_values(raw) if type(raw) is list else rules.check(raw, n))
        return outcomes


def _column_rules(
    spec: ColumnSpec, required: bool, unseen_category: Policy, out_of_range: Policy, cap: int
) -> ColumnRules:
    return ColumnRules(
        spec,
        required=required,
        unseen_category=unseen_category,
        out_of_range=out_of_range,
        max_text_chars=cap,
    )


def _vectorised(dtype: Any) -> bool:
    """Whether a column of ``dtype`` is checked vectorised (typed or text) rather than value by value."""
    # Unsigned columns may hold values above 2^63-1: they are read one by one, refused as integers.
    return not (ptypes.is_object_dtype(dtype) or ptypes.is_unsigned_integer_dtype(dtype))


def _add(found: dict[str, list[int]] | None, key: str, row: int) -> dict[str, list[int]]:
    if found is None:
        return {key: [row]}
    rows = found.get(key)
    if rows is None:
        found[key] = [row]
    else:
        rows.append(row)
    return found


def _add_rows(found: dict[str, list[int]] | None, key: str, mask: np.ndarray) -> dict[str, list[int]]:
    found = {} if found is None else found
    found.setdefault(key, []).extend(np.flatnonzero(mask).tolist())
    return found
