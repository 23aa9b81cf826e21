"""Pydantic models and JSON Schemas of the request and response bodies, built from the served contract.

They document the API in OpenAPI (``/docs``) exactly as :mod:`mloop.serving.validation` and
:mod:`mloop.serving.codecs` enforce it, so a request the schema allows is one the server can accept
and the other way round (schemathesis checks both in CI): one property per contract field with the
JSON types its reader takes (an ``int`` field takes integers within 64 bits, a text field strings of
at most ``max_text_chars`` without NUL), nullable exactly when the field may be missing, ``enum`` and
``minimum``/``maximum`` when the serving policy rejects unseen categories or out-of-range values.
What JSON Schema cannot say (a V2 tensor's ``shape`` against its ``data``, columns of equal length) is
in the descriptions and enforced by the codecs.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, Field, WithJsonSchema

from mloop.data.enforce import INT64_MAX, INT64_MIN, ColumnRules
from mloop.serving.validation import ContractValidator

__all__ = ["openapi_components", "value_schema"]

_UINT64_MAX = 2**64 - 1  # JSON integers beyond 64 bits are read as floats, which a code column refuses
_FLOAT_MAX = 1.7976931348623157e308  # the largest finite double: bigger JSON numbers are refused
_NO_NUL = "^[^\\u0000]*$"
# A character Python's str.strip() keeps (the server refuses ids that are only whitespace).
_NOT_BLANK = (
    "[^\\t\\n\\u000b\\u000c\\r\\u001c-\\u001f \\u0085\\u00a0\\u1680\\u2000-\\u200a"
    "\\u2028\\u2029\\u202f\\u205f\\u3000]"
)
_SCALAR = {"anyOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}, {"type": "null"}]}


_REF = "x-mloop-ref"  # pydantic resolves "$ref" in the schemas it is given: written after generation


def _ref(name: str) -> dict[str, Any]:
    return {_REF: name}


def _resolve(node: Any) -> Any:
    """``node`` with every :func:`_ref` placeholder turned into a ``$ref`` to a component."""
    if isinstance(node, dict):
        if set(node) == {_REF}:
            return {"$ref": f"#/components/schemas/{node[_REF]}"}
        return {k: _resolve(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v) for v in node]
    return node


def _text(cap: int) -> dict[str, Any]:
    return {"type": "string", "maxLength": cap, "pattern": _NO_NUL}


def value_schema(rules: ColumnRules) -> dict[str, Any]:
    """The JSON Schema of one field's value, as :mod:`mloop.data.enforce` reads JSON values."""
    spec = rules.spec
    schema: dict[str, Any]
    if spec.dtype == "float":
        low, high = (rules.low, rules.high) if rules.out_of_range == "reject" else (-math.inf, math.inf)
        schema = {"type": "number", "minimum": max(low, -_FLOAT_MAX), "maximum": min(high, _FLOAT_MAX)}
    elif spec.dtype == "int":
        low, high = (rules.low, rules.high) if rules.out_of_range == "reject" else (-math.inf, math.inf)
        schema = {
            "type": "integer",
            "minimum": max(math.ceil(low), INT64_MIN) if math.isfinite(low) else INT64_MIN,
            "maximum": min(math.floor(high), INT64_MAX) if math.isfinite(high) else INT64_MAX,
        }
    elif spec.dtype == "bool":
        schema = {"anyOf": [{"type": "boolean"}, {"type": "integer", "enum": [0, 1]}]}
    elif spec.dtype == "datetime":
        schema = {"type": "string", "format": "date-time"}
    elif spec.dtype == "category" and rules.categories is not None and rules.unseen_category == "reject":
        cats = sorted(rules.categories)
        codes = [int(c) for c in cats if c.isascii() and c.lstrip("-").isdigit() and str(int(c)) == c]
        schema = {"enum": cats + codes} if codes else {"type": "string", "enum": cats}
    elif spec.dtype == "category":  # integers are read as their text (zip codes, ids)
        schema = {
            "anyOf": [_text(rules.cap), {"type": "integer", "minimum": INT64_MIN, "maximum": _UINT64_MAX}]
        }
    else:
        schema = _text(rules.cap)
    if not rules.required:  # a field that may be missing may also be null
        schema = {"anyOf": [schema, {"type": "null"}]}
    return schema


def _description(rules: ColumnRules) -> str:
    spec = rules.spec
    notes = [f"contract type {spec.dtype}"]
    if spec.dtype == "category" and spec.categories:
        notes.append("categories seen at training: " + ", ".join(spec.categories))
    if spec.dtype in ("int", "float") and (spec.min is not None or spec.max is not None):
        notes.append(
            f"training range [{spec.min:g}, {spec.max:g}]"
            if spec.min is not None and spec.max is not None
            else f"training bound {spec.min if spec.min is not None else spec.max:g}"
        )
    return "; ".join(notes) + ("" if rules.required else " (optional)")


def _features(v: ContractValidator | None) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The record schema, the positional row schema and the field order's description.

    Written as JSON Schema directly rather than through a pydantic model: a contract column may have
    any printable name (``_id``, ``model_config``), which pydantic would refuse as a field name."""
    if v is None:
        feat = {"type": "object", "additionalProperties": True, "title": "Features"}
        row = {"type": "array", "items": _SCALAR, "minItems": 1}
        return feat, row, "no model is loaded yet"
    properties: dict[str, Any] = {}
    items = []
    for rules in v.checks:
        schema = value_schema(rules)
        items.append(schema)
        properties[rules.name] = {**schema, "description": _description(rules)}
    feat = {
        "type": "object",
        "title": "Features",
        "properties": properties,
        "required": [r.name for r in v.checks if r.required],
        "additionalProperties": True,
        "description": "One record: a value per contract field (other keys are ignored).",
    }
    row = {
        "type": "array",
        "prefixItems": items,
        "items": False,
        "minItems": len(items),
        "maxItems": len(items),
        "description": f"One row: the values in contract order ({', '.join(v.fields)}).",
    }
    return feat, row, ", ".join(v.fields)


def _list(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item, "minItems": 1}


def _invocations(v: ContractValidator | None) -> dict[str, Any]:
    """MLflow's scoring protocol: exactly one of the four input keys (plus optional ``params``)."""
    rows_or_records = {"anyOf": [_list(_ref("Features")), _list(_ref("Row"))]}
    names = v.fields if v is not None else []
    columnar = {
        "type": "object",
        "minProperties": 1,
        "properties": {n: {"anyOf": [{}, {"type": "array", "minItems": 1}]} for n in names},
        "description": "Columns: {field: [values, ...]} with lists of equal length (a scalar is one row).",
    }
    split = {
        "type": "object",
        "required": ["data"],
        "properties": {
            "columns": {"type": "array", "items": {"type": "string"}},
            "data": {"type": "array", "items": {"type": "array"}, "minItems": 1},
            "index": {"type": "array"},
        },
        "description": "pandas' split orient: each row of data has one value per column "
        "(contract order when columns is absent).",
    }
    inputs = {
        "dataframe_split": split,
        "dataframe_records": _list(_ref("Features")),
        "instances": {"anyOf": [*rows_or_records["anyOf"], columnar]},
        "inputs": {"anyOf": [*rows_or_records["anyOf"], columnar]},
    }
    branches = []
    for key, schema in inputs.items():
        others = [k for k in inputs if k != key]
        branches.append(
            {
                "type": "object",
                "required": [key],
                "properties": {key: schema, "params": {"type": ["object", "null"]}},
                "not": {"anyOf": [{"required": [k]} for k in others]},
            }
        )
    return {"oneOf": branches, "description": "MLflow scoring protocol: exactly one of the four keys."}


def _tensor() -> dict[str, Any]:
    """A V2 input tensor: each datatype takes its own kind of element (flat or nested data)."""
    element = {
        "BOOL": {"type": "boolean"},
        "INT64": {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX},
        "FP32": {"type": "number", "minimum": -_FLOAT_MAX, "maximum": _FLOAT_MAX},
        "FP64": {"type": "number", "minimum": -_FLOAT_MAX, "maximum": _FLOAT_MAX},
        "BYTES": _text(10_000),
    }
    branches = []
    for datatype, item in element.items():  # the datatypes of mloop.serving.codecs.V2_DATATYPES
        nullable = {"anyOf": [item, {"type": "null"}]}
        branches.append(
            {
                "type": "object",
                "required": ["name", "shape", "datatype", "data"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
                    "datatype": {"const": datatype},
                    "data": {
                        "type": "array",
                        "items": {"anyOf": [nullable, {"type": "array", "items": nullable}]},
                    },
                    "parameters": {"type": ["object", "null"]},
                },
            }
        )
    return {
        "oneOf": branches,
        "description": "One named tensor per field (data of N values, shape [N] or [N, 1]), or one tensor of "
        "rows (shape [N, F], F values per row in contract order). The product of shape is the number of "
        "values in data, and every value is of the datatype (null marks a missing optional value).",
    }


_FEEDBACK_ITEM = {
    "type": "object",
    "required": ["prediction_id", "label"],
    "properties": {
        "prediction_id": {
            "type": "string",
            "minLength": 1,
            "maxLength": 128,
            "allOf": [{"pattern": _NOT_BLANK}, {"pattern": _NO_NUL}],
            "description": "The id a prediction answered with (not only whitespace).",
        },
        "label": {
            "anyOf": [{"type": "number"}, {"type": "boolean"}, {"type": "string", "pattern": _NO_NUL}],
            "description": "The observed value: one of the model's classes, or a number for a regressor.",
        },
    },
}


_RELOAD = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "version": {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": INT64_MAX},
                {
                    "type": "string",
                    "pattern": "^(v?[0-9]{1,18}|@[A-Za-z0-9]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)$",
                },
                {"type": "null"},
            ],
            "description": "A version number (3, 'v3') or an alias ('@champion'); default the serving alias.",
        }
    },
}


def _models(v: ContractValidator | None, name: str) -> tuple[list[type[BaseModel]], dict[str, Any]]:
    feat, row, fields_doc = _features(v)
    features = {
        "anyOf": [_ref("Features"), _list(_ref("Features")), _ref("Row"), _list(_ref("Row"))],
        "description": f"A record, a list of records, a positional row or a list of them. Field order "
        f"for positional rows: {fields_doc}.",
    }

    class PredictRequest(BaseModel):
        """One record, a list of records, or positional rows in contract column order."""

        features: Annotated[Any, WithJsonSchema(features)]

    class PredictionItem(BaseModel):
        id: str = Field(..., description="Prediction id; send it back with the label to POST /feedback.")
        prediction: float | int | bool | str | None
        probabilities: dict[str, float] | None = Field(None, description="Class probabilities (classifiers).")
        flags: dict[str, list[str]] | None = Field(
            None, description="Fields out of range or with unseen categories."
        )

    class PredictResponse(BaseModel):
        model: str = Field(..., examples=[name])
        version: str
        arm: str = Field(..., description="Rollout arm that answered (champion, canary, b, ...).")
        predictions: list[PredictionItem]

    class InferenceRequest(BaseModel):
        """Open Inference Protocol (KServe V2) request: tensors with distinct names."""

        id: str | None = None
        inputs: Annotated[
            Any,
            WithJsonSchema(
                {
                    "type": "array",
                    "items": _ref("InferTensor"),
                    "minItems": 1,
                    "description": "Tensors with distinct names.",
                }
            ),
        ]
        parameters: dict[str, Any] | None = None

    class FeedbackResult(BaseModel):
        """What happened to the labels: stored, and each refused item with its status."""

        received: int
        stored: int
        rejected: list[dict[str, Any]] | None = Field(
            None, description="Refused items: index, prediction_id, status (404, 409, 422) and error."
        )

    class ErrorResponse(BaseModel):
        """The body of every error: the error's kind, a message for a person, and per-field details."""

        error: str = Field(..., examples=["RequestValidationError"])
        message: str
        errors: list[dict[str, Any]] | None = Field(
            None, description="One entry per offending field: field, rule, received, allowed, rows, count."
        )

    models: list[type[BaseModel]] = [
        PredictRequest,
        PredictResponse,
        InferenceRequest,
        FeedbackResult,
        ErrorResponse,
    ]
    raw = {
        "V2ErrorResponse": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string", "description": "What was wrong and how to fix it."}},
            "description": "The Open Inference Protocol's error body.",
        },
        "MlflowErrorResponse": {
            "type": "object",
            "required": ["error_code", "message"],
            "properties": {
                "error_code": {"type": "string", "examples": ["BAD_REQUEST"]},
                "message": {"type": "string"},
            },
            "description": "MLflow's error body (mlflow models serve).",
        },
        "Features": feat,
        "Row": row,
        "InvocationsRequest": _invocations(v),
        "InferTensor": _tensor(),
        "FeedbackItem": _FEEDBACK_ITEM,
        "ReloadRequest": _RELOAD,
        "FeedbackRequest": {
            "anyOf": [
                {
                    "type": "object",
                    "required": ["feedback"],
                    "properties": {"feedback": _list(_ref("FeedbackItem"))},
                },
                _ref("FeedbackItem"),
                _list(_ref("FeedbackItem")),
            ],
            "description": "Labels by prediction id: {feedback: [items]}, one item, or a list of items.",
        },
    }
    return models, raw


def openapi_components(v: ContractValidator | None, name: str) -> dict[str, Any]:
    """``components.schemas`` entries for the request/response models of the current contract."""
    models, raw = _models(v, name)
    out: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    out.update(raw)
    return {name: _resolve(schema) for name, schema in out.items()}
