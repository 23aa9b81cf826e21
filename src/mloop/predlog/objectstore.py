"""Prediction log as Parquet segments on S3-compatible object storage (``s3://bucket/prefix``).

The layout and the reading are :mod:`mloop.predlog.segments`' (shared with the local backend):
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

import os
import socket
import uuid
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mloop.errors import ConfigError, StoreError
from mloop.predlog.segments import Listing, SegmentedParquetLog, model_folder

__all__ = ["ObjectStorePredictionLog"]


def _safe_url(url: str) -> str:
    """``url`` without credentials (``s3://key:secret@bucket`` is accepted by pyarrow; never shown)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return urlunsplit((parts.scheme, host, parts.path, parts.query, ""))


class ObjectStorePredictionLog(SegmentedParquetLog):
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
        super().__init__(fs, path)
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
    def _segment_name(self, first_us: int) -> str:
        # The host name too: replicas in different pods may share a pid.
        return f"{first_us:017d}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"

    def _put_segment(self, folder: str, name: str, table: pa.Table) -> None:
        # An object appears whole when its upload completes: no temporary name is needed.
        try:
            pq.write_table(table, f"{folder}/{name}", filesystem=self._fs, compression="zstd")
        except (OSError, pa.ArrowException) as exc:
            raise self._error(f"write a segment of {table.num_rows} predictions", exc) from exc

    # -- listing -------------------------------------------------------------------------------
    def _files(self, base: str) -> list[tuple[str, str, str]]:
        """(model folder name, day, path) of every segment under ``base``."""
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

    def _list(self, model_name: str | None, lo: str | None, hi: str | None) -> Listing:
        # One recursive listing of the model's prefix (object stores list by prefix, not by folder).
        base = f"{self.root}/{model_folder(model_name)}" if model_name is not None else self.root
        listing: Listing = {}
        for _model, day, path in self._files(base):
            if (lo and day < lo) or (hi and day > hi):
                continue
            listing.setdefault(day, []).append(path)
        return listing

    def _model_folders(self) -> list[str]:
        try:
            selector = pafs.FileSelector(self.root, recursive=False, allow_not_found=True)
            infos = self._fs.get_file_info(selector)
        except OSError as exc:
            raise self._error("list its models", exc) from exc
        return sorted(
            info.base_name
            for info in infos
            if info.type == pafs.FileType.Directory and info.base_name.startswith("model=")
        )
