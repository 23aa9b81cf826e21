"""HTTP(S) source: GET a URL returning CSV, JSON records or Parquet.

The format is ``source.format`` when set, else the response's Content-Type, else the URL's extension.
Credentials in the URL are used for the request but never appear in messages or lineage.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pandas as pd

from mloop.data.formats import format_from_content_type, format_from_name, records_frame
from mloop.errors import SourceError

__all__ = ["public_url", "read_http"]

_SECRET_PARAM = re.compile(r"(token|key|secret|sig|signature|password|passwd|auth|credential)", re.IGNORECASE)


def public_url(url: str) -> str:
    """``url`` without user/password and with secret-looking query values hidden."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    query = urlencode(
        [
            (k, "***" if _SECRET_PARAM.search(k) else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*",
    )
    return urlunsplit((parts.scheme, host, parts.path, query, ""))


def _parse(content: bytes, fmt: str, options: Mapping[str, Any], where: str) -> pd.DataFrame:
    if fmt == "json":
        try:
            payload = json.loads(content)
        except ValueError as exc:
            raise SourceError(f"{where} did not return valid JSON: {exc}.") from exc
        return records_frame(payload, options, where)
    buffer = io.BytesIO(content)
    try:
        if fmt == "parquet":
            return pd.read_parquet(buffer, **options)
        compression = "gzip" if content[:2] == b"\x1f\x8b" else None
        return pd.read_csv(buffer, compression=compression, **options)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except TypeError as exc:
        raise SourceError(
            f"source.options {dict(options)} are not accepted by the {fmt} reader: {exc}."
        ) from exc
    except (ValueError, OSError, EOFError, UnicodeDecodeError) as exc:
        raise SourceError(f"{where} returned data that could not be read as {fmt}: {exc}.") from exc


def read_http(url: str, fmt: str, options: Mapping[str, Any], *, timeout_s: float) -> pd.DataFrame:
    """GET ``url`` and parse the body; network failures and HTTP errors are :class:`SourceError`."""
    where = public_url(url)
    try:
        response = httpx.get(url, timeout=timeout_s, follow_redirects=True)
    except httpx.TimeoutException as exc:
        raise SourceError(
            f"{where} did not answer within {timeout_s:g} s; raise source.timeout_s or check the server."
        ) from exc
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise SourceError(
            f"Could not reach {where}: {exc or type(exc).__name__}. Check the URL and network."
        ) from exc
    if response.status_code >= 400:
        body = " ".join(response.text[:200].split())
        raise SourceError(
            f"{where} answered HTTP {response.status_code} {response.reason_phrase}"
            + (f": {body}" if body else "")
            + ". Check the URL, and credentials if the server needs them."
        )
    chosen = fmt if fmt != "auto" else None
    chosen = (
        chosen
        or format_from_content_type(response.headers.get("content-type"))
        or format_from_name(urlsplit(str(response.url)).path)
    )
    if chosen is None:
        raise SourceError(
            f"Cannot tell the format of {where}: Content-Type {response.headers.get('content-type')!r} and "
            "no known extension. Set source.format to csv, parquet or json."
        )
    return _parse(response.content, chosen, options, where)
