"""Calling a fitted model: the one way serving, batch, training and tuning share.

A model called as a classifier (the task is classification, or unset, and it has ``predict_proba``) is
called once through ``predict_proba``; its prediction is the most probable class, what scikit-learn's
``predict`` returns, so one call gives both. Classes are plain Python values (``int``, ``str``,
``bool``), never numpy scalars, so a label reads the same in a JSON response, a Parquet file and an
evaluation report. Any other model is called through ``predict``.

It lives beside the data contract because it turns a model's output into the contract's values, and
so that serving, batch and training, which sit above ``mloop.data``, can all import it cheaply.

    >>> classes = model_classes(model, contract.task)      # None: called through predict
    >>> predictions, proba = predict_with_proba(model, frame, classes)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["model_classes", "predict_with_proba"]


def model_classes(model: Any, task: str | None = None) -> list[Any] | None:
    """The classes of ``model`` as Python values when it is called as a classifier, else None.

    ``task`` is the contract's; when it is unset, a model with ``predict_proba`` is a classifier.
    """
    if (task and task != "classification") or not hasattr(model, "predict_proba"):
        return None
    return [c.item() if isinstance(c, np.generic) else c for c in getattr(model, "classes_", [])]


def predict_with_proba(
    model: Any, frame: Any, classes: Sequence[Any] | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Predictions for ``frame``, and class probabilities (float64, a column per class) for a classifier.

    ``classes`` comes from :func:`model_classes`: None calls ``predict``; otherwise one
    ``predict_proba`` call gives the probabilities, and the prediction is the most probable class.
    """
    if classes is None:
        return np.asarray(model.predict(frame)), None
    proba = np.asarray(model.predict_proba(frame), dtype="float64")
    return np.asarray(classes)[proba.argmax(axis=1)], proba
