"""A fitted mloop pipeline (preprocess → tree ensemble) answered by the compiled pieces, same outputs.

:func:`compile_model` looks at the loaded model once. If it is a scikit-learn ``Pipeline`` whose last
step is a supported tree ensemble (:mod:`.trees`), it returns a :class:`CompiledModel` with the same
``predict`` / ``predict_proba`` as the pipeline; otherwise None and the runtime keeps the pipeline.
The preprocessing runs compiled when :mod:`.columns` supports it and through scikit-learn's own
``transform`` otherwise; a batch the compiled pieces cannot reproduce exactly (a value of an
unexpected type, NaN or a value beyond float32 reaching the trees) goes through the original
pipeline, so answers never differ.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mloop.serving.fastpath.columns import CompiledColumns, compile_columns
from mloop.serving.fastpath.trees import CompiledTrees, compile_trees

__all__ = ["CompiledModel", "compile_model"]

log = logging.getLogger(__name__)


class CompiledModel:
    """``predict`` / ``predict_proba`` of a fitted pipeline through compiled pieces (see module doc)."""

    def __init__(self, model: Any, trees: CompiledTrees, columns: CompiledColumns | None) -> None:
        self.model = model
        self.trees = trees
        self.columns = columns
        self.estimator = model.steps[-1][1]
        self._head = model[:-1]
        if trees.is_classifier:
            self.classes_ = self.estimator.classes_
        self.fallbacks = 0
        """Batches answered by the original pipeline because the compiled path could not be exact."""

    def __repr__(self) -> str:
        pre = "compiled" if self.columns is not None else "scikit-learn"
        return f"CompiledModel({type(self.estimator).__name__}, trees={self.trees.n_trees}, preprocess={pre})"

    def _features(self, frame: pd.DataFrame) -> np.ndarray:
        X = self.columns.transform(frame) if self.columns is not None else None
        if X is None:
            X = np.asarray(self._head.transform(frame), dtype=np.float64)
        return X

    def _mean(self, frame: pd.DataFrame) -> np.ndarray | None:
        X = self._features(frame)
        mean = None
        if X.ndim == 2 and X.shape[1] == self.trees.n_features:
            mean = self.trees.mean_value(X)  # None for NaN or values beyond float32
        if mean is None:
            self.fallbacks += 1
        return mean

    @property
    def inputs(self) -> list[str] | None:
        """Columns :meth:`predict_proba_lists` reads (None: only frames are supported)."""
        return self.columns.inputs if self.columns is not None else None

    def mean_lists(self, values: Mapping[str, Sequence[Any]], n: int) -> np.ndarray | None:
        """Mean leaf values (class probabilities or regression values) straight from column lists.

        None when the preprocessing is not compiled or this batch holds a value it cannot reproduce
        exactly: the caller then builds a frame and uses :meth:`predict_proba` / :meth:`predict`.
        """
        if self.columns is None:
            return None
        X = self.columns.transform_lists(values, n)
        return None if X is None else self.trees.mean_value(X)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Class probabilities, as the pipeline's ``predict_proba`` returns them."""
        if not self.trees.is_classifier:
            raise AttributeError(f"{type(self.estimator).__name__} has no predict_proba")
        mean = self._mean(frame)
        return self.model.predict_proba(frame) if mean is None else mean

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Predictions, as the pipeline's ``predict`` returns them."""
        mean = self._mean(frame)
        if mean is None:
            return np.asarray(self.model.predict(frame))
        if self.trees.is_classifier:
            return np.asarray(self.classes_.take(np.argmax(mean, axis=1), axis=0))
        return mean[:, 0]


def compile_model(model: Any) -> CompiledModel | None:
    """A :class:`CompiledModel` for a supported fitted pipeline, else None (never raises)."""
    from sklearn.pipeline import Pipeline

    if type(model) is not Pipeline or len(model.steps) < 2:  # a subclass may predict differently
        return None
    try:
        trees = compile_trees(model.steps[-1][1])
        if trees is None:
            return None
        head = [step for _, step in model.steps[:-1] if step not in (None, "passthrough")]
        columns = compile_columns(head[0]) if len(head) == 1 else None
        if columns is not None and columns.n_out != trees.n_features:
            columns = None
    except Exception:  # an unexpected fitted attribute layout: serve through scikit-learn, say why
        name = type(model.steps[-1][1]).__name__
        log.warning("Could not compile %s; serving it through scikit-learn.", name, exc_info=True)
        return None
    return CompiledModel(model, trees, columns)
