"""Prediction log as Parquet segments over a pyarrow filesystem: the part both file backends share.

Layout: ``<root>/model=<name>/date=<YYYY-MM-DD>/<first-ts-µs>-…-<rand>.parquet``. Each flush writes
one segment per (model, day); segments are never changed once written, so several processes can
write and read the same root. Partitioning by model and day lets a read of a recent window open only
the newest days; segment names start with their first timestamp, so they sort by time within a day.

:class:`SegmentedParquetLog` holds the reading, the id lookup for ``/feedback``, counting, retention
and the grouping of a batch into segments; a backend says only how segments are listed, written and
deleted on its storage (:mod:`mloop.predlog.parquet` on local disk with a temporary name, fsync and
rename; :mod:`mloop.predlog.objectstore` on S3-compatible storage, where an upload appears whole).
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mloop.errors import StoreError
from mloop.predlog.base import PredictionLogBackend, ReadQuery, RecordsRefused
from mloop.predlog.record import FLAG_PREFIX, PredictionRecord, records_to_columns, storage_to_output
from mloop.store.jsonutil import dumps

__all__ = ["Listing", "SegmentedParquetLog", "arrow_table"]

log = logging.getLogger(__name__)

#: Segments of each selected day, by day (``YYYY-MM-DD``): what a backend's listing returns.
Listing = dict[str, list[str]]

#: Per-day lookups of prediction ids read the newest segments of a day first, in chunks of this many.
_ID_CHUNK = 16


def _arrow_column(name: str, values: list[Any]) -> pa.Array:
    if name == "ts":
        return pa.array(values, type=pa.timestamp("us", tz="UTC"))
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError):
        # Mixed types in one column (e.g. 3 and "3"): keep every value readable as JSON text.
        return pa.array([None if v is None else (v if isinstance(v, str) else dumps(v, str)) for v in values])


def arrow_table(records: list[PredictionRecord]) -> pa.Table:
    """The Arrow table of ``records``; :class:`RecordsRefused` when some value cannot be held."""
    try:
        columns = records_to_columns(records)
        return pa.table({name: _arrow_column(name, values) for name, values in columns.items()})
    except (pa.ArrowException, TypeError, ValueError, OverflowError, AttributeError) as exc:
        raise RecordsRefused(f"Arrow cannot hold these predictions: {type(exc).__name__}: {exc}") from exc


def model_folder(model: str) -> str:
    """The folder name of ``model``'s segments (any model name is safe in it)."""
    return f"model={quote(model, safe='')}"


def folder_model(folder: str) -> str:
    """The model name a ``model=…`` folder holds (inverse of :func:`model_folder`)."""
    return unquote(folder[len("model=") :])


class SegmentedParquetLog(PredictionLogBackend):
    """Parquet segments under ``root`` on ``fs``; a subclass lists, writes and deletes them."""

    def __init__(self, fs: pafs.FileSystem, root: str) -> None:
        self._fs = fs
        self.root = root.rstrip("/")

    # -- what a backend provides ---------------------------------------------------------------
    @abstractmethod
    def _list(self, model_name: str | None, lo: str | None, hi: str | None) -> Listing:
        """Segments of ``model_name`` (or every model) whose day is within ``[lo, hi]`` (either open)."""

    @abstractmethod
    def _put_segment(self, folder: str, name: str, table: pa.Table) -> None:
        """Write ``table`` as segment ``folder/name`` so that readers see all of it or nothing."""

    @abstractmethod
    def _model_folders(self) -> list[str]:
        """The ``model=…`` folder names under the root."""

    @abstractmethod
    def _segment_name(self, first_us: int) -> str:
        """The file name of a new segment whose first prediction is at ``first_us`` (µs since epoch)."""

    def _day_emptied(self, model_folder_name: str, day: str) -> None:
        """Called once retention has deleted a day's segments (local disk removes the folder)."""

    def _error(self, action: str, exc: BaseException) -> StoreError:
        return StoreError(f"The prediction log {self!r} could not {action}: {exc}.")

    # -- writing -------------------------------------------------------------------------------
    def _day_dir(self, model: str, day: date | str) -> str:
        day_text = day if isinstance(day, str) else day.isoformat()
        return f"{self.root}/{model_folder(model)}/date={day_text}"

    def _write_batch(self, records: list[PredictionRecord]) -> None:
        groups: dict[tuple[str, date], list[PredictionRecord]] = defaultdict(list)
        for rec in records:
            groups[(rec.model_name, rec.ts.date())].append(rec)
        # Every table is built before any segment is written: a record Arrow cannot hold refuses the
        # batch with nothing stored, so the isolating retry never writes a row twice.
        tables = [
            (self._day_dir(model, day), group, arrow_table(group)) for (model, day), group in groups.items()
        ]
        for folder, group, table in tables:
            first_us = int(min(rec.ts for rec in group).timestamp() * 1_000_000)
            self._put_segment(folder, self._segment_name(first_us), table)

    # -- reading -------------------------------------------------------------------------------
    def _days(self, query: ReadQuery) -> list[tuple[str, list[str]]]:
        """(day, segments of that day across the selected models), newest day first."""
        lo = query.since.date().isoformat() if query.since else None
        hi = query.until.date().isoformat() if query.until else None
        return sorted(self._list(query.model_name, lo, hi).items(), reverse=True)

    def _read_segment(self, path: str, query: ReadQuery) -> pa.Table | None:
        filters: list[Any] = []
        if query.since is not None:
            filters.append(("ts", ">=", pd.Timestamp(query.since)))
        if query.until is not None:
            filters.append(("ts", "<", pd.Timestamp(query.until)))
        if query.model_version is not None:
            filters.append(("model_version", "==", query.model_version))
        try:
            return pq.read_table(path, filesystem=self._fs, filters=filters or None)
        except FileNotFoundError:
            return None  # removed by retention between listing and reading
        except (pa.ArrowException, OSError) as exc:
            log.warning("Skipping unreadable prediction log segment %s: %s", path, exc)
            return None

    def _read(self, query: ReadQuery) -> pd.DataFrame:
        tables: list[pa.Table] = []
        rows = 0
        for _day, paths in self._days(query):
            for path in paths:
                table = self._read_segment(path, query)
                if table is not None and table.num_rows:
                    tables.append(table)
                    rows += table.num_rows
            # Days are disjoint in time, so once the newest days hold last_n rows older days cannot matter.
            if query.last_n is not None and rows >= query.last_n:
                break
        if not tables:
            return pd.DataFrame()
        try:
            frame = pa.concat_tables(tables, promote_options="permissive").to_pandas()
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # A column changed type between segments (e.g. a feature went from int to str).
            frame = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
        return storage_to_output(frame)

    def _versions(self, ids: set[str], model_name: str, since: datetime | None) -> dict[str, str]:
        # Three columns of each segment, one day at a time, newest first (labels mostly name recent
        # predictions; the scan stops once every id is found). Each chunk is one multithreaded dataset
        # scan: about 3x faster than opening its segments one by one. The cost still grows with the
        # number of segments in the window (serving.feedback_max_age_days); see docs/security.md.
        found: dict[str, str] = {}
        remaining = set(ids)
        shadow = f"{FLAG_PREFIX}shadow"
        schema = pa.schema(
            [("prediction_id", pa.string()), ("model_version", pa.string()), (shadow, pa.bool_())]
        )
        chunks = [
            chunk
            for _day, paths in self._days(ReadQuery(model_name=model_name, since=since))
            # Segment names start with their first timestamp: the newest of a day are read first.
            for chunk in (sorted(paths, reverse=True)[:_ID_CHUNK], sorted(paths, reverse=True)[_ID_CHUNK:])
            if chunk
        ]
        for chunk in chunks:
            try:
                table = self._id_scan(chunk, remaining, schema)
            except (pa.ArrowException, OSError) as exc:  # e.g. a segment removed by retention meanwhile
                log.warning("Looking up prediction ids failed (%s); retrying segment by segment", exc)
                table = self._versions_one_by_one(chunk, remaining, schema)
            for pid, version, flag in zip(
                table.column("prediction_id").to_pylist(),
                table.column("model_version").to_pylist(),
                table.column(shadow).to_pylist(),
                strict=True,
            ):
                if not flag:
                    found[pid] = str(version)
                    remaining.discard(pid)
            if not remaining:
                break
        return found

    def _id_scan(self, paths: list[str], ids: set[str], schema: pa.Schema) -> pa.Table:
        dataset = ds.dataset(paths, schema=schema, format="parquet", filesystem=self._fs)
        return dataset.to_table(filter=ds.field("prediction_id").isin(sorted(ids)))

    def _versions_one_by_one(self, paths: list[str], ids: set[str], schema: pa.Schema) -> pa.Table:
        tables = []
        for path in paths:
            try:
                tables.append(self._id_scan([path], ids, schema))
            except (pa.ArrowException, OSError) as exc:
                log.warning("Skipping unreadable prediction log segment %s: %s", path, exc)
        return pa.concat_tables(tables) if tables else schema.empty_table()

    def _rows(self, path: str) -> int:
        with self._fs.open_input_file(path) as fh:
            return int(pq.ParquetFile(fh).metadata.num_rows)

    def _count(self, model_name: str | None) -> int:
        total = 0
        for paths in self._list(model_name, None, None).values():
            for path in paths:
                try:
                    total += self._rows(path)
                except FileNotFoundError:
                    continue
                except (pa.ArrowException, OSError) as exc:
                    log.warning("Skipping unreadable prediction log segment %s: %s", path, exc)
        return total

    # -- retention -----------------------------------------------------------------------------
    def _delete_before(self, cutoff: datetime) -> int:
        # Whole days only (a segment holds one day of one model): a day goes once all of it is older.
        last_day = (cutoff.date() - timedelta(days=1)).isoformat()
        deleted = 0
        for folder in self._model_folders():
            for day, paths in self._list(folder_model(folder), None, last_day).items():
                for path in paths:
                    try:
                        rows = self._rows(path)
                        self._fs.delete_file(path)
                    except FileNotFoundError:
                        continue
                    except (pa.ArrowException, OSError) as exc:
                        raise self._error(f"delete segment {path}", exc) from exc
                    deleted += rows
                self._day_emptied(folder, day)
        return deleted

    def model_names(self) -> list[str]:
        """Models that have logged predictions."""
        return sorted(folder_model(folder) for folder in self._model_folders())
