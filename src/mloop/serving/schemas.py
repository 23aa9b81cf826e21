"""Pydantic models of the request and response bodies, built from the served version's contract.

They document the API in OpenAPI (``/docs``): one property per contract field with its type, range
and allowed categories (enforced as ``enum``/``minimum``/``maximum`` when the serving policy rejects,
listed in the description when it only flags). Validation itself runs in
:mod:`mloop.serving.validation`, which applies the same rules faster on the hot path.
"""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from mloop.data.schema import ColumnSpec
from mloop.serving.validation import ContractValidator

__all__ = ["openapi_components"]

Scalar = float | int | bool | str | None
_TYPES: dict[str, Any] = {"float": float, "int": int, "bool": bool, "string": str, "datetime": datetime}


def _field(spec: ColumnSpec, required: bool, v: ContractValidator) -> tuple[Any, Any]:
    kind: Any = _TYPES.get(spec.dtype, str)
    notes = [f"contract type {spec.dtype}"]
    extra: dict[str, Any] = {}
    if spec.dtype == "category" and spec.categories:
        notes.append("categories seen at training: " + ", ".join(spec.categories))
        if v.unseen_category == "reject":
            kind = Literal[tuple(spec.categories)]
        else:
            extra["examples"] = list(spec.categories[:3])
    if spec.dtype in ("int", "float") and (spec.min is not None or spec.max is not None):
        notes.append(
            f"training range [{spec.min:g}, {spec.max:g}]"
            if spec.min is not None and spec.max is not None
            else f"training bound {spec.min if spec.min is not None else spec.max:g}"
        )
        if v.out_of_range == "reject":
            extra["ge"], extra["le"] = spec.min, spec.max
            if spec.dtype == "int":
                extra = {k: (int(x) if x is not None else None) for k, x in extra.items()}
    if spec.nullable:
        kind = kind | None
    description = "; ".join(notes) + ("" if required else " (optional)")
    default: Any = ... if required else None
    return kind, Field(default, description=description, **extra)


def _models(v: ContractValidator | None, name: str) -> list[type[BaseModel]]:
    if v is None:
        feat: type[BaseModel] = create_model("Features", __config__=ConfigDict(extra="allow"))
        fields_doc = "no model is loaded yet"
    else:
        fields = {c.name: _field(c.spec, c.required, v) for c in v.checks}
        feat = create_model("Features", __config__=ConfigDict(extra="allow"), **fields)  # type: ignore[call-overload]
        fields_doc = ", ".join(v.fields)
    row = list[Scalar]

    class PredictRequest(BaseModel):
        """One record, a list of records, or positional rows in contract column order."""

        features: feat | list[feat] | row | list[row] = Field(  # type: ignore[valid-type]
            ..., description=f"Field order for positional rows: {fields_doc}."
        )

    class PredictionItem(BaseModel):
        id: str = Field(..., description="Prediction id; send it back with the label to POST /feedback.")
        prediction: Scalar
        probabilities: dict[str, float] | None = Field(None, description="Class probabilities (classifiers).")
        flags: dict[str, list[str]] | None = Field(
            None, description="Fields out of range or with unseen categories."
        )

    class PredictResponse(BaseModel):
        model: str = Field(..., examples=[name])
        version: str
        arm: str = Field(..., description="Rollout arm that answered (champion, canary, b, ...).")
        predictions: list[PredictionItem]

    class DataframeSplit(BaseModel):
        columns: list[str] | None = None
        data: list[row]
        index: list[Any] | None = None

    class InvocationsRequest(BaseModel):
        """MLflow scoring protocol: exactly one of the four keys."""

        dataframe_split: DataframeSplit | None = None
        dataframe_records: list[feat] | None = None  # type: ignore[valid-type]
        instances: list[feat] | list[row] | None = None  # type: ignore[valid-type]
        inputs: list[feat] | list[row] | dict[str, list[Scalar]] | None = None  # type: ignore[valid-type]
        params: dict[str, Any] | None = None

    class InferTensor(BaseModel):
        name: str = Field(..., description=f"A field name ({fields_doc}), or any name for one [N, F] tensor.")
        shape: list[int]
        datatype: Literal["BOOL", "INT64", "FP32", "FP64", "BYTES"]
        data: list[Any]

    class InferenceRequest(BaseModel):
        """Open Inference Protocol (KServe V2) request."""

        id: str | None = None
        inputs: list[InferTensor]
        parameters: dict[str, Any] | None = None

    class FeedbackItem(BaseModel):
        prediction_id: str
        label: float | int | bool | str

    class FeedbackRequest(BaseModel):
        feedback: list[FeedbackItem]

    class ReloadRequest(BaseModel):
        version: str | None = Field(
            None, description="A version number, or @alias; default the serving alias."
        )

    return [
        PredictRequest,
        PredictResponse,
        InvocationsRequest,
        InferenceRequest,
        FeedbackRequest,
        ReloadRequest,
    ]


def openapi_components(v: ContractValidator | None, name: str) -> dict[str, Any]:
    """``components.schemas`` entries for the request/response models of the current contract."""
    out: dict[str, Any] = {}
    for model in _models(v, name):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out
