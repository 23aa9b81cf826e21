"""Prediction log as Parquet segments on local disk (the embedded default, ``.mloop/predictions``).

Layout: ``<dir>/model=<name>/date=<YYYY-MM-DD>/<first-ts-µs>-<pid>-<rand>.parquet``. Each flush
writes one segment per (model, day) to a hidden temporary name, fsyncs it and renames it into place,
so a crash leaves either a whole segment or a hidden ``.tmp`` file that readers skip — never a torn
segment. Partitioning by model and day lets a read of a recent window open only the newest folders;
segment names start with their first timestamp so they sort by time within a day.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from mloop.errors import StoreError
from mloop.predlog.base import PredictionLogBackend, ReadQuery, RecordsRefused
from mloop.predlog.record import FLAG_PREFIX, PredictionRecord, records_to_columns, storage_to_output
from mloop.store.jsonutil import dumps

__all__ = ["ParquetPredictionLog", "arrow_table"]

log = logging.getLogger(__name__)
TEMP_SUFFIX = ".tmp"


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


class ParquetPredictionLog(PredictionLogBackend):
    """Parquet segments under ``directory``; one writer process per directory is assumed per segment
    name, several processes may write and read the same directory at once."""

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.directory = Path(directory).expanduser().resolve()
        self.fsync = fsync
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"Cannot create the prediction log directory {self.directory}: {exc.strerror}. "
                "Set prediction_log.url to a writable directory."
            ) from exc

    def __repr__(self) -> str:
        return f"ParquetPredictionLog({str(self.directory)!r})"

    # -- writing -------------------------------------------------------------------------------
    def _write_batch(self, records: list[PredictionRecord]) -> None:
        groups: dict[tuple[str, date], list[PredictionRecord]] = defaultdict(list)
        for rec in records:
            groups[(rec.model_name, rec.ts.date())].append(rec)
        # Every table is built before any segment is written: a record Arrow cannot hold refuses the
        # batch before anything is on disk, so the isolating retry never writes a row twice.
        tables = []
        for (model, day), group in groups.items():
            folder = self.directory / f"model={quote(model, safe='')}" / f"date={day.isoformat()}"
            tables.append((folder, group, arrow_table(group)))
        for folder, group, table in tables:
            self._write_segment(folder, group, table)

    def _write_segment(self, folder: Path, records: list[PredictionRecord], table: pa.Table) -> None:
        first_us = int(min(rec.ts for rec in records).timestamp() * 1_000_000)
        name = f"{first_us:017d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
        final, temp = folder / name, folder / f".{name}{TEMP_SUFFIX}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with open(temp, "wb") as fh:
                pq.write_table(table, fh, compression="zstd")
                if self.fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(temp, final)
            if self.fsync and os.name == "posix":
                dir_fd = os.open(folder, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise StoreError(f"Cannot write prediction log segment {final}: {exc.strerror or exc}.") from exc

    # -- reading -------------------------------------------------------------------------------
    def _model_dirs(self, model_name: str | None) -> list[Path]:
        if model_name is not None:
            folder = self.directory / f"model={quote(model_name, safe='')}"
            return [folder] if folder.is_dir() else []
        return sorted(p for p in self.directory.glob("model=*") if p.is_dir())

    def _days(self, query: ReadQuery) -> list[tuple[str, list[Path]]]:
        """(day, segments of that day across the selected models), newest day first."""
        lo = query.since.date().isoformat() if query.since else None
        hi = query.until.date().isoformat() if query.until else None
        by_day: dict[str, list[Path]] = defaultdict(list)
        for model_dir in self._model_dirs(query.model_name):
            for day_dir in model_dir.glob("date=*"):
                day = day_dir.name[len("date=") :]
                if (lo and day < lo) or (hi and day > hi):
                    continue
                by_day[day].extend(self._segments(day_dir))
        return sorted(by_day.items(), reverse=True)

    @staticmethod
    def _segments(folder: Path) -> Iterator[Path]:
        # Temporary files are hidden and end in .tmp: a glob on *.parquet never sees them.
        return (p for p in folder.glob("*.parquet") if not p.name.startswith("."))

    def segments(self) -> list[Path]:
        """Every complete segment file (for tools and tests)."""
        return sorted(p for m in self._model_dirs(None) for d in m.glob("date=*") for p in self._segments(d))

    def _read_segment(self, path: Path, query: ReadQuery) -> pa.Table | None:
        filters = []
        if query.since is not None:
            filters.append(("ts", ">=", pd.Timestamp(query.since)))
        if query.until is not None:
            filters.append(("ts", "<", pd.Timestamp(query.until)))
        if query.model_version is not None:
            filters.append(("model_version", "==", query.model_version))
        try:
            return pq.read_table(path, filters=filters or None)
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
        # predictions; the scan stops once every id is found). Each day is one multithreaded dataset
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
            # Segment names start with their first timestamp: the newest 16 of a day are read first.
            for chunk in (sorted(paths, reverse=True)[:16], sorted(paths, reverse=True)[16:])
            if chunk
        ]
        for chunk in chunks:
            try:
                table = ds.dataset([str(p) for p in chunk], schema=schema, format="parquet").to_table(
                    filter=ds.field("prediction_id").isin(sorted(remaining))
                )
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

    @staticmethod
    def _versions_one_by_one(paths: list[Path], ids: set[str], schema: pa.Schema) -> pa.Table:
        tables = []
        for path in paths:
            try:
                tables.append(
                    ds.dataset(str(path), schema=schema, format="parquet").to_table(
                        filter=ds.field("prediction_id").isin(sorted(ids))
                    )
                )
            except (pa.ArrowException, OSError) as exc:
                log.warning("Skipping unreadable prediction log segment %s: %s", path, exc)
        return pa.concat_tables(tables) if tables else schema.empty_table()

    def _count(self, model_name: str | None) -> int:
        total = 0
        for model_dir in self._model_dirs(model_name):
            for day_dir in model_dir.glob("date=*"):
                for path in self._segments(day_dir):
                    try:
                        total += pq.ParquetFile(path).metadata.num_rows
                    except FileNotFoundError:
                        continue
                    except (pa.ArrowException, OSError) as exc:
                        log.warning("Skipping unreadable prediction log segment %s: %s", path, exc)
        return total

    def _delete_before(self, cutoff: datetime) -> int:
        # Whole days only (a segment holds one day of one model): a day goes once all of it is older.
        deleted = 0
        for model_dir in self._model_dirs(None):
            for day_dir in model_dir.glob("date=*"):
                if day_dir.name[len("date=") :] >= cutoff.date().isoformat():
                    continue
                for path in self._segments(day_dir):
                    try:
                        deleted += pq.ParquetFile(path).metadata.num_rows
                        path.unlink()
                    except FileNotFoundError:
                        continue
                    except (pa.ArrowException, OSError) as exc:
                        raise StoreError(f"Cannot delete prediction log segment {path}: {exc}.") from exc
                with contextlib.suppress(OSError):  # a writer put a segment in it meanwhile: keep it
                    day_dir.rmdir()
        return deleted

    def model_names(self) -> list[str]:
        """Models that have logged predictions."""
        return [unquote(p.name[len("model=") :]) for p in self._model_dirs(None)]
