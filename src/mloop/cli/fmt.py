"""How the CLI writes values for people: never a raw ``None``, never a 16-digit float.

``num(0.91234567891234)`` → ``0.9123``; ``num(None)`` → ``-``; ``pct(0.0312)`` → ``3.1%``;
``interval([0.01, 0.05])`` → ``[0.01, 0.05]``; ``metrics({"auc": 0.9123456})`` → ``auc 0.9123``.
JSON output (``--json``) keeps full precision; only text goes through here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["interval", "metrics", "num", "pct", "text"]

MISSING = "-"


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def num(value: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits (integers as they are); ``-`` when missing."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    number = _number(value)
    if number is None:
        return MISSING if value is None or isinstance(value, float) else str(value)
    return f"{number:.{digits}g}"


def pct(value: Any, decimals: int = 1) -> str:
    """A share as a percentage (``0.0312`` → ``3.1%``); ``-`` when missing."""
    number = _number(value)
    return MISSING if number is None else f"{100 * number:.{decimals}f}%"


def interval(value: Any, digits: int = 3) -> str:
    """A confidence interval ``[low, high]``; ``-`` when missing."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        return MISSING
    low, high = value
    if _number(low) is None or _number(high) is None:
        return MISSING
    return f"[{num(low, digits)}, {num(high, digits)}]"


def metrics(values: Mapping[str, Any], digits: int = 4, limit: int = 6) -> str:
    """``auc 0.9123, f1 0.4102`` (first ``limit`` names); ``-`` when there are none."""
    items = [f"{k} {num(v, digits)}" for k, v in list(values.items())[:limit]]
    more = len(values) - limit
    return (", ".join(items) + (f", +{more} more" if more > 0 else "")) if items else MISSING


def text(value: Any) -> str:
    """Any value as text: ``-`` for ``None``, numbers through :func:`num`."""
    if value is None:
        return MISSING
    if isinstance(value, float):
        return num(value)
    return str(value)
