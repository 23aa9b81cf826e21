"""The routing key of a request, which makes A/B assignment sticky.

``rollout.routing_key`` names where it comes from: ``header:X-Customer-Id`` reads a header, any other
value a request field (of the first record of a native request, or of the MLflow/V2 columns). The
``X-Routing-Key`` header always wins when present. Without a key, assignment is random by weight.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["ROUTING_HEADER", "routing_key"]

ROUTING_HEADER = "x-routing-key"


class Headers(Protocol):
    """What the routing key reads headers through: ``get`` by lower-case name (a Starlette mapping,
    or :class:`mloop.server.http.RequestHead`)."""

    def get(self, key: str, /) -> str | None: ...


def routing_key(setting: str | None, headers: Headers, body: Any) -> str | None:
    """The key for this request, or None (random assignment)."""
    given = headers.get(ROUTING_HEADER)
    if given:
        return given
    if not setting:
        return None
    if setting.lower().startswith("header:"):
        return headers.get(setting.split(":", 1)[1].strip().lower()) or None
    value = _field(body, setting)
    return None if value is None else str(value)


def _field(body: Any, name: str) -> Any:
    if isinstance(body, list):
        return _field(body[0], name) if body else None
    if not isinstance(body, Mapping):
        return None
    if name in body:
        return body[name]
    for key in ("features", "instances", "records", "inputs", "dataframe_records"):
        inner = body.get(key)
        if isinstance(inner, Mapping) and name in inner:
            return inner[name]
        if isinstance(inner, list) and inner:
            found = _field(inner, name) if isinstance(inner[0], Mapping) else None
            if found is not None:
                return found
    split = body.get("dataframe_split")
    if isinstance(split, Mapping) and name in (split.get("columns") or []):
        rows = split.get("data") or []
        return rows[0][list(split["columns"]).index(name)] if rows else None
    return None
