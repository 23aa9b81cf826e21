"""Response bodies of ``/predict`` and ``/invocations``, built from one :class:`Prediction` (the Open
Inference Protocol's are in :mod:`mloop.serving.v2`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mloop.serving.runtime import BatchOutput
from mloop.serving.validation import Columns

if TYPE_CHECKING:
    from mloop.serving.runtime import ModelRuntime

__all__ = ["Prediction", "mlflow_body", "native_body"]


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
