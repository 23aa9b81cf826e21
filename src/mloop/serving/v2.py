"""Open Inference Protocol (KServe V2, Triton's HTTP/REST API): tensors in, outputs out.

A request is JSON, or JSON followed by raw tensor bytes (the *binary tensor data extension*: the
``Inference-Header-Content-Length`` header gives the JSON's length, and each input with a
``binary_data_size`` parameter takes that many bytes, in input order). :func:`read_request` turns
both into one JSON form, with binary data decoded into ``data`` lists, so :func:`decode_v2` checks
every request the same way: names distinct, ``shape`` a list of non-negative integers whose product
is the number of values, every value of the tensor's ``datatype``. Inputs are one tensor per
contract field (shape ``[N]`` or ``[N, 1]``), or one ``[N, F]`` tensor of positional rows.

Outputs are ``predict`` (the predicted class or value) and, for classifiers, ``predict_proba``
(``[N, classes]``). A request may ask for some of them (``outputs``), each as JSON or binary data
(its ``binary_data`` parameter, else the request's ``binary_data_output``): :func:`output_plan`
checks the request's choice before the model runs, :func:`encode_response` writes the answer.

Binary numbers are little-endian; ``BYTES`` elements are a 4-byte little-endian length and the
UTF-8 bytes; NaN in a binary ``FP16``/``FP32``/``FP64`` tensor is a missing value (JSON sends
``null``). Written here rather than with ``tritonclient.utils``: that package is a client (gevent,
geventhttpclient) that a server should not need, and the layout is a few ``struct`` formats.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from mloop.serving.codecs import _kind, _limit, _rows_or_records, _shape
from mloop.serving.validation import Columns, ContractValidator

if TYPE_CHECKING:
    from mloop.serving.responses import Prediction
    from mloop.serving.runtime import ModelRuntime

__all__ = [
    "HEADER_LENGTH",
    "V2_DATATYPES",
    "OutputPlan",
    "decode_v2",
    "encode_response",
    "model_config",
    "model_metadata",
    "output_plan",
    "read_request",
    "v2_datatype",
    "v2_output_type",
]

HEADER_LENGTH = "inference-header-content-length"
"""The binary extension's header: the length of the JSON part of a request or response body."""

_INTS = {
    "INT8": (-(2**7), 2**7 - 1),
    "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
    "UINT8": (0, 2**8 - 1),
    "UINT16": (0, 2**16 - 1),
    "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
}
_FLOATS = {"FP16": 65504.0, "FP32": 3.4028234663852886e38, "FP64": math.inf}
# Little-endian layouts for the struct module (a few values cost far less through it than numpy).
_STRUCT = {
    "BOOL": ("?", 1),
    "INT8": ("b", 1),
    "INT16": ("h", 2),
    "INT32": ("i", 4),
    "INT64": ("q", 8),
    "UINT8": ("B", 1),
    "UINT16": ("H", 2),
    "UINT32": ("I", 4),
    "UINT64": ("Q", 8),
    "FP16": ("e", 2),
    "FP32": ("f", 4),
    "FP64": ("d", 8),
}
V2_DATATYPES = ("BOOL", *_INTS, *_FLOATS, "BYTES")
_TRITON_TYPES = {"BYTES": "TYPE_STRING", **{t: f"TYPE_{t}" for t in V2_DATATYPES if t != "BYTES"}}


def _element_check(datatype: str) -> Callable[[Any], bool]:
    """Whether a JSON value is a value of ``datatype`` (None stands for a missing value)."""
    if datatype == "BOOL":
        return lambda x: x is None or x is True or x is False
    if datatype == "BYTES":
        return lambda x: x is None or type(x) is str
    if datatype in _INTS:
        low, high = _INTS[datatype]
        return lambda x: x is None or (type(x) is int and low <= x <= high)
    top = _FLOATS[datatype]
    return lambda x: (
        x is None or ((type(x) is float or type(x) is int) and math.isfinite(x) and -top <= x <= top)
    )


_CHECKS = {t: _element_check(t) for t in V2_DATATYPES}
_NO_PARAMS: dict[str, Any] = {}


# -- requests --------------------------------------------------------------------------------------
def read_request(raw: bytes, header_length: str | None) -> Any:
    """The request as JSON, binary tensor data decoded into each input's ``data``."""
    if header_length is None:
        return _json(raw, "The request body")
    try:
        n = int(header_length)
    except ValueError:
        n = -1
    if not 0 <= n <= len(raw):
        raise _shape(
            f"Inference-Header-Content-Length is {header_length[:40]!r}, but the body has {len(raw)} "
            "bytes; it must be the length of the JSON part, at most the body's length.",
            header_length[:40],
            f"0..{len(raw)}",
            "Inference-Header-Content-Length",
        )
    body = _json(raw[:n], "The JSON part of the request (Inference-Header-Content-Length bytes)")
    inputs = body.get("inputs") if isinstance(body, dict) else None
    offset, total = n, len(raw)
    for i, tensor in enumerate(inputs if type(inputs) is list else ()):
        params = tensor.get("parameters") if type(tensor) is dict else None
        size = params.get("binary_data_size") if type(params) is dict else None
        if size is None:
            continue
        end = offset + size if type(size) is int and size >= 0 else -1
        if not offset <= end <= total or "data" in tensor:
            where = _where(tensor, i)
            if "data" in tensor:
                raise _shape(f"{where} has both data and binary_data_size; send one.", "both", "one", where)
            raise _shape(
                f"{where} declares binary_data_size {size!r}, but {total - offset} bytes of binary data "
                "are left in the body.",
                size if type(size) is int else _kind(size),
                f"0..{total - offset}",
                where,
            )
        datatype = tensor.get("datatype")
        unpack = _UNPACKERS.get((datatype, size)) if type(datatype) is str else None
        if unpack is not None:  # a layout seen before (the common case), inlined
            values = unpack(raw[offset:end])
            data = list(values)
            if datatype[0] == "F" and any(map(math.isnan, data)):
                data = [None if x != x else x for x in data]  # NaN: a missing value
            tensor["data"] = data
        else:
            tensor["data"] = _from_binary(datatype, raw[offset:end], tensor, i)
        offset = end
    if offset != total:
        raise _shape(
            f"The body has {total - offset} bytes after the JSON part and the binary inputs it declares; "
            "each binary input needs its binary_data_size parameter.",
            total - offset,
            "no trailing bytes",
            "body",
        )
    return body


def _json(raw: bytes, what: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _shape(
            f"{what} is not valid JSON: {exc}.", raw[:80].decode("utf-8", "replace"), "JSON", "body"
        ) from None


def _where(tensor: Mapping[str, Any], i: int) -> str:
    """How an error names a tensor."""
    return f"tensor {tensor.get('name')!r}" if isinstance(tensor.get("name"), str) else f"inputs[{i}]"


_UNPACKERS: dict[tuple[str, int], Callable[[bytes], tuple[Any, ...]]] = {}
"""Compiled ``struct`` layouts by (datatype, byte length): most requests repeat a few shapes."""


def _from_binary(datatype: Any, chunk: bytes, tensor: Mapping[str, Any], i: int) -> list[Any]:
    unpack = _UNPACKERS.get((datatype, len(chunk))) if type(datatype) is str else None
    if unpack is None:
        if datatype == "BYTES":
            return _bytes_elements(chunk, tensor, i)
        layout = _STRUCT.get(datatype) if type(datatype) is str else None
        if layout is None:
            where = _where(tensor, i)
            raise _shape(
                f"{where} has datatype {datatype!r}; expected one of {', '.join(V2_DATATYPES)}.",
                datatype if isinstance(datatype, str) else _kind(datatype),
                " | ".join(V2_DATATYPES),
                where,
            )
        code, size = layout
        if len(chunk) % size:
            where = _where(tensor, i)
            raise _shape(
                f"{where} is {datatype} ({size} bytes per value) but has {len(chunk)} bytes of data.",
                len(chunk),
                f"a multiple of {size} bytes",
                where,
            )
        unpack = struct.Struct(f"<{len(chunk) // size}{code}").unpack
        if len(_UNPACKERS) < 4096:
            _UNPACKERS[datatype, len(chunk)] = unpack
    values = unpack(chunk)
    if datatype[0] == "F":
        return [None if x != x else x for x in values]  # NaN: a missing value
    return list(values)


def _bytes_elements(chunk: bytes, tensor: Mapping[str, Any], i: int) -> list[Any]:
    out: list[Any] = []
    offset, end = 0, len(chunk)
    while offset < end:
        size = struct.unpack_from("<I", chunk, offset)[0] if offset + 4 <= end else -1
        offset += 4
        if size < 0 or offset + size > end:
            where = _where(tensor, i)
            raise _shape(
                f"{where}: a BYTES element (a 4-byte length, then that many bytes) runs past the "
                "tensor's data.",
                end,
                "length + bytes",
                where,
            )
        try:
            out.append(chunk[offset : offset + size].decode("utf-8"))
        except UnicodeDecodeError:
            where = _where(tensor, i)
            raise _shape(
                f"{where}: BYTES element {len(out)} is not UTF-8 text; fields take text.",
                "bytes",
                "UTF-8 text",
                where,
            ) from None
        offset += size
    return out


def _flat(data: list[Any], where: str) -> list[Any]:
    """The values of ``data``, flat or nested (row-major), objects refused."""
    if not any(type(x) is list or isinstance(x, Mapping) for x in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for x in stack[-1]:
            if type(x) is list:
                if len(stack) > 8:
                    raise _shape(f"{where} data is nested too deep.", "list", "values", where)
                stack.append(iter(x))
                break
            if isinstance(x, Mapping):
                raise _shape(f"{where} data must hold values, not objects.", "object", "values", where)
            flat.append(x)
        else:
            stack.pop()
    return flat


def _check_tensor(tensor: Mapping[str, Any], i: int) -> list[Any]:
    """The flat values of a tensor whose name, shape, datatype and data agree with one another."""
    # The common case first, in a few operations: flat data of shape [N], every value of its type
    # (a value check refuses lists and objects too). Anything else takes the full checks, which
    # accept the same tensors and say what is wrong with the others.
    shape, data = tensor.get("shape"), tensor.get("data")
    if type(shape) is list and len(shape) == 1 and type(data) is list and shape[0] == len(data):
        datatype = tensor.get("datatype")
        check = _CHECKS.get(datatype) if type(datatype) is str else None
        name, params = tensor.get("name"), tensor.get("parameters")
        if (
            check is not None
            and type(name) is str
            and name
            and type(shape[0]) is int
            and (params is None or type(params) is dict)
            and all(map(check, data))
        ):
            return data
    return _checked_tensor(tensor, i)


def _checked_tensor(tensor: Mapping[str, Any], i: int) -> list[Any]:
    name = tensor.get("name")
    where = f"inputs[{i}]"
    if type(name) is not str or not name:
        raise _shape(f"{where} needs a non-empty string name.", _kind(name), "a field name", where)
    where = f"tensor {name!r}"
    datatype = tensor.get("datatype")
    check = _CHECKS.get(datatype) if type(datatype) is str else None
    if check is None:
        raise _shape(
            f"{where} has datatype {datatype!r}; expected one of {', '.join(V2_DATATYPES)}.",
            datatype if isinstance(datatype, str) else _kind(datatype),
            " | ".join(V2_DATATYPES),
            name,
        )
    shape = tensor.get("shape")
    if type(shape) is not list or not shape or not all(type(d) is int and d >= 0 for d in shape):
        raise _shape(
            f"{where} needs a shape: a non-empty list of non-negative integers, e.g. [3] or [3, 1]; "
            f"got {shape!r}.",
            _kind(shape),
            "list of non-negative integers",
            name,
        )
    data = tensor.get("data")
    if type(data) is not list:
        raise _shape(f"{where} data must be a list.", _kind(data), "list", name)
    params = tensor.get("parameters")
    if params is not None and not isinstance(params, Mapping):
        raise _shape("V2 tensor parameters must be an object.", _kind(params), "object", name)
    flat = _flat(data, where)
    size = math.prod(shape)
    if len(flat) != size:
        raise _shape(
            f"{where} has shape {shape} ({size} values) but its data holds {len(flat)} values; "
            "send as many values as the shape says.",
            len(flat),
            f"{size} values",
            name,
        )
    for x in flat:
        if not check(x):
            raise _shape(
                f"{where} is {datatype} but holds {x!r} ({_kind(x)}); send values of its datatype "
                "(BOOL: true/false, INT*/UINT*: integers in the type's range, FP*: finite numbers, "
                "BYTES: strings).",
                _kind(x),
                str(datatype),
                name,
            )
    return flat


def decode_v2(body: Any, v: ContractValidator, max_rows: int) -> Columns:
    """Decode an Open Inference Protocol request (see the module docstring); 422 when it is not one."""
    inputs = body.get("inputs") if isinstance(body, Mapping) else None
    if type(inputs) is not list or not inputs or not all(isinstance(t, Mapping) for t in inputs):
        raise _shape(
            'A V2 inference request needs "inputs": a non-empty list of tensors '
            '({"name", "shape", "datatype", "data"}).',
            _kind(inputs),
            "list of tensors",
            "inputs",
        )
    assert isinstance(body, Mapping)
    rid = body.get("id")
    if rid is not None and type(rid) is not str:
        raise _shape("A V2 request id must be a string.", _kind(rid), "string", "id")
    params = body.get("parameters")
    if params is not None and not isinstance(params, Mapping):
        raise _shape("V2 parameters must be an object.", _kind(params), "object", "parameters")
    columns: dict[str, list[Any]] = {}
    lengths: set[int] = set()
    checks = _CHECKS
    others: list[Mapping[str, Any]] = []  # tensors off the common case, whose shape is checked below
    for i, tensor in enumerate(inputs):
        # _check_tensor's common case, inlined: this loop runs once per field of every request.
        shape, flat, name = tensor.get("shape"), tensor.get("data"), tensor.get("name")
        if not (
            type(shape) is list
            and len(shape) == 1
            and type(flat) is list
            and shape[0] == len(flat)
            and type(name) is str
            and name
            and type(shape[0]) is int
            and type(datatype := tensor.get("datatype")) is str
            and (check := checks.get(datatype)) is not None
            and type(tensor.get("parameters", _NO_PARAMS)) is dict
            and all(map(check, flat))
        ):
            flat = _check_tensor(tensor, i)
            name = tensor["name"]
            others.append(tensor)
        if name in columns:
            names = [t["name"] for t in inputs]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            raise _shape(
                f"V2 tensor names must be distinct; {', '.join(map(repr, duplicates))} appear more "
                "than once.",
                duplicates,
                "one tensor per name",
                "inputs",
            )
        columns[name] = flat
        lengths.add(len(flat))
    if len(inputs) == 1 and name not in v.fields:
        return _row_tensor(inputs[0], columns[name], v, max_rows)
    for tensor in others:
        shape = tensor["shape"]
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise _shape(
                f"Tensor {tensor['name']!r} holds one field, so its shape is [N] or [N, 1]; got {shape}. "
                f"Send one [N, {len(v.fields)}] tensor of rows, or one tensor per field.",
                shape,
                "[N] or [N, 1]",
                tensor["name"],
            )
    if len(lengths) > 1:
        raise _shape(
            f"Every tensor of inputs must have the same length; got lengths {sorted(lengths)}.",
            sorted(lengths),
            "tensors of equal length",
            "inputs",
        )
    n = lengths.pop()
    _limit(n, max_rows)
    return v.from_columns(columns, n)


def _row_tensor(tensor: Mapping[str, Any], flat: list[Any], v: ContractValidator, max_rows: int) -> Columns:
    """One ``[N, F]`` tensor of positional rows in contract order."""
    shape = tensor["shape"]
    width = len(v.fields)
    if len(shape) != 2 or shape[1] != width:
        raise _shape(
            f"A single V2 tensor must hold rows of {width} values (shape [N, {width}]) in contract "
            f"order ({', '.join(v.fields)}); got shape {shape!r} with {len(flat)} values.",
            shape,
            f"[N, {width}]",
            "inputs",
        )
    rows = [flat[i : i + width] for i in range(0, len(flat), width)]
    return _rows_or_records(rows, v, max_rows, "inputs")


# -- responses -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OutputPlan:
    """Which outputs a request gets, in order, and whether each is sent as binary data."""

    outputs: tuple[tuple[str, bool], ...]


_DEFAULT_PLANS: dict[tuple[bool, bool], OutputPlan] = {
    (classifier, binary): OutputPlan(
        (("predict", binary), ("predict_proba", binary)) if classifier else (("predict", binary),)
    )
    for classifier in (True, False)
    for binary in (True, False)
}


def output_plan(body: Any, is_classifier: bool) -> OutputPlan:
    """The outputs ``body`` asks for (all by default); 422 for an unknown or repeated output."""
    params = body.get("parameters") if isinstance(body, Mapping) else None
    binary = bool(params.get("binary_data_output", False)) if isinstance(params, Mapping) else False
    requested = body.get("outputs") if isinstance(body, Mapping) else None
    if requested is None:
        return _DEFAULT_PLANS[is_classifier, binary]
    known = ("predict", "predict_proba") if is_classifier else ("predict",)
    if type(requested) is not list or not all(isinstance(o, Mapping) for o in requested):
        raise _shape(
            'V2 "outputs" must be a list of {"name", "parameters"?} objects.',
            _kind(requested),
            "list of objects",
            "outputs",
        )
    plan: list[tuple[str, bool]] = []
    for o in requested:
        name = o.get("name")
        if name not in known:
            raise _shape(
                f"This model has no output {name!r}; its outputs are {', '.join(known)}.",
                name if isinstance(name, str) else _kind(name),
                " | ".join(known),
                "outputs",
            )
        if any(name == seen for seen, _ in plan):
            raise _shape(f"Output {name!r} is requested twice.", name, "each output once", "outputs")
        p = o.get("parameters")
        if p is not None and not isinstance(p, Mapping):
            raise _shape("V2 output parameters must be an object.", _kind(p), "object", "outputs")
        if p and p.get("classification"):
            raise _shape(
                f"Output {name!r}: the classification extension is not served; request "
                "predict_proba for class probabilities.",
                "classification",
                "binary_data",
                "outputs",
            )
        plan.append((name, bool(p.get("binary_data", binary)) if p else binary))
    return OutputPlan(tuple(plan))


def v2_output_type(values: list[Any]) -> str:
    """The V2 datatype that holds every value."""
    if all(type(v) is bool for v in values):
        return "BOOL"
    if all(type(v) is int for v in values):
        return "INT64"
    if all(type(v) is int or type(v) is float for v in values):
        return "FP64"
    return "BYTES"


def _binary(datatype: str, values: list[Any]) -> bytes:
    if datatype == "BYTES":
        parts = [str(v).encode("utf-8") for v in values]
        return b"".join(struct.pack("<I", len(b)) + b for b in parts)
    return struct.pack(f"<{len(values)}{_STRUCT[datatype][0]}", *values)


def encode_response(p: Prediction, body: Any, plan: OutputPlan) -> tuple[bytes, int | None]:
    """The answer's bytes, and the JSON part's length when binary outputs follow it (else None)."""
    preds = p.output.predictions
    n = len(preds)
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, binary in plan.outputs:
        if name == "predict":
            datatype, values, shape = v2_output_type(preds), preds, [n]
            extra: dict[str, Any] | None = None
        else:
            proba = p.output.probabilities or []
            labels = p.runtime.class_labels
            datatype, shape = "FP64", [n, len(labels)]
            values = [x for row in proba for x in row]
            extra = {"classes": labels}
        out: dict[str, Any] = {"name": name, "shape": shape, "datatype": datatype}
        if binary:
            blob = _binary(datatype, values)
            blobs.append(blob)
            out["parameters"] = {**(extra or {}), "binary_data_size": len(blob)}
        else:
            out["data"] = values
            if extra:
                out["parameters"] = extra
        outputs.append(out)
    answer: dict[str, Any] = {
        "model_name": p.model,
        "model_version": p.version,
        "outputs": outputs,
        "parameters": {"prediction_ids": p.ids, "arm": p.arm},
    }
    rid = body.get("id") if isinstance(body, Mapping) else None
    if type(rid) is str:
        answer["id"] = rid
    head = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


# -- model documents -------------------------------------------------------------------------------
def v2_datatype(dtype: str) -> str:
    """The V2 datatype of a contract dtype."""
    return {"float": "FP64", "int": "INT64", "bool": "BOOL"}.get(dtype, "BYTES")


def _outputs(runtime: ModelRuntime) -> list[tuple[str, str, list[int]]]:
    kind = v2_output_type(runtime.classes) if runtime.is_classifier else "FP64"
    outs = [("predict", kind, [-1])]
    if runtime.is_classifier:
        outs.append(("predict_proba", "FP64", [-1, len(runtime.classes)]))
    return outs


def model_metadata(runtime: ModelRuntime, versions: list[str]) -> dict[str, Any]:
    """``GET /v2/models/{name}[/versions/{v}]``: versions, inputs (one per field) and outputs."""
    return {
        "name": runtime.name,
        "versions": versions,
        "platform": "mloop-sklearn",
        "inputs": [{"name": s.name, "datatype": v2_datatype(s.dtype), "shape": [-1]} for s in runtime.specs],
        "outputs": [{"name": n, "datatype": t, "shape": s} for n, t, s in _outputs(runtime)],
    }


def model_config(
    runtime: ModelRuntime, versions: list[str], max_rows: int, max_wait_ms: float
) -> dict[str, Any]:
    """``GET /v2/models/{name}[/versions/{v}]/config`` in Triton's model configuration form.

    Inputs are per field, batched along their first dimension (``max_batch_size`` is
    ``serving.max_request_rows``; the micro-batcher waits at most ``serving.max_wait_ms``)."""
    required = {r.name for r in runtime.validator.checks if r.required}
    return {
        "name": runtime.name,
        "platform": "mloop-sklearn",
        "backend": "mloop",
        "version_policy": {"specific": {"versions": versions}},
        "max_batch_size": max_rows,
        "input": [
            {
                "name": s.name,
                "data_type": _TRITON_TYPES[v2_datatype(s.dtype)],
                "dims": [1],
                "optional": s.name not in required,
            }
            for s in runtime.specs
        ],
        "output": [
            {"name": n, "data_type": _TRITON_TYPES[t], "dims": [1] if len(s) == 1 else s[1:]}
            for n, t, s in _outputs(runtime)
        ],
        "dynamic_batching": {"max_queue_delay_microseconds": int(max_wait_ms * 1000)},
        "parameters": {
            "alias": {"string_value": runtime.alias},
            "mlflow_output": {"string_value": runtime.mlflow_output},
        },
    }
