"""A version's verified ONNX copy answered by ONNX Runtime, with the interface of the compiled path.

Training writes ``model.onnx`` only when the copy matched the pipeline on the holdout within the
version's tolerance (:mod:`mloop.training.onnx_export`, ``onnx.json``). :func:`load_onnx` opens it at
load when ``serving.onnx`` is not ``off``; :class:`OnnxModel` then offers what
:class:`~mloop.serving.fastpath.CompiledModel` offers (``inputs``, ``mean_lists``, ``predict_proba``,
``predict``), so the runtime serves either without a branch per request. Whether it is used is decided
once, at load (``require``: always; ``auto``: when it answers the warm-up batch faster than the path it
would replace, see :meth:`~mloop.serving.runtime.ModelRuntime.warm`). Why at load and not at training:
the speed of both paths depends on the serving host (CPU, threads, library builds), and timing a
64-row batch a few times costs milliseconds. An ONNX file is a protobuf of operators and weights:
loading it runs no code, so it needs no trust opt-in.

    >>> model = load_onnx(loaded, "auto", classes=[0, 1], threads=1)   # None: off or not available
    >>> model.predict_proba(frame)                                     # ~= pipeline.predict_proba(frame)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mloop.errors import ServingError
from mloop.tracking import LoadedModel
from mloop.tracking.onnx_io import (
    MISSING_STRING,
    ONNX_FILE,
    feeds_from_frame,
    feeds_from_lists,
    onnx_artifact,
    read_onnx_report,
)

__all__ = ["OnnxModel", "load_onnx"]

log = logging.getLogger(__name__)


class OnnxModel:
    """``predict`` / ``predict_proba`` of a version through its ONNX copy (see module doc)."""

    def __init__(
        self, session: Any, inputs: Sequence[tuple[str, str]], classes: Sequence[Any] | None
    ) -> None:
        self.session = session
        self.kinds = [(str(name), str(kind)) for name, kind in inputs]
        self.is_classifier = classes is not None
        if classes is not None:
            self.classes_ = np.asarray(classes)
        outputs = [o.name for o in session.get_outputs()]
        # skl2onnx classifiers answer (label, probabilities); regressors one (N, 1) tensor.
        self._output = [outputs[1] if self.is_classifier and len(outputs) > 1 else outputs[0]]

    def __repr__(self) -> str:
        return f"OnnxModel(inputs={len(self.kinds)}, classifier={self.is_classifier})"

    @property
    def inputs(self) -> list[str]:
        """Columns :meth:`mean_lists` reads."""
        return [name for name, _ in self.kinds]

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        out = np.asarray(self.session.run(self._output, feeds)[0], dtype=np.float64)
        return out if out.ndim == 2 else out.reshape(-1, 1)

    def mean_lists(self, values: Mapping[str, Sequence[Any]], n: int) -> np.ndarray:
        """Class probabilities (or regression values as one column) straight from column lists."""
        return self._run(feeds_from_lists(self.kinds, values))

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Class probabilities of a frame of contract columns."""
        if not self.is_classifier:
            raise AttributeError("a regressor has no predict_proba")
        return self._run(feeds_from_frame(self.kinds, frame))

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Predicted classes (the most probable) or regression values of a frame."""
        out = self._run(feeds_from_frame(self.kinds, frame))
        if self.is_classifier:
            return np.asarray(self.classes_.take(np.argmax(out, axis=1), axis=0))
        return out[:, 0]


def _open(loaded: LoadedModel, classes: Sequence[Any] | None, threads: int | None) -> OnnxModel | str:
    """The ONNX copy, or why there is none usable."""
    report = read_onnx_report(loaded.path)
    if report is None:
        return "the version carries no onnx.json (trained before ONNX export, or with model.onnx.export off)"
    status = report.get("status")
    if status != "verified":
        return f"its ONNX copy is {status}: {report.get('reason')}"
    if report.get("missing_string") != MISSING_STRING:
        marker = report.get("missing_string")
        return f"its ONNX copy marks missing categories as {marker!r}, not {MISSING_STRING!r}"
    if classes is not None and report.get("classes") != [str(c) for c in classes]:
        return f"its ONNX copy has classes {report.get('classes')}, the model {[str(c) for c in classes]}"
    path = onnx_artifact(loaded.path, ONNX_FILE)
    if not path.is_file():
        return f"{ONNX_FILE} is missing from the version's files"
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed (pip install 'mloop[onnx]')"
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default (one per core)
    opts.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        return OnnxModel(session, report.get("inputs") or [], classes)
    except Exception as exc:  # a corrupt or unsupported graph: say why, serve without it
        return f"ONNX Runtime could not open {ONNX_FILE}: {type(exc).__name__}: {exc}"


def load_onnx(
    loaded: LoadedModel, mode: str, *, classes: Sequence[Any] | None, threads: int | None
) -> OnnxModel | None:
    """The version's ONNX copy when ``mode`` (``serving.onnx``) allows and it is usable, else None.

    ``require`` raises :class:`~mloop.errors.ServingError` when there is none; ``auto`` logs why.
    """
    if mode == "off":
        return None
    opened = _open(loaded, classes, threads)
    if isinstance(opened, OnnxModel):
        return opened
    ref = f"{loaded.info.name} v{loaded.info.version}"
    if mode == "require":
        raise ServingError(
            f"serving.onnx is 'require' but {ref} cannot be served through ONNX Runtime: {opened}. "
            "Retrain with mloop[onnx] installed, or set serving.onnx to 'auto' or 'off'."
        )
    log.info("%s: not served through ONNX Runtime: %s", ref, opened)
    return None
