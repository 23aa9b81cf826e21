"""The data contract's value objects: :class:`ColumnSpec` and :class:`DataContract`.

A contract lists the columns a model was trained on, in order, with their type, whether missing
values are allowed, the numeric range and the allowed categories seen at training. It is saved as
JSON next to every model version and is the one source of truth for the serving request schema,
batch/ingest validation and the drift reference. ``hash()`` is the sha256 of its canonical JSON, so
two contracts with the same content have the same hash whatever process wrote them.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

from mloop.errors import DataError, did_you_mean

__all__ = ["DTYPES", "ColumnSpec", "DataContract", "Dtype"]

Dtype = Literal["int", "float", "bool", "category", "string", "datetime"]
DTYPES: tuple[str, ...] = get_args(Dtype)
FORMAT_VERSION = 1
#: Longest column name a contract accepts.
MAX_NAME_LENGTH = 256


def _number(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DataError(f"{what} must be a finite number or null; got {value!r}.")
    return float(value)


@dataclass(frozen=True)
class ColumnSpec:
    """One column of the contract.

    ``min``/``max`` (numeric columns) and ``categories`` (``category`` columns) describe the values
    seen at training; validation compares new data with them.
    """

    name: str
    dtype: Dtype
    nullable: bool
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise DataError(f"A contract column name must be a non-empty string; got {self.name!r}.")
        # Names reach request schemas, logs, reports and the model's input frame: plain text only.
        if len(self.name) > MAX_NAME_LENGTH:
            raise DataError(
                f"Contract column name {self.name[:40]!r}… has {len(self.name)} characters; "
                f"at most {MAX_NAME_LENGTH} are allowed. Rename the column."
            )
        if not self.name.isprintable():
            raise DataError(
                f"Contract column name {self.name!r} must be printable characters only (no newline, tab, "
                "NUL or invisible format characters). Rename the column."
            )
        if self.dtype not in DTYPES:
            raise DataError(
                f"Column {self.name!r} has dtype {self.dtype!r}; expected one of {', '.join(DTYPES)}."
                + did_you_mean(str(self.dtype), DTYPES)
            )
        object.__setattr__(self, "nullable", bool(self.nullable))
        low = _number(self.min, f"Column {self.name!r} min")
        high = _number(self.max, f"Column {self.name!r} max")
        if low is not None and high is not None and low > high:
            raise DataError(f"Column {self.name!r} has min {low} greater than max {high}.")
        object.__setattr__(self, "min", low)
        object.__setattr__(self, "max", high)
        if self.categories is not None:
            if isinstance(self.categories, str) or not all(isinstance(c, str) for c in self.categories):
                raise DataError(
                    f"Column {self.name!r} categories must be a list of strings; got {self.categories!r}."
                )
            object.__setattr__(self, "categories", tuple(self.categories))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "nullable": self.nullable,
            "min": self.min,
            "max": self.max,
            "categories": list(self.categories) if self.categories is not None else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ColumnSpec:
        if not isinstance(d, Mapping):
            raise DataError(f"A contract column must be an object; got {d!r}.")
        known = {"name", "dtype", "nullable", "min", "max", "categories"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DataError(
                f"Contract column {d.get('name')!r} has unknown key(s) {', '.join(map(repr, unknown))}; "
                f"known keys: {', '.join(sorted(known))}." + did_you_mean(unknown[0], known)
            )
        for key in ("name", "dtype", "nullable"):
            if key not in d:
                raise DataError(f"Contract column {d.get('name', '?')!r} lacks the required key {key!r}.")
        cats = d.get("categories")
        return cls(
            name=d["name"],
            dtype=d["dtype"],
            nullable=d["nullable"],
            min=d.get("min"),
            max=d.get("max"),
            categories=tuple(cats) if isinstance(cats, list | tuple) else cats,
        )


@dataclass(frozen=True)
class DataContract:
    """The columns a model expects, in order, and which one is the target (if any)."""

    columns: tuple[ColumnSpec, ...]
    target: str | None
    task: str | None = None
    version: int = FORMAT_VERSION
    _index: dict[str, ColumnSpec] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        columns = tuple(self.columns)
        object.__setattr__(self, "columns", columns)
        index: dict[str, ColumnSpec] = {}
        for spec in columns:
            if not isinstance(spec, ColumnSpec):
                raise DataError(f"DataContract columns must be ColumnSpec objects; got {spec!r}.")
            if spec.name in index:
                raise DataError(f"Column {spec.name!r} appears twice in the contract; names must be unique.")
            index[spec.name] = spec
        object.__setattr__(self, "_index", index)
        if self.target is not None and self.target not in index:
            raise DataError(
                f"Contract target {self.target!r} is not one of its columns."
                + did_you_mean(self.target, index)
            )

    @property
    def feature_columns(self) -> list[str]:
        """Every column but the target, in contract order."""
        return [c.name for c in self.columns if c.name != self.target]

    @property
    def names(self) -> list[str]:
        """Every column, target included, in contract order."""
        return [c.name for c in self.columns]

    def column(self, name: str) -> ColumnSpec:
        """The spec of ``name``; a :class:`DataError` with a suggestion when there is no such column."""
        try:
            return self._index[name]
        except KeyError:
            raise DataError(
                f"The data contract has no column {name!r}.{did_you_mean(name, self._index)} "
                f"Columns: {', '.join(self._index)}."
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def without_target(self) -> DataContract:
        """The same contract without the target column (what a prediction request carries)."""
        if self.target is None:
            return self
        return replace(self, columns=tuple(c for c in self.columns if c.name != self.target), target=None)

    # ---- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "target": self.target,
            "task": self.task,
            "columns": [c.to_dict() for c in self.columns],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataContract:
        if not isinstance(d, Mapping) or not isinstance(d.get("columns"), list):
            raise DataError(
                "A data contract must be an object with a 'columns' list (as written by DataContract.save); "
                f"got {type(d).__name__} with keys {sorted(d) if isinstance(d, Mapping) else '-'}."
            )
        version = d.get("version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise DataError(
                f"Data contract version {version!r} is not supported by this mloop (up to {FORMAT_VERSION}); "
                "upgrade mloop to read it."
            )
        return cls(
            columns=tuple(ColumnSpec.from_dict(c) for c in d["columns"]),
            target=d.get("target"),
            task=d.get("task"),
            version=version,
        )

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, ensure_ascii=False)

    @classmethod
    def from_json(cls, s: str | bytes) -> DataContract:
        try:
            data = json.loads(s)
        except (ValueError, TypeError) as exc:
            raise DataError(f"A data contract must be JSON; could not parse it: {exc}.") from exc
        return cls.from_dict(data)

    def save(self, path: str | Path) -> Path:
        """Write the contract as JSON to ``path`` (parents created); return the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.to_json() + "\n", encoding="utf-8")
        return target

    @classmethod
    def load(cls, path: str | Path) -> DataContract:
        source = Path(path)
        try:
            text = source.read_text(encoding="utf-8")
        except FileNotFoundError:
            folder = source.parent
            hint = did_you_mean(source.name, [p.name for p in folder.iterdir()]) if folder.is_dir() else ""
            raise DataError(
                f"Data contract file not found: {source.resolve()}.{hint} "
                "Set contract.path in mloop.yaml to an existing file, "
                "or remove it to use the champion's contract."
            ) from None
        except OSError as exc:
            raise DataError(f"Could not read the data contract {source.resolve()}: {exc}.") from exc
        try:
            return cls.from_json(text)
        except DataError as exc:
            raise DataError(f"{source.resolve()} is not a valid data contract: {exc}") from exc

    def hash(self) -> str:
        """sha256 hex of the canonical JSON (sorted keys, no spaces)."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
