"""Read the configured source into a DataFrame, and describe it for lineage.

``source.uri`` decides the reader: a path (``.csv``, ``.csv.gz``, ``.parquet``/``.pq``, ``.json``; a
folder of Parquet files), an ``http(s)://`` URL, a SQLAlchemy URL with ``source.query``, or
``synthetic://fraud``. Relative paths are resolved against the project directory. ``source.options``
go to the reader (``pandas.read_csv``, ``read_parquet``, ``read_sql_query``, ``json_normalize``, or the
generator). Every failure is a :class:`~mloop.errors.SourceError` that names what was read and how to
fix it; an empty result is returned as is (the data contract decides what to do with it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pandas as pd

from mloop.config import SourceSettings
from mloop.data.formats import FORMATS, format_from_name, records_frame, supported
from mloop.data.http_source import public_url, read_http
from mloop.data.sql_source import describe_sql, is_sql_url, read_sql
from mloop.errors import DataError, SourceError, did_you_mean

__all__ = ["data_hash", "describe_source", "load_source"]

SYNTHETIC = ("fraud",)
_SYNTHETIC_OPTIONS = ("rows", "seed", "scenario", "start", "fraud_rate")


def _kind(uri: str) -> str:
    lower = uri.lower()
    if lower.startswith("synthetic://"):
        return "synthetic"
    if lower.startswith(("http://", "https://")):
        return "http"
    if lower.startswith("file://") or "://" not in uri:
        return "file"
    if is_sql_url(uri):
        return "sql"
    raise SourceError(
        f"source.uri {uri!r} has an unknown scheme {uri.split('://', 1)[0]!r}. "
        f"Use a file path ({supported()}), "
        "an http(s):// URL, a SQLAlchemy URL (sqlite:///data.db, postgresql://host/db) with source.query, "
        "or synthetic://fraud."
    )


def _path(uri: str, root: Path) -> Path:
    path = Path(unquote(urlsplit(uri).path)) if uri.lower().startswith("file://") else Path(uri).expanduser()
    return path if path.is_absolute() else (Path(root) / path).resolve()


def _file_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    found = format_from_name(path.name)
    if found is None and path.is_dir() and any(path.glob("*.parquet")):
        found = "parquet"
    if found is None:
        raise SourceError(
            f"Cannot tell the format of {path}: the extension {''.join(path.suffixes) or '(none)'!r} is not "
            f"supported. Supported: {supported()}; or set source.format to one of {', '.join(FORMATS)}."
        )
    return found


def _missing_file(path: Path, uri: str, root: Path) -> SourceError:
    folder = path.parent
    if folder.is_dir():
        names = sorted(p.name for p in folder.iterdir())
        hint = did_you_mean(path.name, names) or (f" Files there: {', '.join(names[:10])}." if names else "")
    else:
        hint = f" The folder {folder} does not exist either."
    return SourceError(
        f"Data file not found: {path} (source.uri {uri!r}, relative to {root}).{hint} "
        "Fix source.uri in mloop.yaml."
    )


def _read_file(source: SourceSettings, root: Path) -> pd.DataFrame:
    path = _path(source.uri, root)
    if not path.exists():
        raise _missing_file(path, source.uri, root)
    fmt = _file_format(path, source.format)
    options = dict(source.options)
    try:
        if fmt == "csv":
            return pd.read_csv(path, **options)
        if fmt == "parquet":
            return pd.read_parquet(path, **options)
        return records_frame(json.loads(path.read_bytes()), options, str(path))
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except TypeError as exc:
        raise SourceError(f"source.options {options} are not accepted by the {fmt} reader: {exc}.") from exc
    except PermissionError as exc:
        raise SourceError(f"No permission to read {path}: {exc.strerror}.") from exc
    except (ValueError, OSError, EOFError, UnicodeDecodeError) as exc:
        raise SourceError(
            f"Could not read {path} as {fmt}: {exc}. The file may be corrupt or in another format "
            "(set source.format to force one)."
        ) from exc


def _synthetic(source: SourceSettings) -> pd.DataFrame:
    from mloop.data.synthetic import generate_fraud

    name = source.uri.split("://", 1)[1].strip("/").lower()
    if name not in SYNTHETIC:
        raise SourceError(
            f"Unknown synthetic dataset {name!r}.{did_you_mean(name, SYNTHETIC)} Known: "
            + ", ".join(f"synthetic://{n}" for n in SYNTHETIC)
            + "."
        )
    options = dict(source.options)
    unknown = [k for k in options if k not in _SYNTHETIC_OPTIONS]
    if unknown:
        raise SourceError(
            f"Unknown source.options {', '.join(map(repr, unknown))} for synthetic://fraud."
            f"{did_you_mean(unknown[0], _SYNTHETIC_OPTIONS)} Known: {', '.join(_SYNTHETIC_OPTIONS)}."
        )
    options.setdefault("rows", 10_000)
    rows = options.pop("rows")
    try:
        return generate_fraud(rows, **options)
    except SourceError:
        raise
    except DataError as exc:
        raise SourceError(f"synthetic://fraud: {exc}") from exc


def load_source(source: SourceSettings, *, root: Path) -> pd.DataFrame:
    """Read ``source`` into a DataFrame (see the module docstring)."""
    uri = source.uri.strip()
    if not uri:
        raise SourceError("source.uri is empty; set it in mloop.yaml to a file, URL or database URL.")
    source = source.model_copy(update={"uri": uri})
    kind = _kind(uri)
    if kind == "synthetic":
        return _synthetic(source)
    if kind == "http":
        return read_http(uri, source.format, source.options, timeout_s=source.timeout_s)
    if kind == "sql":
        return read_sql(uri, source.query, source.options, root=Path(root), timeout_s=source.timeout_s)
    return _read_file(source, Path(root))


def describe_source(source: SourceSettings, root: Path) -> str:
    """A short lineage string without credentials: ``csv:/abs/path``, ``sql:postgresql://host/db (query
    sha256:…)``, ``https://host/data.csv``, ``synthetic:fraud?rows=1000&seed=0``."""
    uri = source.uri.strip()
    kind = _kind(uri)
    if kind == "synthetic":
        opts: Mapping[str, Any] = {"rows": 10_000, **source.options}
        return "synthetic:fraud?" + "&".join(f"{k}={opts[k]}" for k in sorted(opts))
    if kind == "http":
        return public_url(uri)
    if kind == "sql":
        return describe_sql(uri, source.query, Path(root))
    path = _path(uri, Path(root))
    fmt = source.format if source.format != "auto" else (format_from_name(path.name) or "file")
    return f"{fmt}:{path}"


def data_hash(df: pd.DataFrame) -> str:
    """sha256 hex of the content, the column names and the dtypes (the index is ignored)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([[str(c), str(t)] for c, t in df.dtypes.items()]).encode("utf-8"))
    try:
        rows = pd.util.hash_pandas_object(df, index=False)
    except TypeError:
        # Unhashable cells (lists, dicts from nested JSON): hash their text instead.
        rows = pd.util.hash_pandas_object(df.astype(str), index=False)
    digest.update(rows.to_numpy().tobytes())
    return digest.hexdigest()
