"""Check prediction requests against the data contract before the model sees them.

A :class:`ContractValidator` is compiled once per model version: one small checker per contract
column (type, missing value, range, allowed categories). Requests are validated column by column in
plain Python rather than through a pydantic model or pandas: a request usually carries one to a few
records, where building a pydantic model (~20 µs per record) or a DataFrame (~300 µs) would cost more
than the model call it protects. Pydantic models built from the same contract still *document* the
request in OpenAPI (:mod:`mloop.serving.schemas`); the checks here enforce the same rules.

Every offending field becomes one entry of :class:`~mloop.errors.RequestValidationError` with the
field name, the rule broken, the value received, what is allowed, and the rows concerned. Range and
unseen-category problems follow the serving policy: ``reject`` (422) or ``flag`` (accepted and
marked in the response and the prediction log).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from mloop.data.schema import ColumnSpec, DataContract
from mloop.errors import RequestValidationError

__all__ = ["MISSING", "Columns", "ContractValidator", "FieldIssue", "Policy"]

Policy = Literal["reject", "flag"]
MISSING: Any = object()
"""Marks a field absent from a record (distinct from an explicit null)."""
_MAX_ROWS_LISTED = 10


class _Bad(Exception):
    """A value that cannot be read as the column's type."""


@dataclass(slots=True)
class FieldIssue:
    """One broken rule on one field, over one or more rows."""

    field: str
    rule: str
    received: Any
    allowed: str
    rows: list[int]
    count: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "rule": self.rule,
            "received": self.received,
            "allowed": self.allowed,
            "rows": self.rows,
            "count": self.count,
        }


@dataclass(slots=True)
class Columns:
    """Validated request rows: coerced values per field (contract order) and per-row flags."""

    values: dict[str, list[Any]]
    n: int
    flags: list[dict[str, list[str]] | None]

    def record(self, i: int) -> dict[str, Any]:
        """Row ``i`` as a mapping (for the prediction log)."""
        return {name: col[i] for name, col in self.values.items()}


def _read_float(v: Any) -> float:
    if type(v) is float:
        return v
    if type(v) is int:
        return float(v)
    raise _Bad


def _read_int(v: Any) -> int:
    if type(v) is int:
        return v
    if type(v) is float and v.is_integer() and abs(v) < 2**63:
        return int(v)
    raise _Bad


def _read_bool(v: Any) -> bool:
    if type(v) is bool:
        return v
    if type(v) is int and v in (0, 1):
        return bool(v)
    raise _Bad


def _read_category(v: Any) -> str:
    if type(v) is str:
        return v
    if type(v) is int:  # codes sent as JSON numbers (zip codes, ids) are read as their text
        return str(v)
    raise _Bad


def _read_string(v: Any) -> str:
    if type(v) is str:
        return v
    raise _Bad


def _read_datetime(v: Any) -> datetime:
    if type(v) is str:
        try:
            return datetime.fromisoformat(v)
        except ValueError:
            raise _Bad from None
    raise _Bad


_READERS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "float": (_read_float, "a number"),
    "int": (_read_int, "an integer"),
    "bool": (_read_bool, "true or false"),
    "category": (_read_category, "a string"),
    "string": (_read_string, "a string"),
    "datetime": (_read_datetime, "an ISO 8601 date-time string"),
}


def _json_safe(value: Any) -> Any:
    if value is MISSING:
        return None
    if isinstance(value, str | int | bool) or value is None:
        return value[:200] if isinstance(value, str) else value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return repr(value)[:200]


class _FieldCheck:
    """The compiled rules of one column."""

    __slots__ = (
        "allowed",
        "categories",
        "has_range",
        "high",
        "low",
        "name",
        "nullable",
        "read",
        "required",
        "spec",
    )

    def __init__(self, spec: ColumnSpec, required: bool) -> None:
        self.spec = spec
        self.name = spec.name
        self.nullable = spec.nullable
        self.required = required
        self.read, self.allowed = _READERS[spec.dtype]
        numeric = spec.dtype in ("int", "float")
        self.low = spec.min if numeric and spec.min is not None else -math.inf
        self.high = spec.max if numeric and spec.max is not None else math.inf
        self.has_range = numeric and (spec.min is not None or spec.max is not None)
        cats = spec.categories if spec.dtype == "category" else None
        self.categories = frozenset(cats) if cats is not None else None

    def range_text(self) -> str:
        return f"between {self.low:g} and {self.high:g} (the range seen at training)"

    def categories_text(self) -> str:
        cats = sorted(self.categories or ())
        shown = ", ".join(cats[:20]) + (", …" if len(cats) > 20 else "")
        return f"one of: {shown}"


class ContractValidator:
    """Validate request rows against ``contract`` (the target column is never expected).

    ``required`` names the fields the model needs (by default every non-nullable feature); other
    fields may be absent and are then missing values. ``unseen_category`` and ``out_of_range`` choose
    between rejecting (422) and flagging.
    """

    def __init__(
        self,
        contract: DataContract | Mapping[str, Any],
        *,
        required: Sequence[str] | None = None,
        unseen_category: Policy = "flag",
        out_of_range: Policy = "flag",
    ) -> None:
        if not isinstance(contract, DataContract):
            contract = DataContract.from_dict(contract)
        self.contract = contract.without_target()
        self.fields: list[str] = [c.name for c in self.contract.columns]
        needed = set(self.fields if required is None else required)
        self.checks = [_FieldCheck(c, c.name in needed and not c.nullable) for c in self.contract.columns]
        self.unseen_category = unseen_category
        self.out_of_range = out_of_range

    def specs(self) -> list[ColumnSpec]:
        return [c.spec for c in self.checks]

    # -- request shapes -------------------------------------------------------------------------
    def from_records(self, records: Sequence[Any]) -> Columns:
        """Validate a list of ``{field: value}`` mappings."""
        for i, rec in enumerate(records):
            if not isinstance(rec, Mapping):
                raise _shape_error(f"record {i} must be an object of field values; got {_kind(rec)}")
        columns = {c.name: [r.get(c.name, MISSING) for r in records] for c in self.checks}
        return self.from_columns(columns, len(records))

    def from_rows(self, rows: Sequence[Any]) -> Columns:
        """Validate positional rows: lists of values in contract column order."""
        width = len(self.fields)
        for i, row in enumerate(rows):
            if not isinstance(row, list | tuple) or len(row) != width:
                got = f"{len(row)} values" if isinstance(row, list | tuple) else _kind(row)
                raise RequestValidationError(
                    f"Row {i} must list {width} values in contract order; got {got}.",
                    [
                        {
                            "field": "features",
                            "rule": "length",
                            "received": got,
                            "allowed": f"{width} values in this order: {', '.join(self.fields)}",
                            "rows": [i],
                            "count": 1,
                        }
                    ],
                )
        columns = {name: [row[j] for row in rows] for j, name in enumerate(self.fields)}
        return self.from_columns(columns, len(rows))

    def from_columns(self, columns: Mapping[str, Sequence[Any]], n: int) -> Columns:
        """Validate column lists (each of length ``n``); absent columns count as absent fields."""
        issues: list[FieldIssue] = []
        values: dict[str, list[Any]] = {}
        flags: list[dict[str, list[str]] | None] = [None] * n
        for check in self.checks:
            raw = columns.get(check.name)
            if raw is None:
                raw = [MISSING] * n
            elif len(raw) != n:
                issues.append(
                    FieldIssue(check.name, "length", f"{len(raw)} values", f"{n} values, one per row", [], 1)
                )
                continue
            values[check.name] = self._check_column(check, raw, issues, flags)
        if issues:
            raise _validation_error(issues)
        return Columns(values, n, flags)

    # -- the rules ------------------------------------------------------------------------------
    def _check_column(
        self,
        check: _FieldCheck,
        raw: Sequence[Any],
        issues: list[FieldIssue],
        flags: list[dict[str, list[str]] | None],
    ) -> list[Any]:
        out: list[Any] = [None] * len(raw)
        found: dict[str, FieldIssue] = {}

        def note(rule: str, i: int, value: Any, allowed: str) -> None:
            issue = found.get(rule)
            if issue is None:
                found[rule] = FieldIssue(check.name, rule, _json_safe(value), allowed, [i])
            else:
                issue.count += 1
                if len(issue.rows) < _MAX_ROWS_LISTED:
                    issue.rows.append(i)

        def flag(kind: str, i: int) -> None:
            row = flags[i]
            if row is None:
                row = flags[i] = {}
            row.setdefault(kind, []).append(check.name)

        read, low, high, cats = check.read, check.low, check.high, check.categories
        has_range = check.has_range
        for i, value in enumerate(raw):
            if value is None or value is MISSING:
                if check.nullable or (value is MISSING and not check.required):
                    continue
                rule = "missing" if value is MISSING else "null"
                note(rule, i, value, f"{check.allowed}; this field is required")
                continue
            try:
                v = read(value)
            except _Bad:
                note("type", i, value, check.allowed)
                continue
            if cats is not None and v not in cats:
                if self.unseen_category == "reject":
                    note("category", i, value, check.categories_text())
                    continue
                flag("unseen_category", i)
            elif has_range and (low > v or v > high):
                if self.out_of_range == "reject":
                    note("range", i, value, check.range_text())
                    continue
                flag("out_of_range", i)
            out[i] = v
        issues.extend(found.values())
        return out


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _shape_error(detail: str) -> RequestValidationError:
    return RequestValidationError(
        f"The request body has the wrong shape: {detail}.",
        [
            {
                "field": "features",
                "rule": "shape",
                "received": detail,
                "allowed": "see /docs",
                "rows": [],
                "count": 1,
            }
        ],
    )


def _validation_error(issues: list[FieldIssue]) -> RequestValidationError:
    parts = [f"{i.field!r} ({i.rule}: got {i.received!r}, expected {i.allowed})" for i in issues[:5]]
    more = f" and {len(issues) - 5} more" if len(issues) > 5 else ""
    return RequestValidationError(
        f"The request breaks the data contract on {len(issues)} field(s): {'; '.join(parts)}{more}.",
        [i.to_dict() for i in issues],
    )
