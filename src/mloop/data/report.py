"""What validation found: one :class:`Violation` per broken rule and column, gathered in a report.

The report is what a person reads when data is refused (``summary()``: the column, the rule, how many
values, a few examples and how to fix it) and what the pipeline logs (``to_dict()``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

import numpy as np

__all__ = ["Action", "Rule", "Violation", "ViolationReport", "safe_example"]

Rule = Literal["missing_column", "dtype", "null", "range", "category", "empty", "extra_column"]
Action = Literal["fail", "drop", "warn"]
TABLE = "*"
"""The ``column`` of violations about the whole table (``empty``)."""

_FIX = {
    "missing_column": "add the column to the data; or set contract.on_missing_column: warn in mloop.yaml to "
    "fill it with missing values; or retrain without it",
    "dtype": "fix those values in the source; or set contract.on_dtype to 'drop' (drop the rows) or 'warn' "
    "(treat them as missing) in mloop.yaml",
    "null": "fill the missing values in the source; or set contract.on_null to 'drop' or 'warn' "
    "in mloop.yaml",
    "range": "clean the data; or change contract.on_range ('drop'/'warn') or widen contract.range_tolerance "
    "in mloop.yaml; if the new range is genuine, retrain",
    "category": "fix the values in the source; or change contract.on_category ('drop'/'warn') in mloop.yaml; "
    "retrain to learn new categories",
    "empty": "check that the source (file, query, URL) returns rows, "
    "and that the rules did not drop them all",
    "extra_column": "ignored (not in the contract); list it in model.drop_columns or retrain to use it",
}
_ACTION = {"fail": "REFUSED", "drop": "rows dropped", "warn": "kept, warning"}


def safe_example(value: Any, limit: int = 60) -> Any:
    """A JSON- and repr-safe stand-in for a data value (long text cut, missing as None)."""
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, bool | int):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    try:
        if value != value:  # pandas NA / NaT
            return None
    except (TypeError, ValueError):
        pass
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Violation:
    """``count`` values (or rows) of ``column`` broke ``rule``; ``action`` is what was done about it."""

    column: str
    rule: str
    count: int
    examples: tuple[Any, ...]
    action: str
    detail: str = ""
    """Extra context for a person, e.g. the allowed range."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "rule": self.rule,
            "count": self.count,
            "examples": list(self.examples),
            "action": self.action,
            "detail": self.detail,
        }

    def describe(self) -> str:
        """One line: what broke, how often, examples, what was done and how to fix it."""
        where = "the data" if self.column == TABLE else f"column {self.column!r}"
        what = {
            "missing_column": "is missing from the data",
            "dtype": f"has {self.count} value(s) of the wrong type",
            "null": f"has {self.count} missing value(s) but the contract does not allow them",
            "range": f"has {self.count} value(s) outside the training range",
            "category": f"has {self.count} value(s) in categories never seen at training",
            "empty": "has no rows",
            "extra_column": "is not in the contract",
        }.get(self.rule, f"broke rule {self.rule!r} {self.count} time(s)")
        text = f"{where} {what}"
        if self.detail:
            text += f" ({self.detail})"
        if self.examples:
            text += ", e.g. " + ", ".join(repr(e) for e in self.examples)
        fix = _FIX.get(self.rule, "check the data")
        return f"{text} [{_ACTION.get(self.action, self.action)}]. Fix: {fix}."


@dataclass
class ViolationReport:
    """Every violation found in one validation, plus the row counts before and after."""

    violations: list[Violation] = field(default_factory=list)
    rows_in: int = 0
    rows_out: int = 0

    @property
    def ok(self) -> bool:
        """No violation has the action ``fail``."""
        return not any(v.action == "fail" for v in self.violations)

    @property
    def dropped_rows(self) -> int:
        """How many input rows were dropped."""
        return self.rows_in - self.rows_out

    @property
    def failures(self) -> list[Violation]:
        return [v for v in self.violations if v.action == "fail"]

    @property
    def warnings(self) -> list[Violation]:
        return [v for v in self.violations if v.action != "fail"]

    def by_rule(self, rule: str) -> list[Violation]:
        return [v for v in self.violations if v.rule == rule]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "dropped_rows": self.dropped_rows,
            "violations": [v.to_dict() for v in self.violations],
        }

    def summary(self) -> str:
        """Several lines for a person: a headline, then one line per violation, failures first."""
        if not self.violations:
            return f"Data contract: all {self.rows_in} rows passed."
        verdict = "refused" if not self.ok else "accepted with warnings"
        head = (
            f"Data contract: {verdict}: {len(self.failures)} failing and {len(self.warnings)} other "
            f"problem(s) in {self.rows_in} rows; {self.dropped_rows} row(s) dropped."
        )
        ordered = self.failures + self.warnings
        return "\n".join([head, *(f"  - {v.describe()}" for v in ordered)])

    def __str__(self) -> str:
        return self.summary()
