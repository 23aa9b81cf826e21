"""Request decoding for the prediction protocols (the Open Inference Protocol's is :mod:`mloop.serving.v2`).

* native ``/predict``: ``{"features": {...}}`` (one record), ``{"features": [{...}, ...]}`` (records),
  ``{"features": [1.0, "x", ...]}`` (one positional row in contract order) or a list of such rows;
* MLflow scoring (``/invocations``): ``dataframe_split``, ``dataframe_records``, ``instances``,
  ``inputs`` — answered exactly as ``mlflow models serve`` answers (``{"predictions": [...]}``) —
  or a CSV or Parquet table (:func:`parse_csv`, :func:`parse_parquet`);
* Open Inference Protocol / KServe V2 (``/v2/models/{name}/infer``): :mod:`mloop.serving.v2`.

Decoders turn a parsed JSON body into validated :class:`~mloop.serving.validation.Columns` (through
the model's :class:`~mloop.serving.validation.ContractValidator`), enforcing the per-request row limit.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mloop.errors import PayloadTooLarge, RequestValidationError
from mloop.serving.validation import Columns, ContractValidator

__all__ = ["Table", "decode_mlflow", "decode_native", "parse_csv", "parse_parquet"]

MLFLOW_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def _shape(message: str, received: Any, allowed: str, field: str = "body") -> RequestValidationError:
    return RequestValidationError(
        message,
        [{"field": field, "rule": "shape", "received": received, "allowed": allowed, "rows": [], "count": 1}],
    )


def _kind(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", type(None): "null", bool: "boolean"}.get(
        type(value), "number" if isinstance(value, int | float) else type(value).__name__
    )


def _limit(n: int, max_rows: int) -> None:
    if n > max_rows:
        raise PayloadTooLarge(
            f"The request carries {n} rows; at most {max_rows} are accepted per request "
            "(serving.max_request_rows). Split it into smaller requests or use `mloop batch`."
        )
    if n == 0:
        raise _shape("The request carries no rows; send at least one record.", 0, "at least one row")


def _rows_or_records(items: list[Any], v: ContractValidator, max_rows: int, field: str) -> Columns:
    """A list of records (objects) or of positional rows (lists)."""
    _limit(len(items), max_rows)
    if all(type(x) is dict or isinstance(x, Mapping) for x in items):  # JSON objects are dicts
        return v.from_records(items)
    if all(isinstance(x, list) for x in items):
        return v.from_rows(items)
    raise _shape(
        f"{field} must be a list of records (objects) or a list of rows (lists), not a mix; "
        f"got item kinds {sorted({_kind(x) for x in items})}.",
        sorted({_kind(x) for x in items}),
        "objects keyed by field name, or lists in contract column order",
        field,
    )


def _columnar(data: Mapping[str, Any], v: ContractValidator, max_rows: int, field: str) -> Columns:
    """``{field: [values...]}``; scalars count as one row."""
    lists = {k: (x if isinstance(x, list) else [x]) for k, x in data.items()}
    lengths = {len(x) for x in lists.values()}
    if len(lengths) > 1:
        raise _shape(
            f"Every column of {field} must have the same length; got lengths {sorted(lengths)}.",
            sorted(lengths),
            "columns of equal length",
            field,
        )
    n = lengths.pop() if lengths else 0
    _limit(n, max_rows)
    return v.from_columns(lists, n)


def decode_native(body: Any, v: ContractValidator, max_rows: int) -> tuple[Columns, bool]:
    """Decode a ``/predict`` body; also says whether it was a single record."""
    if not isinstance(body, Mapping) or "features" not in body:
        raise _shape(
            'The body must be an object with a "features" key, e.g. {"features": {"amount": 12.5}}; '
            f"got {_kind(body)}"
            + (f" with keys {sorted(body)[:10]}" if isinstance(body, Mapping) else "")
            + ".",
            _kind(body),
            '{"features": {...}} or {"features": [...]}',
        )
    features = body["features"]
    if isinstance(features, Mapping):
        _limit(1, max_rows)
        return v.from_records([features]), True
    if isinstance(features, list):
        if features and not any(isinstance(x, Mapping | list) for x in features):
            _limit(1, max_rows)
            return v.from_rows([features]), True
        return _rows_or_records(features, v, max_rows, "features"), False
    raise _shape(
        f'"features" must be an object, a list of objects or a list of values; got {_kind(features)}.',
        _kind(features),
        "object or list",
        "features",
    )


@dataclass(frozen=True, slots=True)
class Table:
    """A CSV or Parquet body of ``/invocations``: values per column (``text``: CSV cells, read as each
    contract field's type by :func:`decode_mlflow`)."""

    columns: dict[str, list[Any]]
    n: int
    text: bool


# pandas.read_csv's default missing-value markers: a CSV cell reads as missing as MLflow reads it.
_CSV_NA = frozenset(
    (
        "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
        "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
    )
)  # fmt: skip
_CSV_BOOL = {"true": True, "false": False}


def parse_csv(text: str) -> Table:
    """A CSV body (a header row, then one row per record, as ``DataFrame.to_csv`` writes it)."""
    try:
        rows = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
    except csv.Error as exc:
        raise _shape(f"The CSV body could not be read: {exc}.", "csv", "CSV with a header row") from None
    if not rows:
        raise _shape("The CSV body is empty; send a header row and at least one row.", 0, "header + rows")
    header, data = rows[0], rows[1:]
    width = len(header)
    for i, row in enumerate(data):
        if len(row) > width:
            raise _shape(
                f"CSV row {i + 1} has {len(row)} fields; the header names {width}.",
                len(row),
                f"at most {width} fields",
            )
    # A short row's missing cells are missing values, as pandas reads them.
    columns = {name: [row[j] if j < len(row) else "" for row in data] for j, name in enumerate(header)}
    return Table(columns, len(data), text=True)


def parse_parquet(raw: bytes) -> Table:
    """A Parquet body (``DataFrame.to_parquet``); NaN reads as missing, timestamps as ISO text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(raw))
    except (pa.ArrowException, OSError) as exc:
        raise _shape(f"The Parquet body could not be read: {exc}.", "parquet", "a Parquet file") from None
    columns = {str(name): [_parquet_value(x) for x in values] for name, values in table.to_pydict().items()}
    return Table(columns, table.num_rows, text=False)


def _parquet_value(x: Any) -> Any:
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dt.datetime | dt.date):
        return x.isoformat()
    return x


def _csv_cell(dtype: str, cell: str) -> Any:
    """A CSV cell as a value of the contract ``dtype``; left as text when it is not one, so the
    contract check refuses it naming the field."""
    if cell in _CSV_NA:
        return None
    if dtype in ("float", "int") and "_" not in cell:  # Python's float() and int() take 1_000
        try:
            return float(cell) if dtype == "float" else int(cell)
        except ValueError:
            return cell
    if dtype == "bool":
        return _CSV_BOOL.get(cell.strip().lower(), cell)
    return cell


def _decode_table(table: Table, v: ContractValidator, max_rows: int) -> Columns:
    _limit(table.n, max_rows)
    if not table.text:
        return v.from_columns(table.columns, table.n)
    columns = {
        spec.name: [_csv_cell(spec.dtype, cell) for cell in table.columns[spec.name]]
        for spec in v.specs()
        if spec.name in table.columns
    }
    return v.from_columns(columns, table.n)


def decode_mlflow(body: Any, v: ContractValidator, max_rows: int) -> Columns:
    """Decode an MLflow scoring-protocol body (exactly one of :data:`MLFLOW_KEYS`, or a :class:`Table`)."""
    if isinstance(body, Table):
        return _decode_table(body, v, max_rows)
    keys = [k for k in MLFLOW_KEYS if k in body] if type(body) is dict or isinstance(body, Mapping) else []
    if len(keys) != 1:
        raise _shape(
            f"The body must have exactly one of {', '.join(MLFLOW_KEYS)} (MLflow's scoring protocol); got "
            + (f"keys {sorted(body)[:10]}." if isinstance(body, Mapping) else f"{_kind(body)}."),
            sorted(body)[:10] if isinstance(body, Mapping) else _kind(body),
            " | ".join(MLFLOW_KEYS),
        )
    key = keys[0]
    data = body[key]
    params = body.get("params")
    if params is not None and not isinstance(params, Mapping):
        raise _shape('"params" must be an object of inference parameters.', _kind(params), "object", "params")
    if key == "dataframe_split":
        if not isinstance(data, Mapping) or not isinstance(data.get("data"), list):
            raise _shape(
                'dataframe_split must be {"columns": [...], "data": [[...], ...]}.',
                _kind(data),
                '{"columns": [...], "data": [[...]]}',
                key,
            )
        rows = data["data"]
        columns = data.get("columns")
        if columns is None:
            return _rows_or_records(rows, v, max_rows, key)
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise _shape(
                "dataframe_split.columns must be a list of names.", _kind(columns), "list of strings", key
            )
        _limit(len(rows), max_rows)
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != len(columns):
                raise _shape(
                    f"dataframe_split.data row {i} must be a list of {len(columns)} values (one per column).",
                    _kind(row),
                    f"{len(columns)} values",
                    key,
                )
        return v.from_columns({c: [r[j] for r in rows] for j, c in enumerate(columns)}, len(rows))
    if isinstance(data, list):
        return _rows_or_records(data, v, max_rows, key)
    if isinstance(data, Mapping) and key in ("instances", "inputs"):
        return _columnar(data, v, max_rows, key)
    raise _shape(f"{key} must be a list of records or rows.", _kind(data), "list", key)
