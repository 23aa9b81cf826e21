"""Validate rows against a model's contract and score the valid ones: the one place batch and stream share.

A :class:`Scorer` is a loaded model version plus its data contract, compiled for whole DataFrames.
``score(df)`` splits the frame into scored rows (pass-through columns, ``prediction``, ``proba_<class>``
for classifiers, ``flags``) and rejected rows (the input values as text and ``_reason``, one line per
broken rule). Nothing is dropped silently: every input row ends up in exactly one of the two.

The rules are enforced by the one function serving uses too
(:meth:`~mloop.data.enforce.ContractRules.enforce`), so a row refused online is refused here and the
other way round: a value that cannot be read as its
type, is infinite or is an integer beyond 64 bits is rejected; so is text with NUL or longer than
``max_text_chars``; a missing value is rejected when the model uses the column and the contract does
not allow missing values; values outside the training range and unseen categories are rejected or
flagged following ``serving.out_of_range`` / ``serving.unseen_category`` (default: flagged). Typed and
text columns are checked vectorised, so millions of rows cost little; text columns of a file are read
with the training coercion (:func:`mloop.data.coerce.coerce_column`), so ``"12.5"`` from a CSV file is
a number, while JSON-like ``object`` columns (records from a stream) are read strictly, as requests are.
Predictions follow :meth:`mloop.serving.runtime.ModelRuntime.predict_frame`: classifiers are called
through ``predict_proba`` and the predicted class is the most probable one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import sklearn

from mloop.data.coerce import empty_column
from mloop.data.enforce import MAX_TEXT_CHARS, ContractRules
from mloop.data.predict import model_classes, predict_with_proba
from mloop.data.report import safe_example
from mloop.data.schema import ColumnSpec, DataContract
from mloop.errors import DataError, ServingError, did_you_mean

__all__ = ["REASON", "ROW", "ScoredChunk", "Scorer"]

ROW = "_row"
"""Column with the input row number (0-based) in scored and rejected output."""
REASON = "_reason"
"""Column of rejected output with why the row was refused."""
Policy = Literal["reject", "flag"]


@dataclass
class ScoredChunk:
    """One chunk's outcome: ``scored`` and ``rejected`` rows (together: every input row, once)."""

    scored: pd.DataFrame
    rejected: pd.DataFrame

    @property
    def rows(self) -> int:
        return len(self.scored) + len(self.rejected)


_TYPES = {
    "float": "a finite number",
    "int": "an integer between -2^63 and 2^63-1",
    "bool": "true or false",
    "datetime": "an ISO 8601 date-time",
    "category": "text",
    "string": "text",
}


def _describe(spec: ColumnSpec, rule: str) -> str:
    if rule == "category" and spec.categories is not None:
        return "one of: " + ", ".join(spec.categories[:10]) + (", …" if len(spec.categories) > 10 else "")
    if rule == "range":
        low = -np.inf if spec.min is None else spec.min
        high = np.inf if spec.max is None else spec.max
        return f"between {low:g} and {high:g} (the range seen at training)"
    if rule == "missing":
        return f"{_TYPES[spec.dtype]}; the column does not allow missing values"
    if rule == "text":
        return f"text of at most {MAX_TEXT_CHARS} characters without NUL (\\u0000)"
    return _TYPES[spec.dtype]


def _flag_texts(flags: list[tuple[str, str, np.ndarray]], ok: np.ndarray) -> np.ndarray:
    """Per kept row, its flags as JSON (``{"out_of_range": ["amount"]}``) or None.

    Vectorised: flagged rows are grouped by their pattern of (kind, column) flags, and one JSON text
    is built per distinct pattern, not per row (drifted data can flag most rows of a chunk).
    """
    marks = np.full(int(ok.sum()), None, dtype=object)
    if not flags:
        return marks
    matrix = np.column_stack([mask[ok] for _, _, mask in flags])
    rows = np.flatnonzero(matrix.any(axis=1))
    if rows.size == 0:
        return marks
    patterns, inverse = np.unique(matrix[rows], axis=0, return_inverse=True)
    texts = []
    for pattern in patterns:
        found: dict[str, list[str]] = {}
        for (kind, column, _), on in zip(flags, pattern.tolist(), strict=True):
            if on:
                found.setdefault(kind, []).append(column)
        texts.append(json.dumps(found, sort_keys=True))
    marks[rows] = np.asarray(texts, dtype=object)[inverse.reshape(-1)]
    return marks


class Scorer:
    """A model version ready to score DataFrames (picklable: process pools and Spark ship it)."""

    def __init__(
        self,
        model: Any,
        contract: DataContract | dict[str, Any],
        *,
        name: str = "model",
        version: str = "0",
        required: Sequence[str] | None = None,
        unseen_category: Policy = "flag",
        out_of_range: Policy = "flag",
        max_text_chars: int = MAX_TEXT_CHARS,
    ) -> None:
        if not isinstance(contract, DataContract):
            contract = DataContract.from_dict(contract)
        self.model = model
        self.name = name
        self.version = str(version)
        self.contract = contract.without_target()
        self.specs = list(self.contract.columns)
        self.required = set(required) if required else {c.name for c in self.specs}
        self.unseen_category = unseen_category
        self.out_of_range = out_of_range
        self.rules = ContractRules(
            self.contract,
            required=sorted(self.required),
            unseen_category=unseen_category,
            out_of_range=out_of_range,
            max_text_chars=max_text_chars,
        )  # checks the policies and the text limit (DataError naming the bad one)
        classes = model_classes(model, contract.task)
        self.is_classifier = classes is not None
        self.classes: list[Any] = classes or []
        self.proba_columns = [f"proba_{c}" for c in self.classes]

    @classmethod
    def from_loaded(
        cls, loaded: Any, *, unseen_category: Policy = "flag", out_of_range: Policy = "flag"
    ) -> Scorer:
        """From a :class:`~mloop.tracking.LoadedModel`; the model's used features are the required ones."""
        features = (loaded.evaluation or {}).get("features") or {}
        used = list(features.get("numeric", [])) + list(features.get("categorical", []))
        return cls(
            loaded.model,
            loaded.contract,
            name=loaded.info.name,
            version=str(loaded.info.version),
            required=used or None,
            unseen_category=unseen_category,
            out_of_range=out_of_range,
        )

    # -- validation ----------------------------------------------------------------------------
    def check_columns(self, columns: Sequence[str]) -> None:
        """Raise :class:`DataError` when a column the model needs is absent from the input."""
        present = [str(c) for c in columns]
        missing = [s.name for s in self.specs if s.name in self.required and s.name not in present]
        if missing:
            raise DataError(
                f"The input lacks column(s) {', '.join(map(repr, missing))} that model {self.name} "
                f"v{self.version} needs.{did_you_mean(missing[0], present)} "
                f"Input columns: {', '.join(present) or '(none)'}."
            )

    def _validate(
        self, df: pd.DataFrame
    ) -> tuple[dict[str, pd.Series], np.ndarray, dict[int, list[str]], list[tuple[str, str, np.ndarray]]]:
        """The contract's rules through the one function serving uses too (:mod:`mloop.data.enforce`)."""
        n = len(df)
        reject = np.zeros(n, dtype=bool)
        reasons: dict[int, list[str]] = {}
        flags: list[tuple[str, str, np.ndarray]] = []
        values: dict[str, pd.Series] = {}
        columns: dict[str, pd.Series] = {}
        for name in self.rules.contract.names:
            if name in df.columns:
                raw = df[name]
                if isinstance(raw, pd.DataFrame):
                    raise DataError(f"Column {name!r} appears more than once; column names must be unique.")
                columns[name] = raw
        for outcome in self.rules.enforce(columns, n):
            spec, raw = outcome.rules.spec, columns.get(outcome.name)
            for rule, rows in (outcome.refused or {}).items():
                allowed = _describe(spec, "missing" if rule in ("null", "missing") else rule)
                label = "missing" if rule in ("null", "missing") else rule
                for pos in rows:
                    got = "missing" if raw is None else repr(safe_example(raw.iat[pos]))
                    reasons.setdefault(pos, []).append(
                        f"{spec.name}: {label} (got {got}, expected {allowed})"
                    )
                reject[rows] = True
            for kind, rows in (outcome.flagged or {}).items():
                mask = np.zeros(n, dtype=bool)
                mask[rows] = True
                flags.append((kind, spec.name, mask))
            column = outcome.values
            if raw is None:  # the column is absent: all missing, with the contract's dtype
                column = empty_column(spec, df.index)
            values[spec.name] = column
        return values, reject, reasons, flags

    # -- prediction ----------------------------------------------------------------------------
    def predict(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        """Predictions (and class probabilities for classifiers) for validated contract columns."""
        # Validation refused infinite numbers, so scikit-learn's finiteness scans are skipped, as online.
        try:
            with sklearn.config_context(assume_finite=True):
                return predict_with_proba(self.model, frame, self.classes if self.is_classifier else None)
        except Exception as exc:
            raise ServingError(
                f"Model {self.name} v{self.version} failed on {len(frame)} rows: {type(exc).__name__}: {exc}"
            ) from exc

    def model_frame(self, values: dict[str, pd.Series], keep: np.ndarray | None) -> pd.DataFrame:
        """The frame the model sees: contract columns, text as plain objects (what serving hands it)."""
        data: dict[str, Any] = {}
        for spec in self.specs:
            col = values[spec.name] if keep is None else values[spec.name][keep]
            data[spec.name] = col.astype(object) if spec.dtype in ("category", "string") else col
        return pd.DataFrame(data)

    def _no_rejects(self, df: pd.DataFrame) -> pd.DataFrame:
        columns = [ROW, *(str(c) for c in df.columns), REASON]
        empty = pd.DataFrame({c: np.array([], dtype=object) for c in columns})
        return empty.astype({ROW: "int64"}).astype({c: "string" for c in columns[1:]})

    def score(
        self, df: pd.DataFrame, *, row_offset: int = 0, keep: Sequence[str] | None = None
    ) -> ScoredChunk:
        """Validate ``df``, predict its valid rows; ``keep`` names the input columns to pass through."""
        if not isinstance(df, pd.DataFrame):
            raise DataError(f"Scorer.score expects a pandas DataFrame; got {type(df).__name__}.")
        df = df.reset_index(drop=True)
        values, reject, reasons, flags = self._validate(df)
        ok = ~reject
        everything = not reject.any()  # the usual case: no row copies
        rows = np.arange(row_offset, row_offset + len(df), dtype="int64")
        passthrough = [str(c) for c in df.columns] if keep is None else list(keep)
        out: dict[str, Any] = {ROW: rows if everything else rows[ok]}
        for name in passthrough:
            if name in (ROW, "prediction", "flags", *self.proba_columns):
                continue
            column = values[name] if name in values else df[name]
            out[name] = column if everything else column[ok].reset_index(drop=True)
        frame = self.model_frame(values, None if everything else ok)
        if len(frame):
            prediction, proba = self.predict(frame)
        else:
            prediction, proba = np.array([], dtype=object), np.zeros((0, len(self.classes)))
        out["prediction"] = prediction
        if proba is not None:
            for j, name in enumerate(self.proba_columns):
                out[name] = proba[:, j]
        marks = _flag_texts(flags, ok)
        out["flags"] = pd.array(marks, dtype="string")
        scored = pd.DataFrame(out)
        bad = np.flatnonzero(reject)
        if bad.size == 0:  # the usual case; building typed empty columns one by one costs ~10 ms
            return ScoredChunk(scored=scored, rejected=self._no_rejects(df))
        rejected = pd.DataFrame({ROW: rows[bad]})
        for name in df.columns:
            rejected[str(name)] = df[name].iloc[bad].astype("string").to_numpy()
        rejected[REASON] = pd.array(["; ".join(reasons[p]) for p in bad.tolist()], dtype="string")
        return ScoredChunk(scored=scored, rejected=rejected)
