"""File formats shared by the file and HTTP sources: names, detection and JSON records."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from mloop.errors import SourceError

__all__ = ["EXTENSIONS", "FORMATS", "format_from_name", "records_frame"]

FORMATS = ("csv", "parquet", "json")
EXTENSIONS: dict[str, str] = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".json": "json",
}
_CONTENT_TYPES = {
    "text/csv": "csv",
    "application/csv": "csv",
    "text/comma-separated-values": "csv",
    "application/json": "json",
    "text/json": "json",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
    "application/parquet": "parquet",
}


def supported() -> str:
    """The supported extensions, for messages."""
    return ", ".join(EXTENSIONS)


def format_from_name(name: str) -> str | None:
    """The format of a file or URL path by its extension, or None."""
    lower = name.lower()
    for ext in sorted(EXTENSIONS, key=len, reverse=True):
        if lower.endswith(ext):
            return EXTENSIONS[ext]
    return None


def format_from_content_type(content_type: str | None) -> str | None:
    if not content_type:
        return None
    media = content_type.split(";", 1)[0].strip().lower()
    if media in _CONTENT_TYPES:
        return _CONTENT_TYPES[media]
    return "json" if media.endswith("+json") else None


def records_frame(payload: Any, options: Mapping[str, Any], where: str) -> pd.DataFrame:
    """A frame from JSON records: a list of objects, or ``{"data": [...]}``.

    ``options`` may name another wrapping key as ``records_key``; the rest go to ``pandas.json_normalize``
    (nested objects become ``parent.child`` columns).
    """
    opts = dict(options)
    key = opts.pop("records_key", "data")
    records = payload
    if isinstance(payload, Mapping):
        if key not in payload:
            raise SourceError(
                f"{where} returned a JSON object with keys {sorted(payload)[:10]}; "
                "expected a list of records "
                f"or an object with a {key!r} list (set source.options.records_key to use another key)."
            )
        records = payload[key]
    if not isinstance(records, list) or not all(isinstance(r, Mapping) for r in records):
        raise SourceError(
            f"{where} returned JSON that is not a list of records (objects); got {type(records).__name__}. "
            'Expected [{"col": value, ...}, ...] or {"data": [...]}.'
        )
    if not records:
        return pd.DataFrame()
    try:
        return pd.json_normalize(records, **opts)
    except TypeError as exc:
        raise SourceError(f"source.options {opts} are not accepted by the JSON reader: {exc}.") from exc
