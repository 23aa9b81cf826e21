"""The current window: which rows of the prediction log one monitoring cycle looks at.

A window belongs to one model version and is either the newest N rows, a time range, or the newest N
rows of a time range. :func:`parse_since` reads the user's ``--since`` (``30m``, ``1h``, ``2d``, ``1w``
or an ISO time); :func:`split_window` turns the flat log frame into the features (in the reference's
names) and the outputs (``prediction`` and, for binary classifiers, ``score`` = P(positive class)).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from mloop.errors import MonitoringError

__all__ = ["WindowSpec", "label_key", "parse_since", "split_window"]

_BASE = ("prediction_id", "ts", "model_name", "model_version", "arm", "latency_ms", "prediction")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str | datetime, *, now: datetime | None = None) -> datetime:
    """A start time: ``"90s"``, ``"30m"``, ``"1h"``, ``"2d"``, ``"1w"`` ago, or an ISO time (UTC if naive)."""
    if isinstance(text, datetime):
        return text.replace(tzinfo=UTC) if text.tzinfo is None else text.astimezone(UTC)
    match = _DURATION.match(str(text))
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(str(text).strip())
    except ValueError:
        raise MonitoringError(
            f"--since must be a duration like 30m, 1h, 2d or 1w, or an ISO time like 2024-05-01T12:00; "
            f"got {text!r}."
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@dataclass(frozen=True)
class WindowSpec:
    """Which rows: the newest ``rows`` (None: no row cap) at or after ``since`` and before ``until``."""

    rows: int | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.rows is not None and (isinstance(self.rows, bool) or self.rows < 1):
            raise MonitoringError(f"The window must be at least 1 row; got {self.rows!r}.")
        if self.rows is None and self.since is None:
            raise MonitoringError("A window needs a number of rows, a start time (since), or both.")

    def describe(self) -> str:
        parts = []
        if self.rows is not None:
            parts.append(f"last {self.rows:,} rows")
        if self.since is not None:
            parts.append(f"since {self.since.isoformat(timespec='seconds')}")
        if self.until is not None:
            parts.append(f"until {self.until.isoformat(timespec='seconds')}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }


def label_key(value: Any) -> str | None:
    """One spelling for a class label, whatever carried it (JSON ``1``, ``1.0``, ``"1"``, ``True``)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()  # numpy scalars
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _feature_frame(frame: pd.DataFrame, features: Sequence[str]) -> pd.DataFrame:
    """The feature columns under the reference's names (the log prefixes ``feature_`` on a clash)."""
    out: dict[str, pd.Series] = {}
    for name in features:
        if name in _BASE and f"feature_{name}" in frame.columns:
            out[name] = frame[f"feature_{name}"]
        elif name in frame.columns and name not in _BASE:
            out[name] = frame[name]
    return pd.DataFrame(out, index=frame.index)


def split_window(
    frame: pd.DataFrame, features: Sequence[str], *, task: str | None, classes: Sequence[Any] | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(features, outputs) of a log window; outputs hold ``prediction`` and, when known, ``score``."""
    feats = _feature_frame(frame, features)
    outputs = pd.DataFrame(index=frame.index)
    if task == "classification":
        outputs["prediction"] = frame["prediction"].map(label_key).astype(object)
        labels = [label_key(c) for c in classes or []]
        if len(labels) == 2 and f"proba_{labels[1]}" in frame.columns:
            outputs["score"] = pd.to_numeric(frame[f"proba_{labels[1]}"], errors="coerce")
    else:
        outputs["prediction"] = pd.to_numeric(frame["prediction"], errors="coerce")
    return feats, outputs
