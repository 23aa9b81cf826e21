"""Response bodies of the three prediction protocols, built from one :class:`Prediction`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mloop.serving.runtime import BatchOutput
from mloop.serving.validation import Columns

if TYPE_CHECKING:
    from mloop.serving.runtime import ModelRuntime

__all__ = ["Prediction", "mlflow_body", "native_body", "v2_body", "v2_output_type"]


@dataclass(slots=True)
class Prediction:
    """What one request got back: which arm and version answered, ids, rows and outputs."""

    runtime: ModelRuntime
    arm: str
    ids: list[str]
    columns: Columns
    output: BatchOutput
    single: bool = False

    @property
    def model(self) -> str:
        return self.runtime.name

    @property
    def version(self) -> str:
        return self.runtime.version


def native_body(p: Prediction) -> dict[str, Any]:
    """``/predict``: one entry per record with id, prediction, probabilities and flags."""
    labels = p.runtime.class_labels
    proba = p.output.probabilities
    flags = p.columns.flags
    items: list[dict[str, Any]] = []
    for i, pid in enumerate(p.ids):
        item: dict[str, Any] = {"id": pid, "prediction": p.output.predictions[i]}
        if proba is not None:
            item["probabilities"] = dict(zip(labels, proba[i], strict=True))
        if flags[i]:
            item["flags"] = flags[i]
        items.append(item)
    return {"model": p.model, "version": p.version, "arm": p.arm, "predictions": items}


def mlflow_body(p: Prediction) -> dict[str, Any]:
    """``/invocations``: what ``mlflow models serve`` returns for this model, nothing more."""
    if p.runtime.mlflow_output == "predict_proba" and p.output.probabilities is not None:
        return {"predictions": p.output.probabilities}
    return {"predictions": p.output.predictions}


def v2_output_type(values: list[Any]) -> str:
    """The V2 datatype that holds every value."""
    if all(isinstance(v, bool) for v in values):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "FP64"
    return "BYTES"


def v2_body(p: Prediction, request_id: str | None) -> dict[str, Any]:
    """Open Inference Protocol response: ``predict`` (and ``predict_proba`` for classifiers)."""
    preds = p.output.predictions
    outputs: list[dict[str, Any]] = [
        {"name": "predict", "shape": [len(preds)], "datatype": v2_output_type(preds), "data": preds}
    ]
    proba = p.output.probabilities
    if proba is not None:
        outputs.append(
            {
                "name": "predict_proba",
                "shape": [len(proba), len(p.runtime.class_labels)],
                "datatype": "FP64",
                "data": [x for row in proba for x in row],
                "parameters": {"classes": p.runtime.class_labels},
            }
        )
    body: dict[str, Any] = {
        "model_name": p.model,
        "model_version": p.version,
        "outputs": outputs,
        "parameters": {"prediction_ids": p.ids, "arm": p.arm},
    }
    if request_id is not None:
        body["id"] = request_id
    return body
