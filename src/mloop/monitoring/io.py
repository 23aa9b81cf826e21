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

__all__ = ["TABLE_SUFFIXES", "check_table", "load_reference", "read_table"]

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def check_table(path: str | os.PathLike[str]) -> Path:
    """``path`` if it names an existing CSV or Parquet file, else the :class:`MonitoringError`
    :func:`read_table` would raise (cheap: a caller can check before long work)."""
    file = Path(path)
    if not file.is_file():
        raise MonitoringError(f"Data file {str(file)!r} does not exist.")
    if file.suffix.lower() not in TABLE_SUFFIXES:
        raise MonitoringError(
            f"Cannot read {str(file)!r}: expected a {', '.join(TABLE_SUFFIXES)} file "
            "(or, for the reference, a profile .json)."
        )
    return file


def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame."""
    file = check_table(path)
    suffix = file.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(file)
        return _read_parquet(file)
    except Exception as exc:  # pandas/pyarrow raise many types for a malformed file
        raise MonitoringError(f"Cannot read {str(file)!r} as {suffix[1:]}: {exc}.") from exc


def _read_parquet(file: Path) -> pd.DataFrame:
    """A Parquet file as pandas, one column at a time (the index the writer stored is dropped).

    ``pd.read_parquet`` decodes the whole table and then converts it, holding both at once: about
    twice the frame. Column by column, only one column's Arrow buffers are held beside the frame
    (a 1M x 25 file: 886 MB -> about 500 MB at the peak of ``mloop drift``), at the same speed.
    """
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(file)
    schema = parquet.schema_arrow
    stored_index = set()
    for entry in (schema.pandas_metadata or {}).get("index_columns", []):
        if isinstance(entry, str):  # a RangeIndex is stored as metadata, not as a column
            stored_index.add(entry)
    names = [name for name in schema.names if name not in stored_index]
    columns = {name: parquet.read(columns=[name]).column(0).to_pandas() for name in names}
    return pd.DataFrame(columns, copy=False)


def load_reference(path: str | os.PathLike[str]) -> ReferenceProfile | pd.DataFrame:
    """A saved reference profile (``.json``) or a data file to profile."""
    if Path(path).suffix.lower() == ".json":
        return ReferenceProfile.load(path)
    return read_table(path)
