"""One logged prediction, and the flat table shape every backend reads back.

A :class:`PredictionRecord` is what the server hands to the logger; backends store it however suits
them and return the same flat frame from ``read()``: one row per prediction with the fixed columns in
:data:`BASE_COLUMNS`, ``proba_<class>`` per class probability, ``flag_<name>`` per flag, and one
column per feature named as the feature (prefixed ``feature_`` only if it would shadow a fixed column).
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

__all__ = [
    "BASE_COLUMNS",
    "FEATURE_PREFIX",
    "FLAG_PREFIX",
    "PROBA_PREFIX",
    "PredictionRecord",
    "empty_frame",
    "new_prediction_id",
    "new_prediction_ids",
    "records_to_columns",
    "records_to_frame",
    "storage_to_output",
]

BASE_COLUMNS = ("prediction_id", "ts", "model_name", "model_version", "arm", "latency_ms", "prediction")
# Prefixes of the stored (unambiguous) column names; read() maps them to the output names.
FEATURE_PREFIX, PROBA_PREFIX, FLAG_PREFIX = "feature.", "proba.", "flag."


def _now() -> datetime:
    return datetime.now(UTC)


class _PredictionIds:
    """Prediction ids: keyed BLAKE2b of a per-process counter, 32 hex characters.

    An id is ``blake2b(counter, key=K, digest_size=16)`` with ``K`` 32 random bytes drawn once per
    process (again after a fork). Knowing any number of ids tells nothing about the others: without
    ``K`` the next or previous id is as hard to guess as a random 128-bit value, so one client cannot
    derive another's ids and label them. Ids are unique like ``uuid4().hex`` (128 pseudo-random bits,
    a fresh key per process). The hot path pays one copy of a keyed hash state and one hash of 8 bytes
    per id: no system call (``uuid4`` reads ``urandom`` per id), and cheaper than a Feistel
    permutation whose rounds run in Python (measured in ``docs/security.md``).
    """

    def __init__(self) -> None:
        self._renew()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        self._hash = hashlib.blake2b(key=os.urandom(32), digest_size=16)
        self._count = itertools.count()  # next() on it is atomic: safe from several threads

    def take(self, n: int) -> list[str]:
        """``n`` fresh ids."""
        base, count = self._hash, self._count
        ids = []
        for _ in range(n):
            h = base.copy()
            h.update(next(count).to_bytes(8, "little"))
            ids.append(h.hexdigest())
        return ids


_IDS = _PredictionIds()


def new_prediction_ids(n: int) -> list[str]:
    """``n`` fresh, unguessable, globally unique prediction ids (32 hex characters each)."""
    return _IDS.take(n)


def new_prediction_id() -> str:
    """A fresh, unguessable, globally unique prediction id (32 hex characters)."""
    return _IDS.take(1)[0]


@dataclass(slots=True)
class PredictionRecord:
    """One prediction as it leaves the hot path.

    ``features`` maps input column to value; ``probabilities`` maps class label to probability for
    classifiers; ``arm`` names the rollout arm that answered (``"champion"``, ``"canary"``, ``"shadow"``);
    ``flags`` carries small extra markers (e.g. ``{"shadow": True}``).
    """

    prediction_id: str
    model_name: str
    model_version: str
    features: Mapping[str, Any]
    prediction: Any
    probabilities: Mapping[Any, float] | None = None
    latency_ms: float | None = None
    ts: datetime = field(default_factory=_now)
    arm: str | None = None
    flags: Mapping[str, Any] | None = None


def records_to_columns(records: Iterable[PredictionRecord]) -> dict[str, list[Any]]:
    """Column lists in storage naming (``feature.x``, ``proba.1``, ``flag.shadow``), None where absent."""
    records = list(records)
    n = len(records)
    cols: dict[str, list[Any]] = {name: [None] * n for name in BASE_COLUMNS}
    for i, rec in enumerate(records):
        ts = rec.ts if rec.ts.tzinfo is not None else rec.ts.replace(tzinfo=UTC)
        cols["prediction_id"][i] = rec.prediction_id
        cols["ts"][i] = ts
        cols["model_name"][i] = rec.model_name
        cols["model_version"][i] = str(rec.model_version)
        cols["arm"][i] = rec.arm
        cols["latency_ms"][i] = None if rec.latency_ms is None else float(rec.latency_ms)
        cols["prediction"][i] = rec.prediction
        for prefix, mapping in (
            (FEATURE_PREFIX, rec.features),
            (PROBA_PREFIX, rec.probabilities),
            (FLAG_PREFIX, rec.flags),
        ):
            for key, value in (mapping or {}).items():
                name = f"{prefix}{key}"
                column = cols.get(name)
                if column is None:
                    column = cols[name] = [None] * n
                column[i] = value
    return cols


def _output_name(stored: str, taken: set[str]) -> str:
    if stored.startswith(PROBA_PREFIX):
        return "proba_" + stored[len(PROBA_PREFIX) :]
    if stored.startswith(FLAG_PREFIX):
        return "flag_" + stored[len(FLAG_PREFIX) :]
    if stored.startswith(FEATURE_PREFIX):
        name = stored[len(FEATURE_PREFIX) :]
        return f"feature_{name}" if name in taken else name
    return stored


def storage_to_output(frame: pd.DataFrame) -> pd.DataFrame:
    """Rename stored columns to the output names and order them: fixed, probabilities, flags, features."""
    for name in BASE_COLUMNS:
        if name not in frame.columns:
            frame[name] = None
    reserved = set(BASE_COLUMNS) | {c for c in frame.columns if not c.startswith(FEATURE_PREFIX)}
    taken = {_output_name(c, set()) for c in reserved}

    def rank(col: str) -> tuple[int, str]:
        if col in BASE_COLUMNS:
            return (0, f"{BASE_COLUMNS.index(col):02d}")
        order = {PROBA_PREFIX: 1, FLAG_PREFIX: 2, FEATURE_PREFIX: 3}
        return next((v, "") for k, v in order.items() if col.startswith(k))

    ordered = sorted(frame.columns, key=rank)
    frame = frame[ordered].rename(columns={c: _output_name(c, taken) for c in ordered})
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def records_to_frame(records: Iterable[PredictionRecord]) -> pd.DataFrame:
    """The flat output frame of ``records`` (used by backends that store records as documents)."""
    return storage_to_output(pd.DataFrame(records_to_columns(records)))


def empty_frame() -> pd.DataFrame:
    """A frame with the fixed columns and no rows."""
    dtypes = {"ts": "datetime64[us, UTC]", "latency_ms": "float64", "prediction": "object"}
    return pd.DataFrame({name: pd.Series([], dtype=dtypes.get(name, "str")) for name in BASE_COLUMNS})
