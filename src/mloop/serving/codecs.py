"""Request decoding and response encoding for the three prediction protocols.

* native ``/predict``: ``{"features": {...}}`` (one record), ``{"features": [{...}, ...]}`` (records),
  ``{"features": [1.0, "x", ...]}`` (one positional row in contract order) or a list of such rows;
* MLflow scoring (``/invocations``): ``dataframe_split``, ``dataframe_records``, ``instances``,
  ``inputs`` — answered exactly as ``mlflow models serve`` answers (``{"predictions": [...]}``);
* Open Inference Protocol / KServe V2 (``/v2/models/{name}/infer``): one named tensor per field, or a
  single ``[N, F]`` tensor of positional rows.

Decoders turn a parsed JSON body into validated :class:`~mloop.serving.validation.Columns` (through
the model's :class:`~mloop.serving.validation.ContractValidator`), enforcing the per-request row limit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from mloop.errors import PayloadTooLarge, RequestValidationError
from mloop.serving.validation import Columns, ContractValidator

__all__ = ["V2_DATATYPES", "decode_mlflow", "decode_native", "decode_v2", "v2_datatype"]

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
    if all(isinstance(x, Mapping) for x in items):
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


def decode_mlflow(body: Any, v: ContractValidator, max_rows: int) -> Columns:
    """Decode an MLflow scoring-protocol body (exactly one of :data:`MLFLOW_KEYS`)."""
    keys = [k for k in MLFLOW_KEYS if isinstance(body, Mapping) and k in body]
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


V2_DATATYPES = ("BOOL", "INT64", "FP32", "FP64", "BYTES")
_INT64 = (-(2**63), 2**63 - 1)


def _v2_element_ok(datatype: str, x: Any) -> bool:
    """Whether ``x`` is a value of ``datatype`` (None stands for a missing value of any type)."""
    if x is None:
        return True
    if datatype == "BOOL":
        return isinstance(x, bool)
    if datatype == "INT64":
        return type(x) is int and _INT64[0] <= x <= _INT64[1]
    if datatype == "BYTES":
        return isinstance(x, str)
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _v2_flat(data: list[Any], where: str) -> list[Any]:
    """The values of ``data``, flat or nested one level (rows); deeper nesting or objects are refused."""
    flat: list[Any] = []
    for x in data:
        if isinstance(x, list):
            for y in x:
                if isinstance(y, list | Mapping):
                    raise _shape(
                        f"{where} data may be nested one level (rows), not more.", _kind(y), "values", where
                    )
            flat.extend(x)
        elif isinstance(x, Mapping):
            raise _shape(f"{where} data must hold values, not objects.", "object", "values", where)
        else:
            flat.append(x)
    return flat


def _check_tensor(tensor: Mapping[str, Any], i: int) -> None:
    """A V2 tensor whose name, shape, datatype and data agree with one another."""
    name = tensor.get("name")
    where = f"inputs[{i}]"
    if not isinstance(name, str) or not name:
        raise _shape(f"{where} needs a non-empty string name.", _kind(name), "a field name", where)
    where = f"tensor {name!r}"
    datatype = tensor.get("datatype")
    if datatype not in V2_DATATYPES:
        raise _shape(
            f"{where} has datatype {datatype!r}; expected one of {', '.join(V2_DATATYPES)}.",
            datatype if isinstance(datatype, str) else _kind(datatype),
            " | ".join(V2_DATATYPES),
            name,
        )
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not shape or not all(type(d) is int and d >= 0 for d in shape):
        raise _shape(
            f"{where} needs a shape: a non-empty list of non-negative integers, e.g. [3] or [3, 1]; "
            f"got {shape!r}.",
            _kind(shape),
            "list of non-negative integers",
            name,
        )
    data = tensor.get("data")
    if not isinstance(data, list):
        raise _shape(f"{where} data must be a list.", _kind(data), "list", name)
    flat = _v2_flat(data, where)
    size = math.prod(shape)
    if len(flat) != size:
        raise _shape(
            f"{where} has shape {shape} ({size} values) but its data holds {len(flat)} values; "
            "send as many values as the shape says.",
            len(flat),
            f"{size} values",
            name,
        )
    bad = next((x for x in flat if not _v2_element_ok(datatype, x)), _NONE)
    if bad is not _NONE:
        raise _shape(
            f"{where} is {datatype} but holds {bad!r} ({_kind(bad)}); send values of its datatype "
            "(BOOL: true/false, INT64: integers within 64 bits, FP32/FP64: numbers, BYTES: strings).",
            _kind(bad),
            datatype,
            name,
        )


_NONE = object()


def decode_v2(body: Any, v: ContractValidator, max_rows: int) -> Columns:
    """Decode an Open Inference Protocol request: named tensors per field, or one ``[N, F]`` tensor.

    Every tensor's shape, datatype and data must agree and names must be distinct (422 otherwise)."""
    inputs = body.get("inputs") if isinstance(body, Mapping) else None
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, Mapping) for t in inputs):
        raise _shape(
            'A V2 inference request needs "inputs": a non-empty list of tensors '
            '({"name", "shape", "datatype", "data"}).',
            _kind(inputs),
            "list of tensors",
            "inputs",
        )
    assert isinstance(body, Mapping)
    rid = body.get("id")
    if rid is not None and not isinstance(rid, str):
        raise _shape("A V2 request id must be a string.", _kind(rid), "string", "id")
    for key in ("parameters",):
        if body.get(key) is not None and not isinstance(body[key], Mapping):
            raise _shape(f"V2 {key} must be an object.", _kind(body[key]), "object", key)
    for i, tensor in enumerate(inputs):
        _check_tensor(tensor, i)
        if tensor.get("parameters") is not None and not isinstance(tensor["parameters"], Mapping):
            raise _shape(
                "V2 tensor parameters must be an object.", _kind(tensor["parameters"]), "object", "inputs"
            )
    names = [t["name"] for t in inputs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise _shape(
            f"V2 tensor names must be distinct; {', '.join(map(repr, duplicates))} appear more than once.",
            duplicates,
            "one tensor per name",
            "inputs",
        )
    if len(inputs) == 1 and names[0] not in v.fields:
        tensor = inputs[0]
        data = tensor.get("data")
        shape = tensor.get("shape")
        if not isinstance(data, list):
            raise _shape("V2 tensor data must be a list.", _kind(data), "list", "inputs")
        if data and not isinstance(data[0], list):
            width = len(v.fields)
            if (
                isinstance(shape, list)
                and len(shape) == 2
                and shape[1] == width
                and len(data) == shape[0] * width
            ):
                data = [data[i : i + width] for i in range(0, len(data), width)]
            else:
                raise _shape(
                    f"A single V2 tensor must hold rows of {width} values (shape [N, {width}]) in contract "
                    f"order ({', '.join(v.fields)}); got shape {shape!r} with {len(data)} values.",
                    shape,
                    f"[N, {width}]",
                    "inputs",
                )
        return _rows_or_records(data, v, max_rows, "inputs")
    columns: dict[str, Any] = {}
    for tensor, name in zip(inputs, names, strict=True):
        shape = tensor["shape"]
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise _shape(
                f"Tensor {name!r} holds one field, so its shape is [N] or [N, 1]; got {shape}. "
                f"Send one [N, {len(v.fields)}] tensor of rows, or one tensor per field.",
                shape,
                "[N] or [N, 1]",
                name,
            )
        columns[name] = _v2_flat(tensor["data"], f"tensor {name!r}")
    return _columnar(columns, v, max_rows, "inputs")


def v2_datatype(dtype: str) -> str:
    """The V2 datatype of a contract dtype."""
    return {"float": "FP64", "int": "INT64", "bool": "BOOL"}.get(dtype, "BYTES")
