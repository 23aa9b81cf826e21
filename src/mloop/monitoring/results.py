"""What a drift check returns: one :class:`ColumnDrift` per column and a :class:`DriftReport`.

Every verdict is a plain ``bool`` (never NaN): a column that could not be tested says why in
``status`` (``ok``, ``missing_in_current``, ``dtype_mismatch``, ``too_few_rows``, ``all_missing``,
``empty_window``, ``no_reference_values``, ``not_applicable``) and ``notes``, and is not counted as
drifted. JSON output holds the same facts as the HTML report.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from mloop.monitoring.multivariate import MultivariateDrift

__all__ = ["COLUMN_STATUSES", "ColumnDrift", "DriftReport"]

COLUMN_STATUSES = (
    "ok",
    "missing_in_current",
    "dtype_mismatch",
    "too_few_rows",
    "all_missing",
    "empty_window",
    "no_reference_values",
    "not_applicable",
)


@dataclass
class ColumnDrift:
    """Drift of one column: the test, its statistic and threshold, the verdict and side signals.

    ``method`` tells how the verdict was reached: ``calibrated`` (distance threshold raised to the
    noise level of this window size), ``default`` (the test's own threshold), or for p-value tests
    ``exact`` / ``asymptotic`` / ``monte-carlo``. ``fdr_p_value`` is what entered the
    Benjamini-Hochberg dataset verdict and ``fdr_rejected`` whether it was rejected there.
    """

    column: str
    kind: str | None = None
    status: str = "ok"
    test: str | None = None
    statistic: float | None = None
    threshold: float | None = None
    default_threshold: float | None = None
    p_value: float | None = None
    drifted: bool = False
    method: str | None = None
    null_quantile: float | None = None
    fdr_p_value: float | None = None
    fdr_rejected: bool = False
    n_reference: int = 0
    n_current: int = 0
    missing_rate_reference: float | None = None
    missing_rate_current: float | None = None
    missing_rate_changed: bool = False
    unseen_share: float | None = None
    out_of_range_share: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: _clean(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ColumnDrift:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class DriftReport:
    """The drift of a current window against a reference.

    ``dataset_drifted`` is the Benjamini-Hochberg verdict (at least one hypothesis rejected at false
    discovery rate ``fdr``: one per column, plus the multivariate check's when it ran);
    ``share_rule_drifted`` is Evidently's rule (share of drifted columns at or above
    ``drift_share``). ``multivariate`` is the domain classifier's result (None when not asked for).
    """

    columns: list[ColumnDrift]
    rows_reference: int
    rows_current: int
    dataset_drifted: bool
    share_drifted: float
    share_rule_drifted: bool
    n_tested: int
    n_drifted: int
    fdr: float
    drift_share: float
    calibrated: bool
    extra_columns: list[str] = field(default_factory=list)
    created_at: str = ""
    multivariate: MultivariateDrift | None = None

    def column(self, name: str) -> ColumnDrift:
        """The result for one column (KeyError when the column was not compared)."""
        for col in self.columns:
            if col.column == name:
                return col
        raise KeyError(name)

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    def to_dict(self) -> dict[str, Any]:
        data = {k: _clean(v) for k, v in asdict(self).items() if k not in {"columns", "multivariate"}}
        data["drifted_columns"] = self.drifted_columns
        data["columns"] = [c.to_dict() for c in self.columns]
        data["multivariate"] = (
            {k: _clean(v) for k, v in self.multivariate.to_dict().items()} if self.multivariate else None
        )
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftReport:
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names and k not in {"columns", "multivariate"}}
        multi = data.get("multivariate")
        return cls(
            columns=[ColumnDrift.from_dict(c) for c in data.get("columns", [])],
            multivariate=MultivariateDrift.from_dict(multi) if isinstance(multi, dict) else None,
            **kwargs,
        )
