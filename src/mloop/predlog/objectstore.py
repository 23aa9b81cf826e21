"""Prediction log as Parquet segments on S3-compatible object storage (``s3://bucket/prefix``).

The layout is the local backend's (:mod:`mloop.predlog.parquet`):
``<prefix>/model=<name>/date=<YYYY-MM-DD>/<first-ts-µs>-<host>-<pid>-<rand>.parquet``, so the same
files can be copied between the two and read by any Parquet tool. Every replica writes its own
segments and never touches another's, which is what object storage does well: an object appears
whole when its upload completes (no temporary name and rename, no torn segment), and readers list a
model's prefix and read the days a window needs.

The filesystem is pyarrow's own ``S3FileSystem`` (the AWS SDK inside the pyarrow wheel mloop already
needs), so no further package is required. Options go in the URL query, as
:meth:`pyarrow.fs.FileSystem.from_uri` reads them — ``s3://bucket/predictions?region=eu-west-1`` or,
for MinIO and other S3 APIs, ``?endpoint_override=minio:9000&scheme=http``; credentials come from the
usual AWS variables (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``), an instance role or a web
identity, never from ``mloop.yaml``.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections import defaultdict
from datetime import date, datetime
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mloop.errors import ConfigError, StoreError
from mloop.predlog.base import PredictionLogBackend, ReadQuery
from mloop.predlog.parquet import arrow_table
from mloop.predlog.record import FLAG_PREFIX, PredictionRecord, storage_to_output

__all__ = ["ObjectStorePredictionLog"]

log = logging.getLogger(__name__)


def _safe_url(url: str) -> str:
    """``url`` without credentials (``s3://key:secret@bucket`` is accepted by pyarrow; never shown)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return urlunsplit((parts.scheme, host, parts.path, parts.query, ""))


class ObjectStorePredictionLog(PredictionLogBackend):
    """Parquet segments under an ``s3://bucket/prefix`` URL, shared by every replica and the loop."""

    def __init__(self, url: str) -> None:
        self.url = _safe_url(url)
        try:
            fs, path = pafs.FileSystem.from_uri(url)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, OSError) as exc:
            raise ConfigError(
                f"prediction_log.url {self.url!r} is not an object-storage URL pyarrow can open: {exc}. "
                "Expected s3://bucket/prefix, with options such as ?region=… or "
                "?endpoint_override=host:port&scheme=http in the query."
            ) from exc
        self._fs: pafs.FileSystem = fs
        self.root = path.rstrip("/")
        if "/" not in self.root:
            # A prefix of its own keeps the log's objects apart from anything else in the bucket.
            raise ConfigError(
                f"prediction_log.url {self.url!r} names a bucket without a prefix; add one, e.g. "
                f"s3://{self.root}/predictions."
            )
        try:
            info = self._fs.get_file_info(self.root.split("/", 1)[0])
        except OSError as exc:
            raise self._error("reach its bucket", exc) from exc
        if info.type == pafs.FileType.NotFound:
            raise StoreError(
                f"The bucket of prediction_log.url {self.url!r} does not exist (or these credentials "
                "cannot see it); create it, or correct the URL."
            )

    def __repr__(self) -> str:
        return f"ObjectStorePredictionLog({self.url!r})"

    def _error(self, action: str, exc: BaseException) -> StoreError:
        return StoreError(
            f"The prediction log at {self.url} could not {action}: {exc}. Check the URL, the endpoint "
            "and the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a role)."
        )

    # -- writing -------------------------------------------------------------------------------
    def _write_batch(self, records: list[PredictionRecord]) -> None:
        groups: dict[tuple[str, date], list[PredictionRecord]] = defaultdict(list)
        for rec in records:
            groups[(rec.model_name, rec.ts.date())].append(rec)
        # Every table is built before anything is uploaded (as the local backend does): a record
        # Arrow cannot hold refuses the batch with nothing written, so the isolating retry never
        # writes a row twice.
        tables = [
            (self._day_dir(model, day), group, arrow_table(group)) for (model, day), group in groups.items()
        ]
        for folder, group, table in tables:
            first_us = int(min(rec.ts for rec in group).timestamp() * 1_000_000)
            name = f"{first_us:017d}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
            try:
                pq.write_table(table, f"{folder}/{name}", filesystem=self._fs, compression="zstd")
            except (OSError, pa.ArrowException) as exc:
                raise self._error(f"write a segment of {len(group)} predictions", exc) from exc

    def _model_dir(self, model: str) -> str:
        return f"{self.root}/model={quote(model, safe='')}"

    def _day_dir(self, model: str, day: date) -> str:
        return f"{self._model_dir(model)}/date={day.isoformat()}"

    # -- listing -------------------------------------------------------------------------------
    def _files(self, model_name: str | None) -> list[tuple[str, str, str]]:
        """(model folder name, day, path) of every segment, for one model or all."""
        base = self._model_dir(model_name) if model_name is not None else self.root
        try:
            infos = self._fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        except OSError as exc:
            raise self._error("list its segments", exc) from exc
        out = []
        for info in infos:
            if info.type != pafs.FileType.File or not info.path.endswith(".parquet"):
                continue
            parts = info.path[len(self.root) + 1 :].split("/")
            if len(parts) == 3 and parts[0].startswith("model=") and parts[1].startswith("date="):
                out.append((parts[0], parts[1][len("date=") :], info.path))
        return out

    def _days(self, query: ReadQuery) -> list[tuple[str, list[str]]]:
        """(day, segment paths of that day across the selected models), newest day first."""
        lo = query.since.date().isoformat() if query.since else None
        hi = query.until.date().isoformat() if query.until else None
        by_day: dict[str, list[str]] = defaultdict(list)
        for _model, day, path in self._files(query.model_name):
            if (lo and day < lo) or (hi and day > hi):
                continue
            by_day[day].append(path)
        return sorted(by_day.items(), reverse=True)

    # -- reading -------------------------------------------------------------------------------
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
            if query.last_n is not None and rows >= query.last_n:
                break  # days are disjoint in time: older days cannot hold newer rows
        if not tables:
            return pd.DataFrame()
        try:
            frame = pa.concat_tables(tables, promote_options="permissive").to_pandas()
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            frame = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
        return storage_to_output(frame)

    def _versions(self, ids: set[str], model_name: str, since: datetime | None) -> dict[str, str]:
        # Three columns of each day's segments in one dataset scan, newest day first, until every
        # id is found: labels mostly name recent predictions.
        shadow = f"{FLAG_PREFIX}shadow"
        schema = pa.schema(
            [("prediction_id", pa.string()), ("model_version", pa.string()), (shadow, pa.bool_())]
        )
        found: dict[str, str] = {}
        remaining = set(ids)
        for _day, paths in self._days(ReadQuery(model_name=model_name, since=since)):
            try:
                table = ds.dataset(paths, schema=schema, format="parquet", filesystem=self._fs).to_table(
                    filter=ds.field("prediction_id").isin(sorted(remaining))
                )
            except (pa.ArrowException, OSError) as exc:
                log.warning("Looking up prediction ids in %d segments failed: %s", len(paths), exc)
                continue
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

    def _count(self, model_name: str | None) -> int:
        total = 0
        for _model, _day, path in self._files(model_name):
            try:
                with self._fs.open_input_file(path) as fh:
                    total += pq.ParquetFile(fh).metadata.num_rows
            except FileNotFoundError:
                continue
            except (pa.ArrowException, OSError) as exc:
                log.warning("Skipping unreadable prediction log segment %s: %s", path, exc)
        return total

    def _delete_before(self, cutoff: datetime) -> int:
        # Whole days only (a segment holds one day of one model): a day goes once all of it is older.
        deleted = 0
        for _model, day, path in self._files(None):
            if day < cutoff.date().isoformat():
                try:
                    with self._fs.open_input_file(path) as fh:
                        rows = pq.ParquetFile(fh).metadata.num_rows
                    self._fs.delete_file(path)
                except FileNotFoundError:
                    continue
                except (pa.ArrowException, OSError) as exc:
                    raise self._error(f"delete segment {path}", exc) from exc
                deleted += rows
        return deleted

    def model_names(self) -> list[str]:
        """Models that have logged predictions."""
        return sorted({unquote(m[len("model=") :]) for m, _day, _path in self._files(None)})
