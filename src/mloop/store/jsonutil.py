"""JSON encoding shared by the store and the prediction log.

Values reaching the store come from models and data frames, so numpy scalars, arrays, datetimes and
NaN are common. Postgres rejects the ``NaN`` token that :func:`json.dumps` writes by default, so
non-finite floats become ``null``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

__all__ = ["dumps", "to_jsonable"]


def to_jsonable(value: Any, default: Callable[[Any], Any] | None = None) -> Any:
    """``value`` made of plain dicts, lists, strings, finite numbers, booleans and None.

    Unknown types go through ``default`` (e.g. ``str``) when given, else raise TypeError.
    """
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): to_jsonable(v, default) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v, default) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    # numpy scalars and arrays, without importing numpy here.
    if hasattr(value, "tolist"):
        return to_jsonable(value.tolist(), default)
    if hasattr(value, "item"):
        return to_jsonable(value.item(), default)
    if default is not None:
        return default(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    """Compact JSON of ``value`` after :func:`to_jsonable`; raises TypeError on unknown types."""
    return json.dumps(to_jsonable(value, default), separators=(",", ":"), allow_nan=False)
