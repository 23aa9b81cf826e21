"""Cast raw values to the contract's types, noting which values could not be read.

The contract types map to pandas dtypes as follows (the same for training, serving and batch, so a
model always sees the same dtypes):

=========== ====================================================================
``int``     ``int64``; ``Int64`` (nullable) when the column is nullable or has missing values
``float``   ``float64`` (missing values are NaN)
``bool``    ``bool``; ``boolean`` (nullable) when the column is nullable or has missing values
``category``/``string``  ``str`` (pandas' string dtype, missing values are NaN)
``datetime`` ``datetime64`` (timezone kept when present; mixed offsets are converted to UTC)
=========== ====================================================================

:func:`coerce_column` never raises on bad values: it returns the mask of values that were present but
could not be read, so validation can apply the configured policy. :func:`coerce_frame` is the strict
form used on serving and batch records, with a fast path when the frame already fits.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from mloop.data.schema import ColumnSpec, DataContract
from mloop.errors import DataError, did_you_mean

__all__ = ["STR_DTYPE", "coerce_column", "coerce_frame", "dtype_matches", "empty_column"]

STR_DTYPE = pd.StringDtype(na_value=np.nan)
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})


def _is_textual(s: pd.Series) -> bool:
    return bool(ptypes.is_object_dtype(s.dtype) or ptypes.is_string_dtype(s.dtype))


def _missing(s: pd.Series) -> pd.Series:
    """Missing values, counting blank strings as missing for non-text targets."""
    nulls = s.isna()
    if _is_textual(s) and len(s):
        nulls = nulls | s.astype(STR_DTYPE).str.strip().eq("").fillna(False).astype(bool)
    return nulls


def _as_int(s: pd.Series, spec: ColumnSpec) -> tuple[pd.Series, pd.Series]:
    if ptypes.is_integer_dtype(s.dtype):
        out = s.astype("Int64")
        bad = pd.Series(False, index=s.index)
    else:
        if ptypes.is_bool_dtype(s.dtype) or ptypes.is_numeric_dtype(s.dtype):
            num = s.astype("float64")
        else:
            num = pd.to_numeric(s.where(~_missing(s)), errors="coerce").astype("float64")
        values = num.to_numpy()
        with np.errstate(invalid="ignore"):
            integral = np.isfinite(values) & (values == np.round(values)) & (np.abs(values) < 2**63)
        bad = pd.Series(~integral, index=s.index) & ~_missing(s)
        out = num.where(integral).astype("Int64")
    if not spec.nullable and not out.isna().any():
        out = out.astype("int64")
    return out, bad


def _as_float(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    if ptypes.is_numeric_dtype(s.dtype) or ptypes.is_bool_dtype(s.dtype):
        out = s.astype("float64")
        return out, pd.Series(False, index=s.index)
    missing = _missing(s)
    out = pd.to_numeric(s.where(~missing), errors="coerce").astype("float64")
    return out, out.isna() & ~missing


def _as_bool(s: pd.Series, spec: ColumnSpec) -> tuple[pd.Series, pd.Series]:
    if ptypes.is_bool_dtype(s.dtype) and not ptypes.is_object_dtype(s.dtype):
        out = s.astype("boolean")
        bad = pd.Series(False, index=s.index)
    else:
        missing = _missing(s)
        if ptypes.is_numeric_dtype(s.dtype):
            mapped = s.map(lambda v: {0: False, 1: True}.get(v) if pd.notna(v) else None)
        else:

            def read(v: Any) -> bool | None:
                if isinstance(v, bool | np.bool_):
                    return bool(v)
                text = str(v).strip().lower()
                return True if text in _TRUE else False if text in _FALSE else None

            mapped = s.where(~missing).map(lambda v: read(v) if pd.notna(v) else None)
        out = mapped.astype("boolean")
        bad = out.isna() & ~missing
    if not spec.nullable and not out.isna().any():
        out = out.astype("bool")
    return out, bad


def _as_text(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    out = s if s.dtype == STR_DTYPE else s.astype(STR_DTYPE)
    return out, pd.Series(False, index=s.index)


def _as_datetime(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    if ptypes.is_datetime64_any_dtype(s.dtype):
        return s, pd.Series(False, index=s.index)
    missing = _missing(s)
    if ptypes.is_numeric_dtype(s.dtype):
        # Epoch numbers are ambiguous (seconds? milliseconds?): they are not read as datetimes.
        return pd.Series(pd.NaT, index=s.index, dtype="datetime64[us]"), ~missing
    text = s.where(~missing).astype(STR_DTYPE)
    try:
        out = pd.to_datetime(text, errors="coerce", format="ISO8601")
    except ValueError:  # mixed UTC offsets
        out = pd.to_datetime(text, errors="coerce", format="ISO8601", utc=True)
    return out, out.isna() & ~missing


def coerce_column(s: pd.Series, spec: ColumnSpec) -> tuple[pd.Series, pd.Series]:
    """``(values cast to spec.dtype, mask of values present but unreadable)``; unreadable become missing."""
    if dtype_matches(s.dtype, spec) and not (
        spec.dtype == "int" and str(s.dtype) == "Int64" and not spec.nullable
    ):
        return s.rename(spec.name), pd.Series(np.zeros(len(s), dtype=bool), index=s.index)
    if spec.dtype == "int":
        out, bad = _as_int(s, spec)
    elif spec.dtype == "float":
        out, bad = _as_float(s)
    elif spec.dtype == "bool":
        out, bad = _as_bool(s, spec)
    elif spec.dtype == "datetime":
        out, bad = _as_datetime(s)
    else:
        out, bad = _as_text(s)
    return out.rename(spec.name), bad.astype(bool)


def dtype_matches(dtype: Any, spec: ColumnSpec) -> bool:
    """True when a column of ``dtype`` needs no conversion for ``spec``."""
    if spec.dtype == "int":
        return str(dtype) in ("int64", "Int64")
    if spec.dtype == "float":
        return str(dtype) == "float64"
    if spec.dtype == "bool":
        return str(dtype) in ("bool", "boolean")
    if spec.dtype == "datetime":
        return bool(ptypes.is_datetime64_any_dtype(dtype))
    return bool(dtype == STR_DTYPE)


def empty_column(spec: ColumnSpec, index: pd.Index) -> pd.Series:
    """A column of missing values with the dtype ``spec`` maps to."""
    dtype = {"int": "Int64", "float": "float64", "bool": "boolean", "datetime": "datetime64[us]"}.get(
        spec.dtype, STR_DTYPE
    )
    return pd.Series(pd.array([None] * len(index), dtype=dtype), index=index, name=spec.name)


def coerce_frame(df: pd.DataFrame, contract: DataContract) -> pd.DataFrame:
    """Cast raw records to the contract's dtypes, in contract order, extra columns dropped.

    The target is kept when present and optional otherwise. Missing feature columns or values that
    cannot be read raise :class:`DataError` naming the column and examples; range and category rules
    are :func:`~mloop.data.contract.validate`'s job. A frame that already fits is returned as is.
    """
    names = [n for n in contract.names if n != contract.target or n in df.columns]
    missing = [n for n in names if n not in df.columns]
    if missing:
        present = [str(c) for c in df.columns]
        hint = did_you_mean(missing[0], present)
        raise DataError(
            f"Missing column(s) {', '.join(map(repr, missing))} required by the data contract.{hint} "
            f"Received columns: {', '.join(present) or '(none)'}."
        )
    if list(df.columns) == names and all(dtype_matches(df[n].dtype, contract.column(n)) for n in names):
        return df
    out: dict[str, pd.Series] = {}
    for name in names:
        spec = contract.column(name)
        column = df[name]
        if isinstance(column, pd.DataFrame):
            raise DataError(f"Column {name!r} appears more than once; column names must be unique.")
        if dtype_matches(column.dtype, spec):
            out[name] = column
            continue
        values, bad = coerce_column(column, spec)
        if bad.any():
            examples = ", ".join(repr(v) for v in column[bad].head(3).tolist())
            raise DataError(
                f"Column {name!r} expects {spec.dtype} values; {int(bad.sum())} could not be read as "
                f"{spec.dtype} (e.g. {examples})."
            )
        out[name] = values
    return pd.DataFrame(out, index=df.index)
