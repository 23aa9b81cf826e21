"""The reference profile: what drift is measured against, saved with each model version.

A profile summarises a reference table column by column — kind, counts, missing rate, min/max,
mean/std, a fine quantile grid, a plotting histogram, category (or discrete value) frequencies, the
number of distinct values and a bounded uniform sample — so that a monitor never reloads the raw
training set. Its JSON size is bounded: at most ``sample_rows`` sampled values, ``QUANTILE_BINS + 1``
quantiles and ``MAX_LEVELS`` categories per column, whatever the number of reference rows.

    profile = build_profile(train_df.assign(prediction=holdout_pred), categorical=["country"])
    profile.save("reference_profile.json")
    same = ReferenceProfile.load("reference_profile.json")
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from mloop.errors import MonitoringError
from mloop.monitoring.multivariate import JOINT_ROWS, JointSample

__all__ = [
    "DISCRETE_MAX",
    "MAX_LEVELS",
    "QUANTILE_BINS",
    "ColumnProfile",
    "ReferenceProfile",
    "build_profile",
    "is_numeric_series",
    "numeric_values",
    "sorted_quantiles",
]

QUANTILE_BINS = 1000
"""Quantile bins of the reference: fine enough for Wasserstein/KS within 0.1% of the exact value."""
MAX_LEVELS = 1000
"""Most frequent categories kept per column; the rest are counted together in ``other_count``."""
DISCRETE_MAX = 20
"""Numeric columns with at most this many distinct values also keep exact value frequencies."""
HIST_BINS = 30
PROFILE_VERSION = 1

Kind = Literal["numeric", "categorical", "binary"]


@dataclass
class ColumnProfile:
    """Summary of one reference column (``numeric`` tells the value type, ``kind`` the role)."""

    name: str
    kind: Kind
    numeric: bool
    count: int
    n_missing: int
    n_unique: int
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    quantiles: list[float] = field(default_factory=list)
    hist_edges: list[float] = field(default_factory=list)
    hist_counts: list[int] = field(default_factory=list)
    levels: list[Any] = field(default_factory=list)
    level_counts: list[int] = field(default_factory=list)
    other_count: int = 0
    sample: list[Any] = field(default_factory=list)
    source_numeric: bool = False
    """The raw column held numbers (True for numeric columns and for number codes forced categorical)."""
    # Calibrated null distributions, keyed by (test, window rows); never serialised.
    cache: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_valid(self) -> int:
        """Non-missing reference values: the sample size every test sees."""
        return self.count - self.n_missing

    @property
    def missing_rate(self) -> float:
        return self.n_missing / self.count if self.count else 0.0

    @property
    def complete_sample(self) -> bool:
        """True when ``sample`` holds every non-missing reference value (small references)."""
        return len(self.sample) == self.n_valid

    @property
    def discrete(self) -> bool:
        """True when exact frequencies are known (categorical, or few distinct numeric values)."""
        return bool(self.levels) or self.n_valid == 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("cache")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ColumnProfile:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "cache"}
        unknown = set(data) - set(known) - {"cache"}
        if unknown:
            raise MonitoringError(
                f"Reference profile column {data.get('name')!r} has unknown keys {sorted(unknown)}; "
                "expected a profile written by mloop.monitoring.profile. Rebuild it with build_profile()."
            )
        return cls(**known)


@dataclass
class ReferenceProfile:
    """Per-column profiles of a reference table, in column order."""

    columns: dict[str, ColumnProfile]
    rows: int
    version: int = PROFILE_VERSION
    joint: JointSample | None = None
    """Whole reference rows for the multivariate check (None in profiles written before it existed)."""

    def __getitem__(self, name: str) -> ColumnProfile:
        return self.columns[name]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "version": self.version,
            "rows": self.rows,
            "columns": [c.to_dict() for c in self.columns.values()],
        }
        if self.joint is not None:
            data["joint"] = self.joint.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReferenceProfile:
        if not isinstance(data, dict) or "columns" not in data:
            raise MonitoringError(
                "A reference profile must be a JSON object with 'version', 'rows' and 'columns'; "
                f"got {type(data).__name__} with keys {sorted(data) if isinstance(data, dict) else '-'}."
            )
        version = int(data.get("version", PROFILE_VERSION))
        if version > PROFILE_VERSION:
            raise MonitoringError(
                f"Reference profile version {version} is newer than this mloop understands "
                f"({PROFILE_VERSION}); upgrade mloop."
            )
        cols = [ColumnProfile.from_dict(c) for c in data["columns"]]
        joint = JointSample.from_dict(data["joint"]) if data.get("joint") is not None else None
        return cls(columns={c.name: c for c in cols}, rows=int(data["rows"]), version=version, joint=joint)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False, separators=(",", ":"))

    def save(self, path: str | os.PathLike[str]) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.to_json(), encoding="utf-8")
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ReferenceProfile:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise MonitoringError(f"Reference profile {str(path)!r} does not exist.") from exc
        except (OSError, ValueError) as exc:
            raise MonitoringError(f"Reference profile {str(path)!r} is not readable JSON: {exc}.") from exc
        return cls.from_dict(data)


def is_numeric_series(series: pd.Series) -> bool:
    """Numbers and booleans are numeric; strings, categories, objects and dates are categorical."""
    return bool(pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype))


def numeric_values(series: pd.Series) -> np.ndarray:
    """The column as float64 with missing and infinite values as NaN (no copy when already float)."""
    if series.dtype == np.float64:
        values = series.to_numpy()  # a view: no copy of a large column just to read it
    else:
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    inf = np.isinf(values)
    if inf.any():
        values = np.where(inf, np.nan, values)
    return np.asarray(values, dtype=np.float64)


def sorted_quantiles(ordered: np.ndarray, bins: int) -> np.ndarray:
    """Quantiles at levels ``i / bins`` of an already sorted array (numpy's linear rule, no re-sort)."""
    pos = np.linspace(0.0, ordered.size - 1, bins + 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, ordered.size - 1)
    return np.asarray(ordered[lo] + (pos - lo) * (ordered[hi] - ordered[lo]))


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _profile_numeric(
    name: str, series: pd.Series, sample_rows: int, rng: np.random.Generator
) -> ColumnProfile:
    values = numeric_values(series)
    nan = np.isnan(values)
    valid = values[~nan] if nan.any() else values
    n = valid.size
    prof = ColumnProfile(
        name=name,
        kind="numeric",
        numeric=True,
        count=len(values),
        n_missing=len(values) - n,
        n_unique=0,
        source_numeric=True,
    )
    if n == 0:
        return prof
    ordered = np.sort(valid)
    # A boolean mask (1 byte a row) rather than np.diff (8 bytes a row): profiles run column-parallel.
    distinct = ordered[1:] != ordered[:-1]
    prof.n_unique = int(np.count_nonzero(distinct)) + 1
    prof.kind = "binary" if prof.n_unique <= 2 else "numeric"
    prof.min, prof.max = float(ordered[0]), float(ordered[-1])
    mean = float(valid.mean())
    centred = valid - mean
    prof.mean, prof.std = _finite(mean), _finite(math.sqrt(float(np.dot(centred, centred)) / n))
    del centred
    prof.quantiles = sorted_quantiles(ordered, QUANTILE_BINS).tolist()
    edges = (
        np.linspace(prof.min, prof.max, HIST_BINS + 1)
        if prof.max > prof.min
        else np.array([prof.min - 0.5, prof.max + 0.5])
    )
    prof.hist_edges = edges.tolist()
    at = np.searchsorted(ordered, edges, side="right")
    at[0] = 0
    prof.hist_counts = np.diff(at).tolist()
    if prof.n_unique <= DISCRETE_MAX:
        starts = np.concatenate(([0], np.flatnonzero(distinct) + 1))
        prof.levels = ordered[starts].tolist()
        prof.level_counts = np.diff(np.concatenate((starts, [n]))).tolist()
    take = n if n <= sample_rows else sample_rows
    idx = np.sort(rng.choice(n, size=take, replace=False)) if take < n else np.arange(n)
    prof.sample = ordered[idx].tolist()
    return prof


def _profile_categorical(
    name: str, series: pd.Series, sample_rows: int, rng: np.random.Generator
) -> ColumnProfile:
    missing = series.isna().to_numpy()
    labels = (series[~missing] if missing.any() else series).astype(str)
    counts = labels.value_counts(sort=True)
    n = int(labels.size)
    prof = ColumnProfile(
        name=name,
        kind="categorical",
        numeric=False,
        count=len(series),
        n_missing=int(missing.sum()),
        n_unique=int(counts.size),
        source_numeric=is_numeric_series(series),
    )
    if n == 0:
        return prof
    prof.kind = "binary" if prof.n_unique <= 2 else "categorical"
    kept = counts.iloc[:MAX_LEVELS]
    prof.levels = [str(v) for v in kept.index]
    prof.level_counts = [int(c) for c in kept.to_numpy()]
    prof.other_count = n - int(sum(prof.level_counts))
    take = min(n, sample_rows)
    idx = np.sort(rng.choice(n, size=take, replace=False)) if take < n else np.arange(n)
    # iloc before tolist: converting a whole column of text to Python objects costs ~60 B a row.
    prof.sample = labels.iloc[idx].tolist()
    return prof


def build_profile(
    df: pd.DataFrame,
    *,
    categorical: Sequence[str] | None = None,
    sample_rows: int = 10_000,
    joint_rows: int = JOINT_ROWS,
    seed: int = 0,
) -> ReferenceProfile:
    """Profile every column of ``df`` (in parallel: numpy releases the GIL while sorting).

    ``categorical`` forces columns to be treated as categories even when they hold numbers (codes,
    zip codes); every other non-numeric column is categorical anyway. ``joint_rows`` whole rows are
    kept for the multivariate check (0: none).
    """
    if not isinstance(df, pd.DataFrame):
        raise MonitoringError(f"build_profile expects a pandas DataFrame; got {type(df).__name__}.")
    if sample_rows < 1:
        raise MonitoringError(f"sample_rows must be at least 1; got {sample_rows}.")
    forced = set(categorical or ())
    unknown = forced - set(map(str, df.columns))
    if unknown:
        raise MonitoringError(
            f"categorical names columns {sorted(unknown)} that the reference does not have; "
            f"its columns are {list(map(str, df.columns))}."
        )

    def one(i_name: tuple[int, Any]) -> ColumnProfile:
        i, name = i_name
        series = df[name]
        rng = np.random.default_rng([seed, i])
        if str(name) not in forced and is_numeric_series(series):
            return _profile_numeric(str(name), series, sample_rows, rng)
        return _profile_categorical(str(name), series, sample_rows, rng)

    workers = max(1, min(len(df.columns), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        cols = list(pool.map(one, enumerate(df.columns)))
    joint = (
        JointSample.build(df, {c.name: c.numeric for c in cols}, rows=joint_rows, seed=seed)
        if joint_rows > 0 and len(df)
        else None
    )
    return ReferenceProfile(columns={c.name: c for c in cols}, rows=len(df), joint=joint)
