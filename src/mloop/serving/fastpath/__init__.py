"""Compiled evaluation of fitted tree-ensemble pipelines for the server's hot path.

A 100-tree scikit-learn forest behind the mloop preprocessing costs ~12-25 ms per ``predict_proba``
whatever the batch size: per-tree Cython calls and per-step input checking, all holding the GIL the
event loop needs. :func:`compile_model` converts the fitted pipeline once, at load, into numpy tables
(:mod:`.columns` for the ``ColumnTransformer``, :mod:`.trees` for the ensemble) evaluated for the whole
batch in a few dozen vectorised calls, with the same numbers as scikit-learn, bit for bit (no
tolerance; property-tested on thresholds, float32 edges and NaN routing, see :mod:`.trees`).
Unsupported models (gradient boosting included) return None and are served by scikit-learn as before;
batches the compiled path cannot reproduce exactly (NaN reaching the trees, values beyond float32)
fall back per batch.

Why by hand: treelite compiles ensembles to native code but needs a C compiler on the serving host
at load time; hummingbird converts them to tensor programs but needs PyTorch, which mloop does not
install. Plain numpy needs neither and is enough to take the model off the critical path.

Supported: ``DecisionTree{Classifier,Regressor}``, ``RandomForest{Classifier,Regressor}`` and
``ExtraTrees{Classifier,Regressor}`` with one output, after any preprocessing.

    >>> compiled = compile_model(pipeline)          # None when unsupported
    >>> compiled.predict_proba(frame)               # == pipeline.predict_proba(frame)

A version's verified ONNX copy (:mod:`.onnx`, ``serving.onnx``) offers the same interface through ONNX
Runtime and replaces the compiled path when required or measured faster at load.
"""

from mloop.serving.fastpath.columns import CompiledColumns, compile_columns
from mloop.serving.fastpath.onnx import OnnxModel, load_onnx
from mloop.serving.fastpath.pipeline import CompiledModel, compile_model
from mloop.serving.fastpath.trees import CompiledTrees, compile_trees

__all__ = [
    "CompiledColumns",
    "CompiledModel",
    "CompiledTrees",
    "OnnxModel",
    "compile_columns",
    "compile_model",
    "compile_trees",
    "load_onnx",
]
