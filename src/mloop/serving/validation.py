"""Check prediction requests against the data contract before the model sees them.

A :class:`ContractValidator` is compiled once per model version over the contract's rules
(:class:`mloop.data.enforce.ContractRules`, the same rules and the same function batch and stream
scoring use, so a row refused here is refused there). Requests are validated column by column in
plain Python rather than through a pydantic model or pandas: a request usually carries one to a few
records, where building a pydantic model (~20 µs per record) or a DataFrame (~300 µs) would cost more
than the model call it protects. Pydantic models built from the same contract still *document* the
request in OpenAPI (:mod:`mloop.serving.schemas`); the checks here enforce the same rules.

Every offending field becomes one entry of :class:`~mloop.errors.RequestValidationError` with the
field name, the rule broken, the value received, what is allowed, and the rows concerned: a value
the model could not take (an integer beyond 64 bits, text with a NUL character or longer than
``max_text_chars``) is this request's 422, never a failure of the micro-batch it would have joined.
Range and unseen-category problems follow the serving policy: ``reject`` (422) or ``flag`` (accepted
and marked in the response and the prediction log).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mloop.data.enforce import MAX_TEXT_CHARS, MISSING, ColumnOutcome, ColumnRules, ContractRules, Policy
from mloop.data.schema import ColumnSpec, DataContract
from mloop.errors import RequestValidationError

__all__ = ["MISSING", "Columns", "ContractValidator", "FieldIssue", "Policy"]

_MAX_ROWS_LISTED = 10


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


def _json_safe(value: Any) -> Any:
    if value is MISSING:
        return None
    if isinstance(value, str | int | bool) or value is None:
        if isinstance(value, str):
            return value[:200].replace("\x00", "\\u0000")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
            return str(value)  # JSON readers lose precision or fail on such numbers
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return repr(value)[:200]


class ContractValidator:
    """Validate request rows against ``contract`` (the target column is never expected).

    ``required`` names the fields the model needs (by default every non-nullable feature); other
    fields may be absent and are then missing values. ``unseen_category`` and ``out_of_range`` choose
    between rejecting (422) and flagging; ``max_text_chars`` caps text values.
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
        self.rules = ContractRules(
            contract,
            required=required,
            unseen_category=unseen_category,
            out_of_range=out_of_range,
            max_text_chars=max_text_chars,
        )
        self.contract = self.rules.contract
        self.fields: list[str] = [c.name for c in self.contract.columns]
        self.unseen_category = unseen_category
        self.out_of_range = out_of_range

    @property
    def checks(self) -> list[ColumnRules]:
        """The compiled rules per contract column (``name``, ``spec``, ``required``)."""
        return self.rules.columns

    def specs(self) -> list[ColumnSpec]:
        return [c.spec for c in self.rules.columns]

    # -- request shapes -------------------------------------------------------------------------
    def from_records(self, records: Sequence[Any]) -> Columns:
        """Validate a list of ``{field: value}`` mappings."""
        for i, rec in enumerate(records):
            if type(rec) is not dict and not isinstance(rec, Mapping):  # JSON objects are dicts
                raise _shape_error(f"record {i} must be an object of field values; got {_kind(rec)}")
        if len(records) == 1:  # the common request: one record
            record = records[0]
            columns = {name: [record.get(name, MISSING)] for name in self.fields}
        else:
            columns = {name: [r.get(name, MISSING) for r in records] for name in self.fields}
        return self._enforce(columns, len(records))  # one value per row in every column, by construction

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
        for name in self.fields:
            raw = columns.get(name)
            if raw is not None and len(raw) != n:
                issues.append(
                    FieldIssue(name, "length", f"{len(raw)} values", f"{n} values, one per row", [])
                )
        if issues:
            raise _validation_error(issues)
        return self._enforce(columns, n)

    def _enforce(self, columns: Mapping[str, Sequence[Any]], n: int) -> Columns:
        """Validate columns whose lengths are ``n`` (checked, or made so by the caller)."""
        issues: list[FieldIssue] = []
        values: dict[str, list[Any]] = {}
        flags: list[dict[str, list[str]] | None] = [None] * n
        for outcome in self.rules.enforce(columns, n):
            values[outcome.rules.name] = outcome.values
            if outcome.refused is not None:
                issues.extend(_issues(outcome))
            if outcome.flagged is not None:
                for kind, rows in outcome.flagged.items():
                    for i in rows:
                        row = flags[i]
                        if row is None:
                            row = flags[i] = {}
                        row.setdefault(kind, []).append(outcome.name)
        if issues:
            raise _validation_error(issues)
        return Columns(values, n, flags)


def _issues(outcome: ColumnOutcome) -> list[FieldIssue]:
    assert outcome.refused is not None
    return [
        FieldIssue(
            outcome.name,
            rule,
            _json_safe(outcome.received(rows[0])),
            outcome.rules.allowed(rule),
            rows[:_MAX_ROWS_LISTED],
            len(rows),
        )
        for rule, rows in outcome.refused.items()
    ]


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
