"""The fitted mloop preprocessing (``ColumnTransformer``) as plain numpy, from its fitted parameters.

For the ~64-row batches of a server, scikit-learn's ``ColumnTransformer.transform`` costs ~5 ms, almost
all of it input checking and dispatch around a few microseconds of arithmetic. This module rebuilds
the exact shape :func:`mloop.training.preprocess.build_pipeline` produces — numeric columns through
``SimpleImputer(mean|median)`` then ``StandardScaler``, category columns through
``SimpleImputer(constant|most_frequent)`` then ``OneHotEncoder(handle_unknown="ignore")`` — from the
fitted statistics, and applies it with the same float64 operations in the same order (fill, subtract
the mean, divide by the scale), so the output is bit-for-bit the same.

Anything else (another transformer, ``drop=``, infrequent categories, an indicator, sparse output,
``remainder`` columns) makes :func:`compile_columns` return None and the server keeps scikit-learn's
transform. At run time :meth:`CompiledColumns.transform` returns None for a batch it cannot reproduce
exactly (a non-numeric value in a numeric column, a non-string category), and the caller falls back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["CompiledColumns", "compile_columns"]

_NUMBER_TYPES = {int, float, bool, type(None)}


@dataclass(frozen=True, slots=True)
class _Numeric:
    columns: list[str]
    fill: np.ndarray  # imputer statistics, one per column
    mean: np.ndarray | None
    scale: np.ndarray | None
    out: slice


@dataclass(frozen=True, slots=True)
class _OneHot:
    columns: list[str]
    fill: list[str]  # what a missing value becomes before encoding
    index: list[dict[str, int]]  # category -> output column, per input column (offsets included)
    out: slice


class CompiledColumns:
    """A fitted ColumnTransformer of the supported shape, applied with numpy (see module doc)."""

    def __init__(self, blocks: list[_Numeric | _OneHot], n_out: int) -> None:
        self.blocks = blocks
        self.n_out = n_out
        self.inputs = [name for block in blocks for name in block.columns]
        """The input columns read, in block order."""

    def transform(self, frame: pd.DataFrame) -> np.ndarray | None:
        """The float64 feature matrix, or None when this batch needs scikit-learn's own transform."""
        return self._build(len(frame), lambda cols: _numeric_from_frame(frame, cols), frame)

    def transform_lists(self, values: Mapping[str, Sequence[Any]], n: int) -> np.ndarray | None:
        """The same from plain column lists (validated request values, ``None`` for missing).

        The server's path: it skips building a DataFrame, which costs more than the whole transform.
        """
        return self._build(n, lambda cols: _numeric_from_lists(values, cols), values)

    def _build(
        self,
        n: int,
        numeric: Callable[[list[str]], np.ndarray | None],
        source: pd.DataFrame | Mapping[str, Sequence[Any]],
    ) -> np.ndarray | None:
        out = np.zeros((n, self.n_out), dtype=np.float64)
        rows = np.arange(n)
        for block in self.blocks:
            if isinstance(block, _Numeric):
                x = numeric(block.columns)
                if x is None:
                    return None
                out[:, block.out] = _impute_scale(x, block)
            else:
                for name, fill, index in zip(block.columns, block.fill, block.index, strict=True):
                    col = source[name]
                    targets = _category_targets(
                        col.tolist() if isinstance(col, pd.Series) else col, fill, index
                    )
                    if targets is None:
                        return None
                    known = targets >= 0  # unknown category: all zeros (handle_unknown="ignore")
                    out[rows[known], targets[known]] = 1.0
        return out


def _numeric_from_frame(frame: pd.DataFrame, columns: list[str]) -> np.ndarray | None:
    cols = []
    for name in columns:
        series = frame[name]
        dtype = series.dtype
        if not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)):
            return None
        cols.append(series.to_numpy(dtype=np.float64, na_value=np.nan))
    return np.column_stack(cols)


def _numeric_from_lists(values: Mapping[str, Sequence[Any]], columns: list[str]) -> np.ndarray | None:
    # Validated numbers are int, float or bool (each converts to the float64 pandas would give) or
    # None (NaN). numpy would also parse strings such as "1.5": anything else goes to scikit-learn.
    lists = [values[name] for name in columns]
    if not all(set(map(type, col)) <= _NUMBER_TYPES for col in lists):
        return None
    return np.array(lists, dtype=np.float64).T


def _impute_scale(x: np.ndarray, block: _Numeric) -> np.ndarray:
    missing = np.isnan(x)
    if missing.any():
        x[missing] = np.broadcast_to(block.fill, x.shape)[missing]
    if block.mean is not None:
        x -= block.mean
    if block.scale is not None:
        x /= block.scale
    return x


def _category_targets(values: Sequence[Any], fill: str, index: dict[str, int]) -> np.ndarray | None:
    targets = np.empty(len(values), dtype=np.intp)
    for i, value in enumerate(values):
        if value is None or value is pd.NA or (type(value) is float and value != value):
            value = fill
        elif type(value) is not str:
            return None
        targets[i] = index.get(value, -1)
    return targets


def compile_columns(transformer: Any) -> CompiledColumns | None:
    """Compile a fitted ColumnTransformer of the supported shape, else None (see module doc)."""
    from sklearn.compose import ColumnTransformer

    if type(transformer) is not ColumnTransformer or not hasattr(transformer, "transformers_"):
        return None
    if getattr(transformer, "sparse_output_", False):
        return None
    slices = transformer.output_indices_
    blocks: list[_Numeric | _OneHot] = []
    for name, trans, columns in transformer.transformers_:
        out = slices[name]
        if trans == "drop" or out.stop == out.start:
            continue
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            return None
        steps = _steps(trans)
        if steps is None:
            return None
        block = _numeric(steps, columns, out) or _onehot(steps, columns, out)
        if block is None:
            return None
        blocks.append(block)
    n_out = max((b.out.stop for b in blocks), default=0)
    return CompiledColumns(blocks, n_out) if blocks else None


def _steps(trans: Any) -> list[Any] | None:
    from sklearn.pipeline import Pipeline

    if isinstance(trans, Pipeline):
        steps = [s for _, s in trans.steps if s not in (None, "passthrough")]
        return steps if all(not isinstance(s, str) for s in steps) else None
    return None if isinstance(trans, str) else [trans]


def _imputer(step: Any, strategies: tuple[str, ...]) -> bool:
    from sklearn.impute import SimpleImputer

    return (
        type(step) is SimpleImputer
        and step.strategy in strategies
        and not step.add_indicator
        and isinstance(step.missing_values, float)
        and np.isnan(step.missing_values)
    )


def _numeric(steps: list[Any], columns: list[str], out: slice) -> _Numeric | None:
    from sklearn.preprocessing import StandardScaler

    fill = None
    mean = scale = None
    rest = list(steps)
    if rest and _imputer(rest[0], ("mean", "median")):
        fill = np.asarray(rest.pop(0).statistics_, dtype=np.float64)
        if np.isnan(fill).any():  # scikit-learn drops all-missing columns; keep its transform then
            return None
    if rest and type(rest[0]) is StandardScaler:
        scaler = rest.pop(0)
        mean = np.asarray(scaler.mean_, dtype=np.float64) if scaler.with_mean else None
        scale = np.asarray(scaler.scale_, dtype=np.float64) if scaler.with_std else None
    if rest or fill is None or out.stop - out.start != len(columns):
        return None  # without an imputer, scikit-learn would reject NaN: not reproduced here
    return _Numeric(columns, fill, mean, scale, out)


def _onehot(steps: list[Any], columns: list[str], out: slice) -> _OneHot | None:
    from sklearn.preprocessing import OneHotEncoder

    if len(steps) != 2 or not _imputer(steps[0], ("constant", "most_frequent")):
        return None
    imputer, encoder = steps
    if type(encoder) is not OneHotEncoder or encoder.handle_unknown != "ignore":
        return None
    if encoder.drop_idx_ is not None or getattr(encoder, "_infrequent_enabled", False):
        return None
    if np.dtype(encoder.dtype) != np.float64:
        return None
    fills = [str(v) for v in imputer.statistics_]
    if not all(isinstance(v, str) for v in imputer.statistics_):
        return None
    index: list[dict[str, int]] = []
    offset = out.start
    for cats in encoder.categories_:
        if not all(isinstance(c, str) for c in cats):
            return None
        index.append({c: offset + i for i, c in enumerate(cats)})
        offset += len(cats)
    if offset != out.stop or len(index) != len(columns):
        return None
    return _OneHot(columns, fills, index, out)
