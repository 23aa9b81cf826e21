"""The data contract: infer it from training data, then enforce it on every later load.

One contract, three uses: the serving request schema, batch/ingest validation and the drift reference.
:func:`infer_contract` reads types, nullability, numeric ranges and allowed categories from a frame;
:func:`validate` checks new data against it and applies the project's policy per rule
(``contract.on_<rule>`` in ``mloop.yaml``: ``fail``, ``drop`` the offending rows, or ``warn``).

Rules: ``missing_column``, ``dtype`` (value not readable as the type), ``null`` (missing value in a
non-nullable column), ``range`` (outside [min, max] widened by ``range_tolerance`` x (max - min)),
``category`` (value unseen at training), ``empty`` (no rows; always fails) and ``extra_column``
(always a warning; the column is dropped). Every violation is in the returned report; if any has the
action ``fail``, :class:`~mloop.errors.ContractViolation` is raised with the whole report, so bad data
never reaches the caller silently. With ``warn``, a missing column is added as all-missing and an
unreadable value becomes missing.

>>> import pandas as pd
>>> from mloop.config import ContractSettings
>>> contract = infer_contract(pd.DataFrame({"x": [1, 2], "y": [0, 1]}), target="y")
>>> validate(pd.DataFrame({"x": [3], "y": [1]}), contract, ContractSettings()).report.ok
True
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from mloop.config import ContractSettings
from mloop.data.coerce import coerce_column, coerce_frame, empty_column
from mloop.data.report import TABLE, Violation, ViolationReport, safe_example
from mloop.data.schema import ColumnSpec, DataContract, Dtype
from mloop.errors import ContractViolation, DataError, did_you_mean

__all__ = [
    "ColumnSpec",
    "DataContract",
    "ValidationResult",
    "Violation",
    "ViolationReport",
    "coerce_frame",
    "infer_contract",
    "validate",
]

log = logging.getLogger("mloop.data")
_MAX_EXAMPLES = 5


def _infer_dtype(s: pd.Series, max_categories: int) -> tuple[Dtype, tuple[str, ...] | None]:
    dtype = s.dtype
    if ptypes.is_bool_dtype(dtype) and not ptypes.is_object_dtype(dtype):
        return "bool", None
    if ptypes.is_integer_dtype(dtype):
        return "int", None
    if ptypes.is_float_dtype(dtype):
        return "float", None
    if ptypes.is_datetime64_any_dtype(dtype):
        return "datetime", None
    if ptypes.is_object_dtype(dtype):
        # Records from JSON or SQL often arrive as objects; read what they actually hold.
        kind = pd.api.types.infer_dtype(s, skipna=True)
        mapped: dict[str, Dtype] = {
            "boolean": "bool",
            "integer": "int",
            "floating": "float",
            "mixed-integer-float": "float",
            "datetime": "datetime",
            "datetime64": "datetime",
        }
        if kind in mapped:
            return mapped[kind], None
    textual = ptypes.is_string_dtype(dtype) or ptypes.is_object_dtype(dtype)
    if isinstance(dtype, pd.CategoricalDtype) or textual:
        distinct = pd.unique(s.dropna().astype(str))
        if 0 < len(distinct) <= max_categories:
            return "category", tuple(sorted(str(v) for v in distinct))
        return "string", None
    # Anything else (timedeltas, periods, intervals) travels as text.
    return "string", None


def _infer_spec(name: str, s: pd.Series, max_categories: int) -> ColumnSpec:
    dtype, categories = _infer_dtype(s, max_categories)
    low = high = None
    if dtype in ("int", "float"):
        values = pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        finite = values[np.isfinite(values)]
        if finite.size:
            low, high = float(finite.min()), float(finite.max())
    return ColumnSpec(
        name=name, dtype=dtype, nullable=bool(s.isna().any()), min=low, max=high, categories=categories
    )


def infer_contract(
    df: pd.DataFrame,
    *,
    target: str | None,
    task: str | None = None,
    drop_columns: Sequence[str] = (),
    max_categories: int = 200,
) -> DataContract:
    """The contract ``df`` satisfies: every column but ``drop_columns``, in frame order.

    Text columns with at most ``max_categories`` distinct values become ``category`` columns with the
    sorted allowed set; longer ones become free ``string`` columns.
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"infer_contract expects a pandas DataFrame; got {type(df).__name__}.")
    if len(df) == 0 or len(df.columns) == 0:
        raise DataError(
            f"Cannot infer a data contract from empty data ({len(df)} rows, {len(df.columns)} columns); "
            "check that the source returns rows."
        )
    names = list(df.columns)
    bad_names = [n for n in names if not isinstance(n, str) or not n]
    if bad_names:
        raise DataError(
            f"Column names must be non-empty strings; got {bad_names[:5]!r}. "
            "Rename them, e.g. df.columns = df.columns.astype(str)."
        )
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise DataError(
            f"Column names must be unique; {', '.join(map(repr, duplicated))} appear more than once."
        )
    unknown = [c for c in drop_columns if c not in df.columns]
    if unknown:
        raise DataError(
            f"drop_columns names {', '.join(map(repr, unknown))}, not in the data."
            f"{did_you_mean(unknown[0], names)} Columns: {', '.join(names)}."
        )
    if target is not None:
        if target not in df.columns:
            raise DataError(
                f"Target column {target!r} is not in the data.{did_you_mean(target, names)} "
                f"Columns: {', '.join(names)}. Set model.target in mloop.yaml to one of them."
            )
        if target in drop_columns:
            raise DataError(f"Target column {target!r} is also listed in drop_columns; remove it from there.")
    if max_categories < 0:
        raise DataError(f"max_categories must be >= 0; got {max_categories}.")
    columns = tuple(_infer_spec(n, df[n], max_categories) for n in names if n not in set(drop_columns))
    return DataContract(columns=columns, target=target, task=task)


@dataclass(frozen=True)
class ValidationResult:
    """Clean rows (contract dtypes, contract order, nothing else; input index kept) and the report."""

    data: pd.DataFrame
    report: ViolationReport


def _examples(values: pd.Series, distinct: bool = False) -> tuple[object, ...]:
    if distinct:
        values = values.drop_duplicates()
    return tuple(safe_example(v) for v in values.head(_MAX_EXAMPLES).tolist())


def _check_column(
    s: pd.Series, spec: ColumnSpec, policy: ContractSettings, found: list[Violation]
) -> tuple[pd.Series, np.ndarray]:
    """Coerce one column and apply the value rules; return the values and the rows to drop."""
    drop = np.zeros(len(s), dtype=bool)

    def flag(rule: str, mask: pd.Series, action: str, examples: tuple[object, ...], detail: str = "") -> None:
        nonlocal drop
        found.append(Violation(spec.name, rule, int(mask.sum()), examples, action, detail))
        if action == "drop":
            drop |= mask.to_numpy(dtype=bool)

    values, bad = coerce_column(s, spec)
    if bad.any():
        flag("dtype", bad, policy.on_dtype, _examples(s[bad]), f"expected {spec.dtype}")
    nulls = values.isna() & ~bad
    if not spec.nullable and nulls.any():
        flag("null", nulls, policy.on_null, ())
    if spec.dtype in ("int", "float") and (spec.min is not None or spec.max is not None):
        low = spec.min if spec.min is not None else -np.inf
        high = spec.max if spec.max is not None else np.inf
        slack = policy.range_tolerance * (high - low) if np.isfinite(high - low) else 0.0
        numbers = values.to_numpy(dtype="float64", na_value=np.nan)
        with np.errstate(invalid="ignore"):
            outside = pd.Series((numbers < low - slack) | (numbers > high + slack), index=s.index)
        if outside.any():
            allowed = f"allowed [{low:g}, {high:g}]" + (f" ± {slack:g}" if slack else "")
            flag("range", outside, policy.on_range, _examples(values[outside], distinct=True), allowed)
    if spec.dtype == "category" and spec.categories is not None:
        unseen = values.notna() & ~values.isin(spec.categories)
        if unseen.any():
            known = ", ".join(spec.categories[:10]) + (", …" if len(spec.categories) > 10 else "")
            flag(
                "category",
                unseen,
                policy.on_category,
                _examples(values[unseen], distinct=True),
                f"known: {known}",
            )
    return values, drop


def validate(
    df: pd.DataFrame,
    contract: DataContract,
    policy: ContractSettings,
    *,
    require_target: bool = True,
) -> ValidationResult:
    """Check ``df`` against ``contract`` and apply ``policy``; see the module docstring.

    With ``require_target=False`` (scoring), the target column is checked when present and not
    required otherwise. Raises :class:`ContractViolation` (with ``.report``) if any rule fails.
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"validate expects a pandas DataFrame; got {type(df).__name__}.")
    rows_in = len(df)
    found: list[Violation] = []
    if rows_in == 0:
        found.append(Violation(TABLE, "empty", 0, (), "fail", "0 rows received"))
    present = [str(c) for c in df.columns]
    specs = [
        c for c in contract.columns if require_target or c.name != contract.target or c.name in df.columns
    ]
    wanted = {c.name for c in specs}
    for name in present:
        if name not in wanted and name != contract.target:
            found.append(Violation(name, "extra_column", rows_in, _examples(df[name]), "warn"))
    drop = np.zeros(rows_in, dtype=bool)
    columns: dict[str, pd.Series] = {}
    for spec in specs:
        if spec.name not in df.columns:
            action = "fail" if spec.name == contract.target else policy.on_missing_column
            found.append(
                Violation(
                    spec.name, "missing_column", rows_in, (), action, did_you_mean(spec.name, present).strip()
                )
            )
            columns[spec.name] = empty_column(spec, df.index)
            continue
        column = df[spec.name]
        if isinstance(column, pd.DataFrame):
            raise DataError(f"Column {spec.name!r} appears more than once; column names must be unique.")
        columns[spec.name], dropped = _check_column(column, spec, policy, found)
        drop |= dropped
    data = pd.DataFrame(columns, index=df.index)[[c.name for c in specs]] if specs else df.iloc[:, :0]
    if drop.any():
        data = data[~drop]
        for spec in specs:
            # Rows with missing values may be gone: return to the plain dtype the contract promises.
            col = data[spec.name]
            if not spec.nullable and str(col.dtype) in ("Int64", "boolean") and not col.isna().any():
                data[spec.name] = col.astype("int64" if spec.dtype == "int" else "bool")
    if rows_in and len(data) == 0:
        found.append(
            Violation(TABLE, "empty", 0, (), "fail", f"all {rows_in} rows were dropped by the rules above")
        )
    report = ViolationReport(found, rows_in=rows_in, rows_out=len(data))
    if not report.ok:
        raise ContractViolation(report.summary(), report)
    if report.violations:
        log.warning("%s", report.summary())
    return ValidationResult(data=data, report=report)
