"""Reading the two sides of a drift check from files: CSV, Parquet, or a saved profile (JSON).

Used by ``mloop drift REFERENCE CURRENT``; every failure is a :class:`~mloop.errors.MonitoringError`
naming the file and what was expected.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from mloop.errors import MonitoringError
from mloop.monitoring.profile import ReferenceProfile

__all__ = ["TABLE_SUFFIXES", "load_reference", "read_table"]

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame."""
    file = Path(path)
    if not file.is_file():
        raise MonitoringError(f"Data file {str(file)!r} does not exist.")
    suffix = file.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(file)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(file)
    except Exception as exc:  # pandas/pyarrow raise many types for a malformed file
        raise MonitoringError(f"Cannot read {str(file)!r} as {suffix[1:]}: {exc}.") from exc
    raise MonitoringError(
        f"Cannot read {str(file)!r}: expected a {', '.join(TABLE_SUFFIXES)} file "
        "(or, for the reference, a profile .json)."
    )


def load_reference(path: str | os.PathLike[str]) -> ReferenceProfile | pd.DataFrame:
    """A saved reference profile (``.json``) or a data file to profile."""
    if Path(path).suffix.lower() == ".json":
        return ReferenceProfile.load(path)
    return read_table(path)
